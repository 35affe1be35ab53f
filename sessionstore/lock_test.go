package sessionstore

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// plantLock sets id's lock key as held on node i, the way each handler holds it.
func (f *fixture) plantLock(i int, id string) {
	f.t.Helper()
	_, lock := f.s.Keys(id)
	if f.s.handler == HandlerMemcached {
		f.set(i, lock, []byte("1"), 0, 30)
		return
	}
	f.set(i, lock, []byte("1"), 768, 15)
}

func TestOrphanedLockReleasedOnlyWhenAlone(t *testing.T) {
	for _, handler := range []string{HandlerMemcache, HandlerMemcached} {
		t.Run(handler, func(t *testing.T) {
			f := setup(t, 3, func(o *Options) { o.Handler = handler })
			id := newID(t)
			data, lock := f.s.Keys(id)
			for i := range 3 {
				f.set(i, data, session, 0, 1440)
			}
			f.plantLock(1, id)

			// Two requests of the session in flight here: the other one may be
			// the holder, so the lock stays, CAS and all.
			f.s.Begin(id)
			f.s.Begin(id)
			before := f.get(1, lock)
			if n := f.s.Orphaned(id); n != 0 {
				t.Errorf("Orphaned with another request in flight released %d locks", n)
			}
			if after := f.get(1, lock); after == nil || after.CasID != before.CasID {
				t.Fatalf("lock changed with another request in flight: %+v -> %+v", before, after)
			}
			f.s.End(id)

			// Alone: the lock it left is removed, the data is not.
			if n := f.s.Orphaned(id); n != 1 {
				t.Errorf("Orphaned released %d locks, want 1", n)
			}
			f.s.End(id)
			if f.get(1, lock) != nil {
				t.Error("lock still there")
			}
			for i := range 3 {
				if f.get(i, data) == nil {
					t.Errorf("node %d lost the data", i)
				}
			}
			if got := f.s.Stats().LocksReleased; got != 1 {
				t.Errorf("LocksReleased = %d", got)
			}
		})
	}
}

// TestOrphanedNeverRemovesANewerLock: a live request takes the lock between
// the read and the delete: its lock stays.
func TestOrphanedNeverRemovesANewerLock(t *testing.T) {
	for _, handler := range []string{HandlerMemcache, HandlerMemcached} {
		t.Run(handler, func(t *testing.T) {
			f := setup(t, 3, func(o *Options) { o.Handler = handler })
			id := newID(t)
			_, lock := f.s.Keys(id)
			f.plantLock(0, id)
			var once sync.Once
			f.s.beforeUnlock = func() {
				// The holder died and a live request took the lock anew.
				once.Do(func() { f.plantLock(0, id) })
			}
			taken := f.get(0, lock) // read inside the hook's window below
			f.s.Begin(id)
			if n := f.s.Orphaned(id); n != 0 {
				t.Errorf("Orphaned released %d locks, want 0", n)
			}
			f.s.End(id)
			now := f.get(0, lock)
			if now == nil || now.CasID == taken.CasID {
				t.Fatalf("the newer lock was removed or not planted: %+v", now)
			}
		})
	}
}

// TestStaleLockReleased: with StaleLockAfter, a lock lookups keep finding
// held and unchanged that long, with no request of the session in flight
// here that began before it was seen, is released; one that may belong to a
// request in flight here is not.
func TestStaleLockReleased(t *testing.T) {
	for _, handler := range []string{HandlerMemcache, HandlerMemcached} {
		t.Run(handler, func(t *testing.T) {
			var mu sync.Mutex
			clock := time.Now()
			now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
			advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
			f := setup(t, 3, func(o *Options) {
				o.Handler = handler
				o.StaleLockAfter = 30 * time.Second
				o.Now = now
			})
			held, free := newID(t), newID(t)
			for _, id := range []string{held, free} {
				data, _ := f.s.Keys(id)
				for i := range 3 {
					f.set(i, data, session, 0, 1440)
				}
				f.plantLock(2, id)
			}
			_, heldLock := f.s.Keys(held)
			_, freeLock := f.s.Keys(free)
			f.s.Begin(held) // a request here, begun before the lock was seen: maybe its holder

			for _, id := range []string{held, free} {
				if r := f.check(id, Verified); !r.Locked {
					t.Fatalf("%s not locked", id)
				}
			}
			advance(29 * time.Second)
			f.check(free, Verified)
			if f.get(2, freeLock) == nil {
				t.Fatal("released before stale_lock_after")
			}
			advance(2 * time.Second)
			f.check(held, Verified)
			f.check(free, Verified)
			if f.get(2, freeLock) != nil {
				t.Error("stale lock with no request in flight here not released")
			}
			if f.get(2, heldLock) == nil {
				t.Error("lock that a request in flight here may hold was released")
			}
			if got := f.s.Stats().StaleLocks; got != 1 {
				t.Errorf("StaleLocks = %d, want 1", got)
			}
			f.s.End(held)
		})
	}
}

// TestStaleLockSwept: a stale lock is released even when no further request
// of its session comes to look (the one that saw it waits in PHP behind it),
// and a lock a request in flight here may hold is still kept.
func TestStaleLockSwept(t *testing.T) {
	for _, handler := range []string{HandlerMemcache, HandlerMemcached} {
		t.Run(handler, func(t *testing.T) {
			f := setup(t, 3, func(o *Options) {
				o.Handler = handler
				o.StaleLockAfter = 300 * time.Millisecond
			})
			held, free := newID(t), newID(t)
			for _, id := range []string{held, free} {
				data, _ := f.s.Keys(id)
				for i := range 3 {
					f.set(i, data, session, 0, 1440)
				}
				f.plantLock(2, id)
			}
			_, heldLock := f.s.Keys(held)
			_, freeLock := f.s.Keys(free)
			f.s.Begin(held) // begun before the lock was seen: maybe its holder
			defer f.s.End(held)
			for _, id := range []string{held, free} {
				if r := f.check(id, Verified); !r.Locked {
					t.Fatalf("%s not locked", id)
				}
			}
			// The request that saw the free lock waits behind it: no more Checks.
			f.s.Begin(free)
			defer f.s.End(free)
			for deadline := time.Now().Add(5 * time.Second); f.get(2, freeLock) != nil; {
				if time.Now().After(deadline) {
					t.Fatal("stale lock not released within 5s without a lookup")
				}
				time.Sleep(20 * time.Millisecond) // polling for the sweep
			}
			if f.get(2, heldLock) == nil {
				t.Error("lock that a request in flight here may hold was released")
			}
			if got := f.s.Stats().StaleLocks; got != 1 {
				t.Errorf("StaleLocks = %d, want 1", got)
			}
		})
	}
}

// BenchmarkBeginEnd is what the proxy adds to every request of a verified
// session to know which are in flight.
func BenchmarkBeginEnd(b *testing.B) {
	s, err := New(Options{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		b.Fatal(err)
	}
	id := newID(b)
	b.ReportAllocs()
	for b.Loop() {
		s.Begin(id)
		s.End(id)
	}
}

// pauseAll stops every node with SIGSTOP and waits until the store has lost
// each one to timeouts, so that lookups skip them all (liveNodes is empty).
// The returned func resumes them; the test's cleanup does if it did not.
func (f *fixture) pauseAll() (resume func()) {
	f.t.Helper()
	for i := range f.s.nodes {
		f.mc.Pause(i)
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			for i := range f.s.nodes {
				f.mc.Resume(i)
			}
		})
	}
	f.t.Cleanup(resume)
	f.waitNodes("every node lost to timeouts", func(st NodeStatus) bool { return !st.Up })
	if live := f.s.liveNodes(); len(live) != 0 {
		f.t.Fatalf("lookups still ask %v", live)
	}
	return resume
}

// lockedSession stores a session on every node with its lock held on each,
// as PHP leaves it when it dies holding the lock.
func (f *fixture) lockedSession() (id, data, lock string) {
	f.t.Helper()
	id = newID(f.t)
	data, lock = f.s.Keys(id)
	for i := range f.s.nodes {
		f.set(i, data, session, 0, 1440)
		f.plantLock(i, id)
	}
	return id, data, lock
}

// TestOrphanedWaitsForNodesDownByTimeouts: the backend dies under a request
// holding the lock while every node is marked down by timeouts (seen at load
// average 20). Orphaned waits for the nodes, as Check holds for them, and
// releases the lock when they answer again, before the proxy retries the
// request; a request of the session that begins meanwhile keeps it.
func TestOrphanedWaitsForNodesDownByTimeouts(t *testing.T) {
	for _, handler := range []string{HandlerMemcache, HandlerMemcached} {
		for _, other := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/other=%v", handler, other), func(t *testing.T) {
				// A long hold: the wait must not run out on a loaded machine.
				f := setup(t, 3, func(o *Options) { o.Handler = handler; o.VerifyTTL = -1; o.RestartHold = 10 * time.Second })
				id, data, lock := f.lockedSession()
				before := make([]uint64, 3)
				for i := range before {
					before[i] = f.get(i, lock).CasID
				}
				resume := f.pauseAll()
				f.s.Begin(id)
				done := make(chan int, 1)
				go func() { done <- f.s.Orphaned(id) }()
				waitFor(t, "Orphaned to wait for the nodes", func() bool {
					select {
					case n := <-done:
						t.Fatalf("Orphaned returned %d with every node down by timeouts; want it to wait for them", n)
					default:
					}
					return len(f.s.holds) == 1
				})
				if other {
					f.s.Begin(id) // maybe the lock's holder, as far as Orphaned can tell
				}
				resume()
				var released int
				select {
				case released = <-done:
				case <-time.After(15 * time.Second):
					t.Fatal("Orphaned did not return after the nodes resumed")
				}
				for i := range 3 {
					l := f.get(i, lock)
					switch {
					case other && (l == nil || l.CasID != before[i]):
						t.Errorf("node %d: lock changed with another request in flight: %+v", i, l)
					case !other && l != nil:
						t.Errorf("node %d: lock still held after the nodes answered again", i)
					}
					if f.get(i, data) == nil {
						t.Errorf("node %d lost the data", i)
					}
				}
				if want := map[bool]int{false: 3, true: 0}[other]; released != want {
					t.Errorf("Orphaned released %d locks, want %d", released, want)
				}
				if other {
					f.s.End(id)
				}
				f.s.End(id)
			})
		}
	}
}

// TestOrphanedReleasedWhenNodesReturn: with no hold (or past it) Orphaned
// cannot wait; the lock is released in the background when the nodes come
// back, once no request of the session is in flight here, and not a moment
// is added to the session's requests meanwhile.
func TestOrphanedReleasedWhenNodesReturn(t *testing.T) {
	for _, handler := range []string{HandlerMemcache, HandlerMemcached} {
		t.Run(handler, func(t *testing.T) {
			f := setup(t, 3, func(o *Options) { o.Handler = handler; o.VerifyTTL = -1; o.RestartHold = -1 })
			id, data, lock := f.lockedSession()
			resume := f.pauseAll()
			f.s.Begin(id)
			if n := f.s.Orphaned(id); n != 0 {
				t.Fatalf("Orphaned released %d locks on paused nodes", n)
			}
			f.s.End(id)
			if _, ok := f.s.resumes.get(f.s.cache.hash(id)); ok {
				// Its Checks would wait for the nodes there (awaitResumed).
				t.Error("a release candidate before any node is back")
			}
			resume()
			f.waitNodes("every node back", func(st NodeStatus) bool { return st.Up })
			waitFor(t, "the lock released on every node", func() bool {
				for i := range 3 {
					if f.get(i, lock) != nil {
						return false
					}
				}
				return true
			})
			for i := range 3 {
				if f.get(i, data) == nil {
					t.Errorf("node %d lost the data", i)
				}
			}
		})
	}
}

// TestOrphanedSkipsANodeThatRestarted: a node that restarts while Orphaned
// waits for it comes back without the dead request's lock; a lock there now
// was taken since (through another instance) and stays.
func TestOrphanedSkipsANodeThatRestarted(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.Handler = HandlerMemcached; o.VerifyTTL = -1; o.RestartHold = 10 * time.Second })
	id, _, lock := f.lockedSession()
	resume := f.pauseAll()
	f.s.Begin(id)
	defer f.s.End(id)
	done := make(chan int, 1)
	go func() { done <- f.s.Orphaned(id) }()
	waitFor(t, "Orphaned to wait for the nodes", func() bool { return len(f.s.holds) == 1 })
	f.restart(0)
	f.waitNode(0, "node 0 back, restarted", func(st NodeStatus) bool { return st.Up && st.Restarts == 1 })
	f.plantLock(0, id) // a live request through another instance
	live := f.get(0, lock).CasID
	resume()
	select {
	case n := <-done:
		if n != 2 {
			t.Errorf("Orphaned released %d locks, want 2 (the nodes that only hung)", n)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Orphaned did not return after the nodes resumed")
	}
	if l := f.get(0, lock); l == nil || l.CasID != live {
		t.Errorf("the live lock on the restarted node was removed or changed: %+v", l)
	}
	for i := 1; i < 3; i++ {
		if f.get(i, lock) != nil {
			t.Errorf("node %d: lock still held", i)
		}
	}
}
