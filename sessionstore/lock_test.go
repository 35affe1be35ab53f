package sessionstore

import (
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
