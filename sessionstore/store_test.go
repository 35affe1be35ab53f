package sessionstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
)

// fixture is a real memcached cluster, a running Store on it, and raw clients to
// plant and read keys behind the store's back.
type fixture struct {
	t    testing.TB
	mc   *memtest.Cluster
	s    *Store
	raw  []*memcache.Client
	logs *syncBuffer
}

func setup(t testing.TB, n int, mod func(*Options)) *fixture {
	t.Helper()
	f := &fixture{t: t, mc: memtest.Start(t, n), logs: &syncBuffer{}}
	for _, a := range f.mc.Addrs() {
		sl := new(memcache.ServerList)
		if err := sl.SetServers(a); err != nil {
			t.Fatal(err)
		}
		c := memcache.NewFromSelector(sl)
		c.Timeout = 2 * time.Second
		t.Cleanup(func() { c.Close() })
		f.raw = append(f.raw, c)
	}
	o := Options{
		Servers:     f.mc.Addrs(),
		Timeout:     500 * time.Millisecond, // generous: 2 shared cores under -race
		Strict:      true,
		VerifyTTL:   DefaultVerifyTTL,
		RestartHold: DefaultRestartHold,
		Logger:      slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	f.s = s
	f.waitNodes("watchers to see every node", func(st NodeStatus) bool { return st.Up && st.Pid != 0 })
	waitFor(t, "the kill epoch to be read", func() bool { return s.killReadSince(s.mono()) })
	return f
}

// waitFor polls cond every 5ms for at most 5s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func (f *fixture) waitNodes(what string, cond func(NodeStatus) bool) {
	f.t.Helper()
	waitFor(f.t, what, func() bool {
		for _, st := range f.s.Nodes() {
			if !cond(st) {
				return false
			}
		}
		return true
	})
}

func (f *fixture) waitNode(i int, what string, cond func(NodeStatus) bool) {
	f.t.Helper()
	waitFor(f.t, what, func() bool { return cond(f.s.Nodes()[i]) })
}

func newID(testing.TB) string {
	const alphabet = "0123456789abcdefghijklmnopqrstuv" // sid_bits_per_character=5, Debian's default
	b := make([]byte, 26)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[b[i]%32]
	}
	return string(b)
}

// stop and restart also drop the raw client's idle connections to the old process.
func (f *fixture) stop(i int) {
	f.mc.Stop(i)
	f.raw[i].Close()
}

func (f *fixture) restart(i int) {
	f.mc.Restart(i)
	f.raw[i].Close()
}

func (f *fixture) set(i int, key string, value []byte, flags uint32, exp int32) {
	f.t.Helper()
	if err := f.raw[i].Set(&memcache.Item{Key: key, Value: value, Flags: flags, Expiration: exp}); err != nil {
		f.t.Fatalf("set %s on node %d: %v", key, i, err)
	}
}

func (f *fixture) get(i int, key string) *memcache.Item {
	f.t.Helper()
	it, err := f.raw[i].Get(key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil
	}
	if err != nil {
		f.t.Fatalf("get %s on node %d: %v", key, i, err)
	}
	return it
}

func (f *fixture) ttl(i int, key string) int64 {
	f.t.Helper()
	var it metaItem
	err := f.s.metaDo(f.t.Context(), f.s.nodes[i], "mg "+key+" t\r\n", func(r *bufio.Reader) (err error) {
		it, err = readMeta(r)
		return err
	})
	if err != nil || !it.Found {
		f.t.Fatalf("mg %s t on node %d: found=%v err=%v", key, i, it.Found, err)
	}
	return it.TTL
}

func (f *fixture) stat(i int, name string) int64 {
	f.t.Helper()
	st, err := f.s.NodeStats(f.t.Context(), f.mc.Addr(i))
	if err != nil {
		f.t.Fatalf("stats on node %d: %v", i, err)
	}
	v, err := strconv.ParseInt(st[name], 10, 64)
	if err != nil {
		f.t.Fatalf("stats on node %d: %s = %q", i, name, st[name])
	}
	return v
}

// writes sums every counter a write, touch, incr or delete moves on node i.
func (f *fixture) writes(i int) int64 {
	var n int64
	for _, name := range []string{"cmd_set", "cmd_touch", "incr_hits", "incr_misses", "decr_hits", "decr_misses", "delete_hits", "delete_misses"} {
		n += f.stat(i, name)
	}
	return n
}

func (f *fixture) allWrites() []int64 {
	out := make([]int64, len(f.raw))
	for i := range out {
		out[i] = f.writes(i)
	}
	return out
}

func (f *fixture) check(id string, want Verdict) Result {
	f.t.Helper()
	r := f.s.Check(f.t.Context(), id)
	if r.Verdict != want {
		f.t.Fatalf("Check = %+v, want %v", r, want)
	}
	return r
}

// checkRestored checks id after node i restarted empty: the copy is back on
// node i, put there by this Check or already by the re-check that follows a
// node's return.
func (f *fixture) checkRestored(id string, i int) {
	f.t.Helper()
	r := f.s.Check(f.t.Context(), id)
	data, _ := f.s.Keys(id)
	if r.Verdict != Verified && r.Verdict != Repaired || f.get(i, data) == nil {
		f.t.Fatalf("Check = %+v and node %d holds no copy, want it repaired", r, i)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.b.String(), s)
}

var session = []byte("visit|i:3;login|s:5:\"alice\";")

func TestCheckPresentEverywhereWritesNothing(t *testing.T) {
	f := setup(t, 3, nil)
	id := newID(t)
	for i := range 3 {
		f.set(i, id, session, 0, 1440)
	}
	f.set(1, id+".lock", []byte("0"), 768, 15) // left by PHP's last write: free
	before := f.allWrites()
	r := f.check(id, Verified)
	if r.Cached || r.Locked || r.Empty {
		t.Errorf("result = %+v", r)
	}
	if after := f.allWrites(); !slices.Equal(before, after) {
		t.Errorf("write counters moved from %v to %v", before, after)
	}
	if st := f.s.Stats(); st.Lookups[Verified] != 1 || st.Repairs != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestRepairCopiesValueFlagsTTLByAdd(t *testing.T) {
	f := setup(t, 3, nil)
	id := newID(t)
	// php-memcache compresses large sessions with zlib and sets flags 2: the copy
	// must be byte-exact, CR, LF and NUL included.
	value := make([]byte, 5000)
	rand.Read(value)
	copy(value, "\x78\x9c\r\n\x00")
	older := []byte("visit|i:1;")
	f.set(0, id, older, 2, 500)  // an older write: shorter TTL
	f.set(2, id, value, 2, 1000) // the newest write: longest TTL, the source

	r := f.check(id, Repaired)
	if r.Locked || r.Cached {
		t.Errorf("result = %+v", r)
	}
	got := f.get(1, id)
	if got == nil || !bytes.Equal(got.Value, value) || got.Flags != 2 {
		t.Fatalf("copy on node 1 = %v, want the node 2 value with flags 2", got)
	}
	if ttl := f.ttl(1, id); ttl < 993 || ttl > 996 {
		t.Errorf("copy TTL = %d, want the source's remaining ~1000 less copyAge", ttl)
	}
	// Node 0 missed the latest write: its copy is stale and replaced too.
	if it := f.get(0, id); !bytes.Equal(it.Value, value) || it.Flags != 2 {
		t.Errorf("stale copy on node 0 = %q, want the node 2 value", it.Value[:min(len(it.Value), 12)])
	}
	if st := f.s.Stats(); st.Repairs != 2 || st.Lookups[Repaired] != 1 {
		t.Errorf("stats = %+v", st)
	}
	if f.get(1, id+".lock") != nil {
		t.Error("repair created a lock key")
	}
	f.check(id, Verified) // and now it is verified (from cache)
}

// TestRepairReadsOnce: a repair writes from what the lookup read — the
// lookup's meta get returns value, flags, TTL and CAS together — so the
// source node sees the lookup's three reads (data, lock, tombstone) and no
// further one for the TTL.
func TestRepairReadsOnce(t *testing.T) {
	f := setup(t, 3, nil)
	id := newID(t)
	f.set(0, id, session, 0, 1000)
	before := f.stat(0, "cmd_get")
	f.check(id, Repaired)
	if got := f.stat(0, "cmd_get") - before; got != 3 {
		t.Errorf("the source node saw %d reads for a lookup and its repair, want 3", got)
	}
	for i := 1; i < 3; i++ {
		if ttl := f.ttl(i, id); ttl < 993 || ttl > 996 {
			t.Errorf("copy TTL on node %d = %d, want the source's remaining ~1000 less copyAge", i, ttl)
		}
	}
}

func TestRepairKeepsExpiry(t *testing.T) {
	f := setup(t, 2, nil)
	farFuture := time.Now().Add(40 * 24 * time.Hour).Unix() // > 30 days: an absolute exptime, as pecl memcache writes
	for _, tc := range []struct {
		name         string
		exp          int32
		minTTL, maxT int64
	}{
		{"never expires", 0, -1, -1},
		{"beyond 30 days", int32(farFuture), 40*24*3600 - 5, 40*24*3600 + 1},
	} {
		id := newID(t)
		f.set(0, id, session, 0, tc.exp)
		f.check(id, Repaired)
		if ttl := f.ttl(1, id); ttl < tc.minTTL || ttl > tc.maxT {
			t.Errorf("%s: copy TTL %d, want [%d, %d]", tc.name, ttl, tc.minTTL, tc.maxT)
		}
	}
}

func TestRepairNeverOverwritesAConcurrentWrite(t *testing.T) {
	f := setup(t, 2, nil)
	id := newID(t)
	f.set(0, id, []byte("visit|i:1;"), 0, 1440)
	phpWrote := []byte("visit|i:2;")
	// PHP writes the missing copy between the store's lookup and its repair.
	f.s.beforeRepair = func() { f.set(1, id, phpWrote, 0, 1440) }
	r := f.s.Check(t.Context(), id)
	if r.Verdict != Verified {
		t.Errorf("Check = %+v, want verified: PHP's write made the repair unnecessary", r)
	}
	if got := f.get(1, id); !bytes.Equal(got.Value, phpWrote) {
		t.Errorf("node 1 holds %q, want PHP's %q (repair must use add)", got.Value, phpWrote)
	}
	if f.s.Stats().Repairs != 0 {
		t.Error("a refused add was counted as a repair")
	}
}

func TestHeldLockSkipsRepair(t *testing.T) {
	f := setup(t, 3, nil)
	id := newID(t)
	f.set(0, id, session, 0, 1440)
	f.set(1, id, session, 0, 1440)
	f.set(0, id+".lock", []byte("1"), 768, 15) // a PHP request is in flight
	before := f.allWrites()
	for range 2 {
		if r := f.check(id, Verified); !r.Locked || r.Cached {
			t.Fatalf("result = %+v, want locked and not cached", r)
		}
	}
	if f.get(2, id) != nil {
		t.Fatal("repaired while PHP held the lock")
	}
	if after := f.allWrites(); !slices.Equal(before, after) {
		t.Errorf("write counters moved from %v to %v", before, after)
	}
	if it := f.get(0, id+".lock"); string(it.Value) != "1" || it.Flags != 768 {
		t.Errorf("lock changed to %q flags %d", it.Value, it.Flags)
	}

	f.set(0, id+".lock", []byte("0"), 768, 15) // PHP's write released it
	f.check(id, Repaired)
	if f.get(2, id) == nil {
		t.Error("not repaired after the lock was released")
	}
}

func TestUnknownIDStoresNothing(t *testing.T) {
	for _, strict := range []bool{true, false} {
		t.Run("strict="+strconv.FormatBool(strict), func(t *testing.T) {
			f := setup(t, 3, func(o *Options) { o.Strict = strict })
			id := newID(t)
			want := Unknown
			if !strict {
				want = Adopted
			}
			before := f.allWrites()
			f.check(id, want)
			f.check(id, want) // unknown is never cached
			for i := range 3 {
				if f.get(i, id) != nil || f.get(i, id+".lock") != nil {
					t.Errorf("node %d holds a key for an unknown id", i)
				}
				if got := f.stat(i, "curr_items"); got != 0 {
					t.Errorf("node %d has %d items", i, got)
				}
			}
			if after := f.allWrites(); !slices.Equal(before, after) {
				t.Errorf("write counters moved from %v to %v", before, after)
			}
		})
	}
}

func TestLockOnlyIsNotUnknown(t *testing.T) {
	f := setup(t, 3, nil)
	id := newID(t)
	f.set(2, id+".lock", []byte("1"), 768, 15) // first request of a new session, still running
	if r := f.check(id, Verified); !r.Locked {
		t.Errorf("result = %+v, want locked", r)
	}
	for i := range 3 {
		if f.get(i, id) != nil {
			t.Errorf("data created on node %d", i)
		}
	}
}

func TestMemcachedHandler(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.Handler = HandlerMemcached })
	id := newID(t)
	data, lock := "memc.sess.key."+id, "memc.sess.key.lock."+id
	if d, l := f.s.Keys(id); d != data || l != lock {
		t.Fatalf("Keys = %q, %q", d, l)
	}
	f.set(0, data, session, 0, 1440)
	f.set(1, data, session, 0, 1440)
	f.check(id, Repaired)
	if it := f.get(2, data); it == nil || !bytes.Equal(it.Value, session) {
		t.Fatalf("node 2 copy = %v", it)
	}
	if f.get(2, id) != nil {
		t.Error("copied under the bare id")
	}

	// php-memcached's lock is held while its key exists, whatever the value.
	id2 := newID(t)
	f.set(0, "memc.sess.key."+id2, session, 0, 1440)
	f.set(1, "memc.sess.key.lock."+id2, []byte("0"), 0, 30)
	if r := f.check(id2, Verified); !r.Locked {
		t.Errorf("result = %+v, want locked", r)
	}
	if f.get(1, "memc.sess.key."+id2) != nil {
		t.Error("repaired while the memcached lock key existed")
	}

	// The empty placeholder php-memcached creates for every new id is a session.
	id3 := newID(t)
	for i := range 3 {
		f.set(i, "memc.sess.key."+id3, nil, 0, 0)
	}
	if r := f.check(id3, Verified); !r.Empty {
		t.Errorf("result = %+v, want empty", r)
	}
}

func TestTouchRenewsDataOnEveryNode(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.Lifetime = 1000 * time.Second })
	id := newID(t)
	for i := range 3 {
		f.set(i, id, session, 0, 100)
	}
	f.set(0, id+".lock", []byte("0"), 768, 15)
	if err := f.s.Touch(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if ttl := f.ttl(i, id); ttl < 998 || ttl > 1000 {
			t.Errorf("node %d TTL %d after Touch, want ~1000", i, ttl)
		}
	}
	if ttl := f.ttl(0, id+".lock"); ttl > 15 {
		t.Errorf("Touch renewed the lock key (TTL %d)", ttl)
	}

	missing := newID(t)
	if err := f.s.Touch(t.Context(), missing); err != nil {
		t.Errorf("Touch of a missing session: %v", err)
	}
	for i := range 3 {
		if f.get(i, missing) != nil {
			t.Errorf("Touch created a key on node %d", i)
		}
	}
	if err := f.s.Touch(t.Context(), "bad"); !errors.Is(err, ErrInvalidID) {
		t.Errorf("Touch of an invalid id: %v", err)
	}
	if got := f.s.Stats().Touches; got != 2 {
		t.Errorf("Touches = %d, want 2", got)
	}
}

func TestKillRemovesBothKeysEverywhere(t *testing.T) {
	f := setup(t, 3, nil)
	id := newID(t)
	for i := range 3 {
		f.set(i, id, session, 0, 1440)
		f.set(i, id+".lock", []byte("1"), 768, 15)
	}
	f.set(0, id+".lock", []byte("0"), 768, 15)
	f.check(id, Verified) // locked on two nodes: not cached
	for i := range 3 {
		f.set(i, id+".lock", []byte("0"), 768, 15)
	}
	f.check(id, Verified)
	if r := f.check(id, Verified); !r.Cached {
		t.Fatal("second check not cached")
	}
	if err := f.s.Kill(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if f.get(i, id) != nil || f.get(i, id+".lock") != nil {
			t.Errorf("node %d still holds a key", i)
		}
	}
	f.check(id, Killed) // the cached verification went with it
	if err := f.s.Kill(t.Context(), "bad id"); !errors.Is(err, ErrInvalidID) {
		t.Errorf("Kill of an invalid id: %v", err)
	}
	if got := f.s.Stats().Kills; got != 1 {
		t.Errorf("Kills = %d", got)
	}
}

func TestCacheHitAndRestartInvalidates(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.VerifyTTL = time.Hour })
	id := newID(t)
	for i := range 3 {
		f.set(i, id, session, 0, 1440)
	}
	f.check(id, Verified)
	gets := make([]int64, 3)
	for i := range gets {
		gets[i] = f.stat(i, "cmd_get")
	}
	for range 5 {
		if r := f.check(id, Verified); !r.Cached {
			t.Fatalf("result = %+v, want cached", r)
		}
	}
	for i := range gets {
		if got := f.stat(i, "cmd_get"); got != gets[i] {
			t.Errorf("node %d cmd_get %d -> %d: a cached check made a round trip", i, gets[i], got)
		}
	}
	if got := f.s.Stats().Cached; got != 5 {
		t.Errorf("Cached = %d, want 5", got)
	}

	// The watcher sees the process exit on its idle connection: the node goes down,
	// and the verification is void at once.
	f.stop(1)
	f.waitNode(1, "node 1 down", func(st NodeStatus) bool { return !st.Up })
	if r := f.check(id, Verified); r.Cached {
		t.Error("verification survived a node going down")
	}
	f.restart(1) // back, empty
	f.waitNode(1, "node 1 back", func(st NodeStatus) bool { return st.Up && st.Restarts == 1 })
	f.checkRestored(id, 1)

	// A quick restart (kill and start again) is caught the same way.
	f.check(id, Verified)
	if r := f.check(id, Verified); !r.Cached {
		t.Fatal("not cached after the repair")
	}
	f.restart(2)
	f.waitNode(2, "node 2 restarted", func(st NodeStatus) bool { return st.Up && st.Restarts == 1 })
	f.checkRestored(id, 2)
	if it := f.get(2, id); it == nil || !bytes.Equal(it.Value, session) {
		t.Errorf("node 2 after repair: %v", it)
	}
	if got := f.logs.count("memcached node restarted"); got != 2 {
		t.Errorf("logged %d restarts, want 2", got)
	}
}

// TestZeroVerifyTTLNeverCaches: a zero VerifyTTL means no caching, as
// session.verify_ttl: 0 does in the config (there is no default to fill in).
func TestZeroVerifyTTLNeverCaches(t *testing.T) {
	f := setup(t, 2, func(o *Options) { o.VerifyTTL = 0 })
	id := newID(t)
	f.set(0, id, session, 0, 1440)
	f.set(1, id, session, 0, 1440)
	for range 3 {
		if r := f.check(id, Verified); r.Cached {
			t.Fatal("a verification was reused with VerifyTTL 0")
		}
	}
}

func TestVerifyTTLExpires(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := setup(t, 2, func(o *Options) { o.Now = clock })
	id := newID(t)
	f.set(0, id, session, 0, 1440)
	f.set(1, id, session, 0, 1440)
	f.check(id, Verified)
	if r := f.check(id, Verified); !r.Cached {
		t.Fatal("not cached")
	}
	mu.Lock()
	now = now.Add(DefaultVerifyTTL)
	mu.Unlock()
	if r := f.check(id, Verified); r.Cached {
		t.Error("cached verification outlived VerifyTTL")
	}

	g := setup(t, 2, func(o *Options) { o.VerifyTTL = -1 })
	g.set(0, id, session, 0, 1440)
	g.set(1, id, session, 0, 1440)
	for range 2 {
		if r := g.check(id, Verified); r.Cached {
			t.Error("cached with a negative VerifyTTL")
		}
	}
}

func TestRefreshRenewsVerificationInUse(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	f := setup(t, 2, func(o *Options) { o.Now = clock })
	refreshes := func(n uint64) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%d refreshes", n), func() bool { return f.s.Stats().Refreshes >= n })
		if got := f.s.Stats().Refreshes; got != n {
			t.Fatalf("%d refreshes, want %d", got, n)
		}
	}
	id := newID(t)
	data, _ := f.s.Keys(id)
	f.set(0, data, session, 0, 1440)
	f.set(1, data, session, 0, 1440)
	f.check(id, Verified)

	advance(DefaultVerifyTTL / 2) // too young to refresh
	if r := f.check(id, Verified); !r.Cached {
		t.Fatal("not cached")
	}
	advance(DefaultVerifyTTL/4 + time.Millisecond) // last quarter: answered from the cache, refreshed behind
	for range 3 {
		if r := f.check(id, Verified); !r.Cached {
			t.Fatal("not cached in the last quarter of VerifyTTL")
		}
	}
	refreshes(1) // one per verification, however often it is used

	// Past the first verification's VerifyTTL, within the refreshed one's.
	advance(DefaultVerifyTTL / 2)
	if r := f.check(id, Verified); !r.Cached {
		t.Fatal("the refresh did not renew the verification")
	}

	// A refresh that finds the session gone drops the verification at once.
	for _, c := range f.raw {
		if err := c.Delete(data); err != nil {
			t.Fatal(err)
		}
	}
	advance(DefaultVerifyTTL / 4)
	if r := f.check(id, Verified); !r.Cached {
		t.Fatal("not cached")
	}
	refreshes(2)
	if r := f.check(id, Unknown); r.Cached {
		t.Fatal("cached")
	}
}

// TestRefreshBatchDecidesEach: verifications refreshed together, whose
// sessions are read in one request per node (see refreshBatch), are each
// decided on their own answers: the live ones renewed, the one whose
// session went and the one whose lock is held dropped.
func TestRefreshBatchDecidesEach(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	f := setup(t, 2, func(o *Options) { o.Now = clock })
	ids := make([]string, 6)
	for i := range ids {
		ids[i] = newID(t)
		data, _ := f.s.Keys(ids[i])
		f.set(0, data, session, 0, 1440)
		f.set(1, data, session, 0, 1440)
		f.check(ids[i], Verified)
	}
	gone, locked, live := ids[1], ids[3], []string{ids[0], ids[2], ids[4], ids[5]}
	data, _ := f.s.Keys(gone)
	for _, c := range f.raw {
		if err := c.Delete(data); err != nil {
			t.Fatal(err)
		}
	}
	_, lock := f.s.Keys(locked)
	f.set(0, lock, []byte("1"), 0, 1440)
	f.set(1, lock, []byte("1"), 0, 1440)

	advance(DefaultVerifyTTL*3/4 + time.Millisecond) // last quarter: each refreshed behind
	for _, id := range ids {
		if r := f.check(id, Verified); !r.Cached {
			t.Fatal("not cached in the last quarter of VerifyTTL")
		}
	}
	waitFor(t, "6 refreshes", func() bool { return f.s.Stats().Refreshes >= uint64(len(ids)) })

	advance(DefaultVerifyTTL / 2) // past the first verifications, within the refreshed ones
	for _, id := range live {
		if r := f.check(id, Verified); !r.Cached {
			t.Fatalf("the refresh did not renew the verification of %s", ShortID(id))
		}
	}
	if r := f.check(gone, Unknown); r.Cached {
		t.Fatal("the session that went is still cached")
	}
	if r := f.check(locked, Verified); r.Cached || !r.Locked {
		t.Fatalf("the session with its lock held: %+v, want looked up again, locked", r)
	}
}

func TestStoppedNodeIsSkipped(t *testing.T) {
	f := setup(t, 3, nil)
	id, unknown := newID(t), newID(t)
	for i := range 3 {
		f.set(i, id, session, 0, 1440)
	}
	f.stop(2)
	f.check(id, Verified) // whether or not the watcher has noticed yet
	f.waitNode(2, "node 2 down", func(st NodeStatus) bool { return !st.Up && st.LastError != "" })
	start := time.Now()
	f.check(id, Verified)
	f.check(unknown, Unknown) // replicas=all: one answering node is enough
	if d := time.Since(start); d > f.s.timeout {
		t.Errorf("checks with a known-down node took %v", d)
	}
}

// TestPausedNodeBoundedByTimeout: with the hold off (RestartHold < 0), a hung
// node costs a Check at most a Timeout, and nothing once it is known down.
func TestPausedNodeBoundedByTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	f := setup(t, 3, func(o *Options) { o.Timeout = timeout; o.RestartHold = -1 })
	id := newID(t)
	for i := range 3 {
		f.set(i, id, session, 0, 1440)
	}
	f.mc.Pause(1) // SIGSTOP: connections are accepted by the kernel, never answered
	t.Cleanup(func() { f.mc.Resume(1) })
	start := time.Now()
	f.check(id, Verified)
	// The node never answers: without the bound the Check would wait for
	// ever. A few Timeouts is the cost; the margin is for a loaded machine.
	if d := time.Since(start); d > 20*timeout {
		t.Errorf("Check with a hung node took %v, want < %v", d, 20*timeout)
	}
	f.waitNode(1, "node 1 marked down", func(st NodeStatus) bool { return !st.Up })
	start = time.Now()
	f.check(id, Verified)
	if d := time.Since(start); d > timeout {
		t.Errorf("Check with a known-down hung node took %v, want no wait", d)
	}
	f.mc.Resume(1)
	f.waitNode(1, "node 1 back up", func(st NodeStatus) bool { return st.Up })
	if got := f.s.Nodes()[1].Restarts; got != 0 {
		t.Errorf("a pause counted as %d restarts", got)
	}
	f.check(id, Verified)
}

func TestStoreDownFailsOpenAndLogsOnce(t *testing.T) {
	f := setup(t, 2, nil)
	id := newID(t)
	f.set(0, id, session, 0, 1440)
	f.stop(0)
	f.stop(1)
	for range 3 {
		f.check(id, StoreDown)
	}
	f.waitNodes("nodes down", func(st NodeStatus) bool { return !st.Up })
	for range 3 {
		f.check(id, StoreDown)
	}
	if got := f.logs.count("session store down"); got != 1 {
		t.Errorf("logged store down %d times, want once", got)
	}
	if got := f.s.Stats().StoreDownEvents; got != 1 {
		t.Errorf("StoreDownEvents = %d", got)
	}
	if err := f.s.Touch(t.Context(), id); !errors.Is(err, ErrStoreDown) {
		t.Errorf("Touch with every node down: %v", err)
	}
	f.restart(0)
	f.restart(1)
	f.waitNodes("nodes back", func(st NodeStatus) bool { return st.Up })
	f.check(id, Unknown) // both restarted empty
	if got := f.logs.count("session store reachable again"); got != 1 {
		t.Errorf("logged recovery %d times, want once", got)
	}
}

func TestShardedNeverCopies(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.Replicas = 1 })
	id := newID(t)
	f.set(1, id, session, 0, 1440)
	f.check(id, Verified)
	if f.get(0, id) != nil || f.get(2, id) != nil {
		t.Error("sharded pool copied a session")
	}
	unknown := newID(t)
	f.check(unknown, Unknown)
	f.stop(2)
	f.waitNode(2, "node 2 down", func(st NodeStatus) bool { return !st.Up })
	f.check(unknown, StoreDown) // node 2 might hold it: fail open
	f.check(id, Verified)
}

func TestInspect(t *testing.T) {
	f := setup(t, 3, nil)
	id := newID(t)
	f.set(0, id, []byte("0123456789"), 2, 100)
	f.set(0, id+".lock", []byte("1"), 768, 15)
	f.set(1, id+".lock", []byte("0"), 768, 15)
	f.stop(2)
	entries, err := f.s.Inspect(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	e := entries[0]
	if e.Node != f.mc.Addr(0) || !e.Reachable || !e.Present || e.Size != 10 || e.Flags != 2 || e.TTL < 98 || e.TTL > 100 || !e.Locked {
		t.Errorf("node 0 = %+v", e)
	}
	if e := entries[1]; !e.Reachable || e.Present || e.Locked || e.TTL != 0 {
		t.Errorf("node 1 = %+v", e)
	}
	if e := entries[2]; e.Reachable || e.Error == "" {
		t.Errorf("node 2 (stopped) = %+v", e)
	}
	if _, err := f.s.Inspect(t.Context(), "bad"); !errors.Is(err, ErrInvalidID) {
		t.Errorf("Inspect of an invalid id: %v", err)
	}
}

func TestNodeStats(t *testing.T) {
	f := setup(t, 2, nil)
	st, err := f.s.NodeStats(t.Context(), f.mc.Addr(1))
	if err != nil {
		t.Fatal(err)
	}
	if st["pid"] != strconv.Itoa(f.mc.Pid(1)) || st["uptime"] == "" {
		t.Errorf("stats pid=%q uptime=%q, want pid %d", st["pid"], st["uptime"], f.mc.Pid(1))
	}
	if got := f.s.Nodes()[1].Pid; got != int64(f.mc.Pid(1)) {
		t.Errorf("Nodes pid = %d", got)
	}
	if _, err := f.s.NodeStats(t.Context(), "127.0.0.1:1"); err == nil {
		t.Error("stats of an unconfigured node")
	}
}

func TestConcurrentChecksShareOneLookup(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.VerifyTTL = -1 })
	id := newID(t)
	for i := range 2 {
		f.set(i, id, session, 0, 1440)
	}
	release := make(chan struct{})
	entered := make(chan struct{})
	f.s.beforeRepair = func() { close(entered); <-release } // hold the leader mid-lookup
	results := make(chan Result, 8)
	go func() { results <- f.s.Check(t.Context(), id) }()
	<-entered
	for range 7 {
		go func() { results <- f.s.Check(t.Context(), id) }()
	}
	waitFor(t, "followers to wait", func() bool {
		f.s.flights.mu.Lock()
		defer f.s.flights.mu.Unlock()
		return f.s.flights.calls[id].dups == 7
	})
	close(release)
	for range 8 {
		if r := <-results; r.Verdict != Repaired {
			t.Errorf("result %+v, want every caller to get the one repair", r)
		}
	}
	if got := f.s.Stats().Repairs; got != 1 {
		t.Errorf("Repairs = %d, want 1", got)
	}
}

func TestRunShutdownReleasesEverything(t *testing.T) {
	mc := memtest.Start(t, 2)
	conns := func(i int) int64 { // via a connection of its own, counted in the result
		c, err := net.DialTimeout("tcp", mc.Addr(i), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		io.WriteString(c, "stats\r\n")
		st, err := readStats(bufio.NewReader(c))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseInt(st["curr_connections"], 10, 64)
		return n
	}
	base := []int64{conns(0), conns(1)}
	goroutines := runtime.NumGoroutine()

	s, err := New(Options{Servers: mc.Addrs(), Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		s.Run(ctx)
		close(done)
	}()
	waitFor(t, "watchers", func() bool { return s.Nodes()[0].Pid != 0 && s.Nodes()[1].Pid != 0 })
	id := newID(t)
	s.Check(t.Context(), id)
	s.Inspect(t.Context(), id)
	s.NodeStats(t.Context(), mc.Addr(0))
	if got := conns(0); got <= base[0] {
		t.Fatalf("store holds no connection to node 0 (%d <= %d)", got, base[0])
	}

	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	waitFor(t, "connections closed", func() bool { return conns(0) == base[0] && conns(1) == base[1] })
	waitFor(t, "goroutines gone", func() bool { return runtime.NumGoroutine() <= goroutines })
}
