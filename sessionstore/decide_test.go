package sessionstore

import (
	"reflect"
	"testing"
)

func TestDecide(t *testing.T) {
	var (
		down     = nodeObs{}
		missing  = nodeObs{Answered: true}
		data     = nodeObs{Answered: true, Data: true}
		empty    = nodeObs{Answered: true, Data: true, Empty: true}
		lockFree = nodeObs{Answered: true, LockKey: true}               // memcache ".lock" = "0"
		lockHeld = nodeObs{Answered: true, LockKey: true, Locked: true} // memcache "1", memcached key
		dataHeld = nodeObs{Answered: true, Data: true, LockKey: true, Locked: true}
		dataFree = nodeObs{Answered: true, Data: true, LockKey: true}
	)
	for _, tc := range []struct {
		name    string
		obs     []nodeObs
		sharded bool
		strict  bool
		want    decision
	}{
		{"present everywhere", []nodeObs{data, data, data}, false, true,
			decision{Verdict: Verified, Sources: []int{0, 1, 2}, Cacheable: true}},
		{"all empty", []nodeObs{empty, empty}, false, true,
			decision{Verdict: Verified, Sources: []int{0, 1}, Empty: true, Cacheable: true}},
		{"one empty one not", []nodeObs{empty, data}, false, true,
			decision{Verdict: Verified, Sources: []int{0, 1}, Cacheable: true}},
		{"missing on one", []nodeObs{data, missing, data}, false, true,
			decision{Verdict: Repaired, Repair: []int{1}, Sources: []int{0, 2}, Cacheable: true}},
		{"missing on two", []nodeObs{missing, data, missing}, false, true,
			decision{Verdict: Repaired, Repair: []int{0, 2}, Sources: []int{1}, Cacheable: true}},
		{"free lock key does not stop repair", []nodeObs{dataFree, missing}, false, true,
			decision{Verdict: Repaired, Repair: []int{1}, Sources: []int{0}, Cacheable: true}},
		{"held lock: no repair, not cached", []nodeObs{dataHeld, missing, data}, false, true,
			decision{Verdict: Verified, Sources: []int{0, 2}, Locked: true}},
		{"held lock on the node that misses data", []nodeObs{data, lockHeld}, false, true,
			decision{Verdict: Verified, Sources: []int{0}, Locked: true}},
		{"held lock, data everywhere", []nodeObs{dataHeld, data}, false, true,
			decision{Verdict: Verified, Sources: []int{0, 1}, Locked: true}},
		{"down node is not a repair target", []nodeObs{data, down, missing}, false, true,
			decision{Verdict: Repaired, Repair: []int{2}, Sources: []int{0}}},
		{"down node, rest present", []nodeObs{data, down, data}, false, true,
			decision{Verdict: Verified, Sources: []int{0, 2}}},
		{"nothing anywhere", []nodeObs{missing, missing, missing}, false, true,
			decision{Verdict: Unknown}},
		{"nothing anywhere, not strict", []nodeObs{missing, missing}, false, false,
			decision{Verdict: Adopted}},
		{"nothing on the live nodes (replicas=all)", []nodeObs{missing, down, down}, false, true,
			decision{Verdict: Unknown}},
		{"lock only: session being created", []nodeObs{missing, lockHeld, missing}, false, true,
			decision{Verdict: Verified, Locked: true}},
		{"free lock only still not unknown", []nodeObs{lockFree, missing}, false, true,
			decision{Verdict: Verified}},
		{"all down", []nodeObs{down, down, down}, false, true,
			decision{Verdict: StoreDown}},
		{"no nodes answered, not strict", []nodeObs{down}, false, false,
			decision{Verdict: StoreDown}},

		{"sharded: found on one", []nodeObs{missing, data, missing}, true, true,
			decision{Verdict: Verified, Sources: []int{1}, Cacheable: true}},
		{"sharded: found while another is down", []nodeObs{down, data, missing}, true, true,
			decision{Verdict: Verified, Sources: []int{1}}},
		{"sharded: never copies", []nodeObs{data, missing}, true, true,
			decision{Verdict: Verified, Sources: []int{0}, Cacheable: true}},
		{"sharded: missing everywhere, all answered", []nodeObs{missing, missing}, true, true,
			decision{Verdict: Unknown}},
		{"sharded: missing, a node down may hold it", []nodeObs{missing, down}, true, true,
			decision{Verdict: StoreDown}},
		{"sharded: lock only with a node down", []nodeObs{lockHeld, down}, true, true,
			decision{Verdict: Verified, Locked: true}},
		{"sharded: held lock", []nodeObs{dataHeld, missing}, true, true,
			decision{Verdict: Verified, Sources: []int{0}, Locked: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decide(tc.obs, tc.sharded, tc.strict); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decide = %+v\nwant     %+v", got, tc.want)
			}
		})
	}
}

func TestVerdictString(t *testing.T) {
	want := []string{"verified", "repaired", "unknown", "invalid", "store_down", "adopted", "killed"}
	for v := range verdictCount {
		if v.String() != want[v] {
			t.Errorf("Verdict(%d) = %q, want %q", v, v.String(), want[v])
		}
	}
}

func TestExpiration(t *testing.T) {
	s, err := New(Options{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	now := s.now().Unix()
	for _, tc := range []struct {
		ttl  int64
		want int64
	}{
		{-1, 0},      // never expires stays never
		{0, 1},       // about to expire must not become "never"
		{1440, 1440}, // relative
		{maxRelativeTTL, maxRelativeTTL},
		{maxRelativeTTL + 1, now + maxRelativeTTL + 1}, // beyond 30 days memcached wants a unix time
	} {
		if got := int64(s.expiration(tc.ttl)); got < tc.want || got > tc.want+1 {
			t.Errorf("expiration(%d) = %d, want %d", tc.ttl, got, tc.want)
		}
	}
}
