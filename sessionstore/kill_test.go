package sessionstore

import (
	"context"
	"testing"
	"time"
)

// second starts another Store on f's pool, as a second sessiongate instance
// would run it: it shares nothing with f.s but the memcached nodes.
func (f *fixture) second(mod func(*Options)) *Store {
	f.t.Helper()
	o := Options{Servers: f.mc.Addrs(), Timeout: 500 * time.Millisecond, Strict: true, VerifyTTL: time.Hour}
	if mod != nil {
		mod(&o)
	}
	s, err := New(o)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Run(ctx)
		close(done)
	}()
	f.t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(f.t, "the kill epoch to be read", func() bool { return s.killReadSince(s.mono()) })
	return s
}

// TestKillReachesEveryInstance: a kill through instance A is in effect on
// instance B, which had the session in its verification cache, as soon as
// Kill returns; data PHP writes under the killed id later is deleted.
func TestKillReachesEveryInstance(t *testing.T) {
	for _, handler := range []string{HandlerMemcache, HandlerMemcached} {
		t.Run(handler, func(t *testing.T) {
			f := setup(t, 3, func(o *Options) { o.VerifyTTL = time.Hour; o.Handler = handler })
			b := f.second(func(o *Options) { o.Handler = handler })
			id := newID(t)
			data, lock := f.s.Keys(id)
			for i := range 3 {
				f.set(i, data, session, 0, 1440)
			}
			for _, s := range []*Store{f.s, b} {
				s.Check(t.Context(), id)
				if r := s.Check(t.Context(), id); !r.Cached {
					t.Fatalf("second check not cached: %+v", r)
				}
			}
			// How long B takes to see the kill epoch change: logged, not asserted.
			epoch, start := b.epoch.Load(), time.Now()
			seen := make(chan time.Duration, 1)
			go func() {
				for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					if b.epoch.Load() != epoch {
						seen <- time.Since(start)
						return
					}
				}
				seen <- -1
			}()
			if err := f.s.Kill(t.Context(), id); err != nil {
				t.Fatal(err)
			}
			t.Logf("Kill returned after %v; B saw the kill epoch change after %v", time.Since(start), <-seen)
			if r := b.Check(t.Context(), id); r.Verdict != Killed || r.Cached {
				t.Fatalf("B's first Check after A's Kill returned = %+v, want killed, not cached", r)
			}
			for i := range 3 {
				if f.get(i, data) != nil || f.get(i, lock) != nil {
					t.Errorf("node %d still holds a key of the killed session", i)
				}
			}
			// PHP re-creates the session under the killed id (a request that was
			// forwarded before the kill, finishing late): the next lookup
			// deletes it again and the id stays killed.
			f.set(1, data, session, 0, 1440)
			if r := b.Check(t.Context(), id); r.Verdict != Killed {
				t.Fatalf("Check after PHP wrote again = %+v, want killed", r)
			}
			if f.get(1, data) != nil {
				t.Error("data written under a killed id was not deleted")
			}
			if got := b.Stats().Lookups[Killed]; got != 2 {
				t.Errorf("B counted %d killed lookups, want 2", got)
			}
		})
	}
}

// TestKillAllLogsEveryoneOut: KillAll kills every session in the pool — more
// than one batch, some with a lock key, one present on a single node only —
// so that another instance with all of them in its verification cache sees
// each as killed, and leaves other applications' keys alone. KillMany of a
// user's few sessions kills just those.
func TestKillAllLogsEveryoneOut(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.VerifyTTL = time.Hour })
	b := f.second(nil)
	const n = killBatch + 44
	ids := make([]string, n)
	for i := range ids {
		ids[i] = newID(t)
		data, lock := f.s.Keys(ids[i])
		for node := range 3 {
			if i == 0 && node > 0 {
				break // only on node 0
			}
			f.set(node, data, session, 0, 1440)
			if i%10 == 0 {
				f.set(node, lock, []byte("0"), 768, 15)
			}
		}
	}
	f.set(1, "otherapp:cache:1", []byte("keep"), 0, 600)
	for _, id := range ids[1:] {
		if r := b.Check(t.Context(), id); r.Verdict != Verified {
			t.Fatalf("B's check before: %+v", r)
		}
	}

	few, err := f.s.KillMany(t.Context(), ids[1:4])
	if err != nil || few != 3 {
		t.Fatalf("KillMany of 3 = %d, %v", few, err)
	}
	if r := b.Check(t.Context(), ids[4]); r.Verdict != Verified {
		t.Fatalf("a session KillMany was not given: %+v, want verified", r)
	}

	start := time.Now()
	var told []string
	killed, err := f.s.KillAll(t.Context(), func(id string) { told = append(told, id) })
	t.Logf("KillAll of %d sessions (%d already killed) took %v", n, few, time.Since(start))
	if err != nil || killed < n-few || len(told) != killed {
		t.Fatalf("KillAll = %d (told %d), %v; want at least %d", killed, len(told), err, n-few)
	}
	for i, id := range ids {
		if r := b.Check(t.Context(), id); r.Verdict != Killed {
			t.Fatalf("session %d after KillAll, on B: %+v, want killed", i, r)
		}
		data, lock := f.s.Keys(id)
		for node := range 3 {
			if f.get(node, data) != nil || f.get(node, lock) != nil {
				t.Fatalf("node %d still holds a key of session %d", node, i)
			}
		}
	}
	if it := f.get(1, "otherapp:cache:1"); it == nil {
		t.Error("KillAll deleted another application's key")
	}
}

// cachedOn makes id's verification cached on s (the id must be live).
func cachedOn(t *testing.T, s *Store, id string) {
	t.Helper()
	s.Check(t.Context(), id)
	if r := s.Check(t.Context(), id); r.Verdict != Verified || !r.Cached {
		t.Fatalf("second Check = %+v, want verified from the cache", r)
	}
}

// TestKillReachesParkedReader: an instance idle for a second parks its kill
// epoch reader, which then reads nothing; a live session's Check after the
// idle second is still answered from the cache, and a kill made through
// another instance while the reader is parked holds at the next Check.
func TestKillReachesParkedReader(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.VerifyTTL = time.Hour })
	b := f.second(nil)
	killed, live := newID(t), newID(t)
	for _, id := range []string{killed, live} {
		data, _ := f.s.Keys(id)
		for i := range 3 {
			f.set(i, data, session, 0, 1440)
		}
		cachedOn(t, b, id)
	}
	waitFor(t, "B's reader to park", b.kr.parked.Load)
	at := b.kr.at.Load()
	time.Sleep(4 * killPoll)
	if b.kr.at.Load() != at {
		t.Fatal("B's parked reader went on reading")
	}
	if r := b.Check(t.Context(), live); r.Verdict != Verified || !r.Cached {
		t.Fatalf("B's Check of a live session after an idle second = %+v, want verified from the cache", r)
	}
	if b.kr.parked.Load() {
		t.Error("B's reader still parked after a Check used the cache")
	}
	waitFor(t, "B's reader to park again", b.kr.parked.Load)
	if err := f.s.Kill(t.Context(), killed); err != nil {
		t.Fatal(err)
	}
	if r := b.Check(t.Context(), killed); r.Verdict != Killed {
		t.Fatalf("B's Check of the killed session = %+v, want killed", r)
	}
}

// TestKillReachesLateReader: an instance whose kill epoch reader does not
// run (starved of CPU on a loaded machine, as watchers were, issue 14) does
// not answer a session killed through another instance from its cache.
func TestKillReachesLateReader(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.VerifyTTL = time.Hour })
	b := f.second(nil)
	id := newID(t)
	data, _ := f.s.Keys(id)
	for i := range 3 {
		f.set(i, data, session, 0, 1440)
	}
	cachedOn(t, b, id)
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	hook := func() {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
	}
	b.killRead.Store(&hook)
	t.Cleanup(func() { close(release) })
	<-entered
	if err := f.s.Kill(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if r := b.Check(t.Context(), id); r.Verdict != Killed {
		t.Fatalf("B's Check with its reader held = %+v, want killed", r)
	}
}
