package sessionstore

import (
	"bytes"
	"testing"
	"time"
)

// waitResync waits until a resync of node i has ended and returns it.
func (f *fixture) waitResync(i int) ResyncStatus {
	f.t.Helper()
	var st ResyncStatus
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st = f.s.Resync(); st.Node == f.mc.Addr(i) && !st.Running && !st.Ended.IsZero() {
			return st
		}
	}
	f.t.Fatalf("no resync of node %d ended within 30s: %+v", i, st)
	return st
}

// TestResyncFillsRestartedNode: a node restarted empty gets, with no
// request at all, every session the others hold — value, flags and TTL —
// except one whose lock a request holds; no lock key, no other key.
func TestResyncFillsRestartedNode(t *testing.T) {
	for _, handler := range []string{HandlerMemcache, HandlerMemcached} {
		t.Run(handler, func(t *testing.T) {
			f := setup(t, 3, func(o *Options) { o.Handler = handler; o.ResyncRate = 1_000_000 })
			data, empty := poolFixture(t, f, handler, 4, 2)
			prefix := ""
			if handler == HandlerMemcached {
				prefix = DefaultMemcachedPrefix
			}
			const filled = 2500 // more than one resync window of keys is not needed; several batches are
			fillPool(t, f.mc.Addrs(), prefix, filled, 40)
			locked := newID(t)
			key, lock := f.s.Keys(locked)
			for i := range f.raw {
				f.set(i, key, []byte("visit|i:9;"), 0, 1440)
			}
			if handler == HandlerMemcached {
				f.set(0, lock, []byte("1"), 0, 30)
			} else {
				f.set(0, lock, []byte("1"), 768, 15)
			}
			before := make(map[string][2]int64) // key -> flags, ttl on node 0
			var keys []string
			for _, id := range append(append(data, empty...), poolID(0), poolID(filled-1)) {
				k, _ := f.s.Keys(id)
				keys = append(keys, k)
				before[k] = [2]int64{int64(f.get(0, k).Flags), f.ttl(0, k)}
			}

			f.restart(2)
			st := f.waitResync(2)
			want := int64(len(data) + len(empty) + filled)
			// Repairs: a second resync may follow the first (the node also
			// looks joined: far fewer items than the others) and copy nothing.
			if st.Error != "" || f.s.Stats().Repairs != uint64(want) || st.Skipped < 1 || st.Done < st.Total || st.Total < want {
				t.Errorf("resync %+v, %d copies: want %d copied, the locked one skipped, done = total",
					st, f.s.Stats().Repairs, want)
			}
			for _, k := range keys {
				src, got := f.get(0, k), f.get(2, k)
				if got == nil {
					t.Errorf("%s missing on the restarted node", k)
					continue
				}
				if !bytes.Equal(got.Value, src.Value) || int64(got.Flags) != before[k][0] {
					t.Errorf("%s: value/flags %q/%d, want %q/%d", k, got.Value, got.Flags, src.Value, before[k][0])
				}
				if ttl := f.ttl(2, k); ttl > before[k][1] || ttl < before[k][1]-30 {
					t.Errorf("%s: TTL %d on the copy, source had %d", k, ttl, before[k][1])
				}
			}
			if f.get(2, key) != nil {
				t.Error("a locked session was copied")
			}
			inv, err := f.s.Scan(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if n := inv.Nodes[2]; n.Sessions != want || n.Other != 0 || n.Locks != 0 {
				t.Errorf("restarted node after resync: %+v, want %d sessions and no other key", n, want)
			}
		})
	}
}

// TestResyncNeverOverwritesANewerValue: PHP writing a session on the
// restarted node between the resync's read and its add wins.
func TestResyncNeverOverwritesANewerValue(t *testing.T) {
	f := setup(t, 2, func(o *Options) { o.ResyncRate = 1_000_000 })
	id := newID(t)
	f.set(0, id, []byte("visit|i:1;"), 0, 1440)
	phpWrote := []byte("visit|i:2;")
	hook := func() { f.set(1, id, phpWrote, 0, 1440) }
	f.s.beforeResyncAdd.Store(&hook)
	f.restart(1)
	if st := f.waitResync(1); st.Copied != 0 || st.Error != "" {
		t.Errorf("resync %+v: want nothing copied", st)
	}
	if got := f.get(1, id); got == nil || !bytes.Equal(got.Value, phpWrote) {
		t.Errorf("restarted node holds %v, want PHP's newer write", got)
	}
}

// TestResyncCopiesTheLatestOrNothing: of two differing copies, the clearly
// newer one is copied; when neither is clearly newer, nothing is (the
// session's next lookup repairs the empty node from the right one, a stale
// copy put there now might be what PHP reads).
func TestResyncCopiesTheLatestOrNothing(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.ResyncRate = 1_000_000 })
	clear, tie := newID(t), newID(t)
	f.set(0, clear, []byte("visit|i:1;"), 0, 600) // missed the latest write
	f.set(1, clear, []byte("visit|i:2;"), 0, 1440)
	f.set(0, tie, []byte("visit|i:1;"), 0, 1440)
	f.set(1, tie, []byte("visit|i:2;"), 0, 1440)
	f.restart(2)
	f.waitResync(2)
	if got := f.get(2, clear); got == nil || string(got.Value) != "visit|i:2;" {
		t.Errorf("clear case: restarted node holds %v, want the newer copy", got)
	}
	if got := f.get(2, tie); got != nil {
		t.Errorf("ambiguous case: restarted node holds %q, want nothing", got.Value)
	}
}
