package sessionstore

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// TestReplayedLockReleased: a node returns without a restart (a hang) holding
// a lock and a copy older than the other nodes' for a session that had a
// request here during the outage. While a request of the session is in
// flight here, or one begins between the read and the delete, nothing is
// touched; with none, the lock is removed and the copy brought up to date.
func TestReplayedLockReleased(t *testing.T) {
	for _, handler := range []string{HandlerMemcache, HandlerMemcached} {
		t.Run(handler, func(t *testing.T) {
			f := setup(t, 3, func(o *Options) { o.Handler = handler })
			id := newID(t)
			data, lock := f.s.Keys(id)
			old, fresh := []byte("visits|i:1;"), []byte("visits|i:2;")
			f.set(0, data, fresh, 0, 1440)
			f.set(1, data, old, 0, 1440) // the same TTL: repair could not tell which is newer
			f.set(2, data, fresh, 0, 1440)
			f.plantLock(1, id)
			h := f.s.cache.hash(id)

			f.s.Begin(id) // a request here during the outage
			f.s.recent.add(id, time.Now().UnixNano())
			f.s.noteResumed(f.s.nodes[1], time.Now())
			r, ok := f.s.resumes.get(h)
			if !ok || r.nodes != 1<<1 {
				t.Fatalf("candidate %+v, %v; want node 1", r, ok)
			}
			f.s.resumes.update(h, resumeMax, func(r resumeSweep, _ bool) (resumeSweep, bool) {
				r.from = 0 // settled
				return r, true
			})
			before := f.get(1, lock)
			unchanged := func(when string) {
				t.Helper()
				if now := f.get(1, lock); now == nil || now.CasID != before.CasID {
					t.Fatalf("%s: lock changed: %+v -> %+v", when, before, now)
				}
				if now := f.get(1, data); !bytes.Equal(now.Value, old) {
					t.Fatalf("%s: copy changed to %q", when, now.Value)
				}
			}
			if f.s.releaseReplayed(h, id, 0) {
				t.Error("settled with a request in flight")
			}
			unchanged("a request in flight")

			// As the request ends, End releases, but another request begins
			// between the read and the delete.
			var once sync.Once
			f.s.beforeUnlock = func() { once.Do(func() { f.s.Begin(id) }) }
			f.s.End(id)
			unchanged("a request began")
			f.s.beforeUnlock = nil
			f.s.End(id) // that one ends, alone: End releases

			if f.get(1, lock) != nil {
				t.Error("lock still held")
			}
			if now := f.get(1, data); now == nil || !bytes.Equal(now.Value, fresh) {
				t.Errorf("copy on the resumed node: %+v, want %q", now, fresh)
			}
			if _, ok := f.s.resumes.get(h); ok {
				t.Error("still a candidate")
			}
			if got := f.s.Stats().ReplayedLocks; got != 1 {
				t.Errorf("ReplayedLocks = %d, want 1", got)
			}
		})
	}
}

// TestReplayedCopyNotRegressed: the others agree on a copy whose TTL is
// clearly shorter than the resumed node's (one of them restarted and was
// repaired from a stale copy, say): the resumed node's copy is kept.
func TestReplayedCopyNotRegressed(t *testing.T) {
	f := setup(t, 3, nil)
	id := newID(t)
	data, _ := f.s.Keys(id)
	mine, theirs := []byte("visits|i:7;"), []byte("visits|i:6;")
	f.set(0, data, theirs, 0, 1000)
	f.set(1, data, mine, 0, 1440)
	f.set(2, data, theirs, 0, 1000)
	f.s.Begin(id)
	f.s.recent.add(id, time.Now().UnixNano())
	f.s.noteResumed(f.s.nodes[1], time.Now())
	h := f.s.cache.hash(id)
	f.s.resumes.update(h, resumeMax, func(r resumeSweep, _ bool) (resumeSweep, bool) {
		r.from = 0 // settled
		return r, true
	})
	f.s.End(id) // releases
	if _, ok := f.s.resumes.get(h); ok {
		t.Fatal("still a candidate")
	}
	if now := f.get(1, data); now == nil || !bytes.Equal(now.Value, mine) {
		t.Errorf("copy on the resumed node: %+v, want %q kept", now, mine)
	}
}
