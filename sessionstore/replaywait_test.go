package sessionstore

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// settledAfterReturn has node p come back from a hang and the session's next
// request settled against it (Check), as a request that then goes to PHP.
func (f *fixture) settledAfterReturn(id string, p int) {
	f.t.Helper()
	f.s.noteReturn(f.s.nodes[p])
	time.Sleep(resumeSettle + 10*time.Millisecond)
	f.check(id, Verified)
}

// lockValue is id's lock counter on node i (-1: none).
func (f *fixture) lockValue(i int, id string) int {
	f.t.Helper()
	_, lock := f.s.Keys(id)
	it := f.get(i, lock)
	if it == nil {
		return -1
	}
	v, _ := strconv.Atoi(string(it.Value))
	return v
}

// TestLateReplayedLockReleasedForItsWaiter: pecl memcache. The node PHP locks
// a session on comes back from a hang; the session's next request is settled
// (its lock there free) and goes to PHP; only then does a lock command the
// node had queued run — a busy node works through its backlog late — and the
// released lock ("0") reads held for nobody. PHP waits behind it until the
// lock's TTL (memcache.lock_timeout, 15 s; seen in TestZeroLossUnderFaults
// as a request waiting past the client's 10 s). Its waiting shows: pecl
// memcache repeats `incr` at every back-off tick, so the counter climbs, and
// the lock is removed. Real memcached, real PHP.
func TestLateReplayedLockReleasedForItsWaiter(t *testing.T) {
	for _, tc := range []struct {
		name string
		// toPHP has the session's request admitted here, past Check, with
		// the replays run by node p (replay) at the moment they land.
		toPHP func(f *fixture, id string, p int, replay func())
	}{
		{"settled", func(f *fixture, id string, p int, replay func()) {
			f.settledAfterReturn(id, p)
			f.s.Begin(id)
			replay()
		}},
		// The request was checked while the node was still down (its
		// watcher had not seen the return yet): it is at PHP as the node
		// returns, with the replays landed.
		{"at PHP at the return", func(f *fixture, id string, p int, replay func()) {
			replay()
			f.resumedDuring(id, p) // Begins it
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t, 3, func(o *Options) { o.Handler = HandlerMemcache })
			args := f.phpArgs(HandlerMemcache)
			id := newID(t)
			data, _ := f.s.Keys(id)
			p := f.readNode(args, id) // every copy now counts 100*(p+1)+1
			want := 100*(p+1) + 2

			// The replays: the incr of the released lock ("0"), and the set
			// of the copy before the last write, which the request that
			// failed over made on the other nodes (pecl memcache sends
			// absolute expiry times: about the same TTL).
			tc.toPHP(f, id, p, func() {
				f.plantLock(p, id)
				f.set(p, data, fmt.Appendf(nil, "visit|i:%d;", 100*(p+1)), 0, 1440)
			})
			start := time.Now()
			r := f.php(args, id, "inc")
			took := time.Since(start)
			f.s.End(id)
			if took > 3*time.Second {
				t.Errorf("PHP waited %v behind the replayed lock, want it removed within a few of its back-off ticks", took.Round(time.Millisecond))
			}
			if r.Visit != want {
				t.Errorf("PHP counted %d, want %d: it read the replayed copy", r.Visit, want)
			}
			if got := f.s.replayedLocks.Load(); got != 1 {
				t.Errorf("replayed locks released: %d, want 1", got)
			}
			t.Logf("PHP answered after %v", took.Round(time.Millisecond))
		})
	}
}

// TestLateReplayedLockKeptForItsHolder: the same late replay, but on the lock
// the session's request at PHP holds (1 becomes 2, and stays: nobody waits).
// And a request waiting at PHP behind the lock of another request of the
// session in flight here (its counter climbs) is no sign either. Neither lock
// may be removed.
func TestLateReplayedLockKeptForItsHolder(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.Handler = HandlerMemcache })
	args := f.phpArgs(HandlerMemcache)
	id := newID(t)
	p := f.readNode(args, id)
	want := 100*(p+1) + 2
	_, lock := f.s.Keys(id)

	f.settledAfterReturn(id, p)
	f.s.Begin(id)
	finish := f.holdPHP(args, id)
	if v := f.lockValue(p, id); v != 1 {
		t.Fatalf("lock on node %d = %d while PHP holds it, want 1", p, v)
	}
	f.set(p, lock, []byte("2"), 768, 15) // the late replay: incr of the held 1
	time.Sleep(5 * replayWaitPoll)
	if v := f.lockValue(p, id); v != 2 {
		t.Fatalf("the holder's lock on node %d = %d, want 2 (kept)", p, v)
	}

	// A second request of the session, here too, waits at PHP behind it.
	f.check(id, Verified)
	f.s.Begin(id)
	done := make(chan phpResult, 1)
	go func() { done <- f.php(args, id, "inc") }()
	select {
	case r := <-done:
		t.Fatalf("the second request ran while the first held the lock (counted %d): the lock was removed", r.Visit)
	case <-time.After(8 * replayWaitPoll):
	}
	if v := f.lockValue(p, id); v <= 2 {
		t.Errorf("lock counter %d: the second request is not waiting at PHP, the test shows nothing", v)
	}
	finish()
	f.s.End(id)
	r := <-done
	f.s.End(id)
	if r.Visit != want {
		t.Errorf("PHP counted %d, want %d", r.Visit, want)
	}
	if got := f.s.replayedLocks.Load(); got != 0 {
		t.Errorf("replayed locks released: %d, want 0", got)
	}
}

// replayedUnderWaiter sets up pecl memcache's case of the tests below: node
// replayedNode came back from a hang and ran the replays a request that
// failed over had left queued there (the lock, and the copy before its
// write: older, where the others hold newer), and the session's next
// request is at PHP, waiting behind that lock. It returns the session's hash.
func replayedUnderWaiter(t *testing.T) (f *fixture, id, data string, h uint64) {
	t.Helper()
	f = setup(t, 3, func(o *Options) { o.Handler = HandlerMemcache })
	id = newID(t)
	data, _ = f.s.Keys(id)
	for i := range 3 {
		f.set(i, data, newerCopy, 0, 1440)
	}
	f.set(replayedNode, data, olderCopy, 0, 1440)
	f.plantLock(replayedNode, id)
	return f, id, data, f.resumedDuring(id, replayedNode)
}

// The copies and the node of replayedUnderWaiter.
var olderCopy, newerCopy = []byte("visit|i:76;"), []byte("visit|i:77;")

const replayedNode = 1

// TestReplayedLockReleasedAfterTheCopy: when the settle removes a replayed
// lock that the session's request at PHP waits behind, PHP takes the lock at
// its next back-off tick and reads the copy in the same round trip (pecl
// memcache pipelines incr, add and get). So the returned node's copy, older
// than the others' (the request that failed over wrote them without it),
// must be put right before the lock goes, not after: read as PHP would at
// the moment the lock is gone, it is already the others'. (A lost update in
// TestZeroLossUnderFaults just after the settle again of replaywait.go fits
// this.)
func TestReplayedLockReleasedAfterTheCopy(t *testing.T) {
	f, id, data, h := replayedUnderWaiter(t)
	const p = replayedNode
	var atRelease []byte
	f.s.afterUnlock = func(i int) {
		if i == p {
			atRelease = f.get(p, data).Value // PHP's get, pipelined with its add
		}
	}
	f.s.releaseReplayed(h, id, 1, true)
	f.s.End(id)

	if f.lockValue(p, id) != -1 {
		t.Fatalf("the replayed lock on node %d is still there", p)
	}
	if !bytes.Equal(atRelease, newerCopy) {
		t.Errorf("as the lock went, node %d held %q, want %q: PHP would count from the older copy", p, atRelease, newerCopy)
	}
	if got := f.get(p, data).Value; !bytes.Equal(got, newerCopy) {
		t.Errorf("node %d's copy is %q after the settle, want %q", p, got, newerCopy)
	}
}

// TestReplayedLockKeptWhileTheCopyFails: when the older copy on the returned
// node cannot be put right (here a late replayed set lands between the
// settle's read and its store, so the compare-and-swap fails), the replayed
// lock stays, so that PHP does not read that copy, and the next try settles
// both.
func TestReplayedLockKeptWhileTheCopyFails(t *testing.T) {
	f, id, data, h := replayedUnderWaiter(t)
	const p = replayedNode
	f.s.beforeUnlock = func() {
		f.s.beforeUnlock = nil
		f.set(p, data, olderCopy, 0, 1440) // the late replay: same bytes, a new CAS
	}
	if f.s.releaseReplayed(h, id, 1, true) {
		t.Error("settled although the older copy could not be put right")
	}
	if f.lockValue(p, id) == -1 {
		t.Fatal("the replayed lock was removed over the older copy: PHP would count from it")
	}
	if !f.s.releaseReplayed(h, id, 1, true) {
		t.Error("the second try did not settle")
	}
	f.s.End(id)
	if f.lockValue(p, id) != -1 {
		t.Errorf("the replayed lock on node %d is still there after the second try", p)
	}
	if got := f.get(p, data).Value; !bytes.Equal(got, newerCopy) {
		t.Errorf("node %d's copy is %q, want %q", p, got, newerCopy)
	}
}

// TestReplayedLockMovedIsNotSettled: the waiting request's incr moves the
// replayed lock between the settle's read and its compare-and-delete, which
// then fails. That is not settled: the next try removes the lock. (Taken for
// settled, the follow ended and the request waited out the lock's TTL.)
func TestReplayedLockMovedIsNotSettled(t *testing.T) {
	f, id, _, h := replayedUnderWaiter(t)
	_, lock := f.s.Keys(id)
	const p = replayedNode
	f.s.beforeUnlock = func() {
		f.s.beforeUnlock = nil
		f.set(p, lock, []byte("2"), 768, 15) // the waiter's incr at a back-off tick
	}
	if f.s.releaseReplayed(h, id, 1, true) {
		t.Error("settled although the lock's delete failed")
	}
	if f.lockValue(p, id) != 2 {
		t.Fatalf("lock on node %d = %d, want the moved 2", p, f.lockValue(p, id))
	}
	if !f.s.releaseReplayed(h, id, 1, true) {
		t.Error("the second try did not settle")
	}
	f.s.End(id)
	if f.lockValue(p, id) != -1 {
		t.Errorf("the replayed lock on node %d is still there after the second try", p)
	}
}

// TestFollowedAfterResumeWait: pecl memcache. A session's request whose
// Check could not settle a lock a returned node took for nobody, because
// another request of the session was in flight here for all of resumeWait,
// goes to PHP with the lock still there. When that other request ends first
// (its End cannot release the lock either: this one is in flight), this one
// waits at PHP behind the lock, its counter climbing; the lock is removed
// then, as for a replay that lands after the settle. (Before, the Check
// that timed out did not follow the session, and PHP waited out the lock's
// TTL, 15 s.)
func TestFollowedAfterResumeWait(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.Handler = HandlerMemcache })
	id := newID(t)
	data, lock := f.s.Keys(id)
	for i := range 3 {
		f.set(i, data, newerCopy, 0, 1440)
	}
	f.plantLock(replayedNode, id)
	f.resumedDuring(id, replayedNode) // request A, at PHP across the return
	start := time.Now()
	f.check(id, Verified) // request B: A is in flight, so B's settle waits, then gives up
	if waited := time.Since(start); waited < resumeWait {
		t.Fatalf("the Check returned after %v, before resumeWait: the test shows nothing", waited)
	}
	f.s.Begin(id) // B goes to PHP
	f.s.End(id)   // A ends first
	if f.lockValue(replayedNode, id) != 1 {
		t.Fatalf("the lock on node %d = %d as A ended, want 1 (B in flight)", replayedNode, f.lockValue(replayedNode, id))
	}
	// B's PHP waits behind the lock: pecl memcache's incr at each back-off tick.
	for i := 2; i < 40 && f.lockValue(replayedNode, id) != -1; i++ {
		f.set(replayedNode, lock, []byte(strconv.Itoa(i)), 768, 15)
		time.Sleep(50 * time.Millisecond)
	}
	if v := f.lockValue(replayedNode, id); v != -1 {
		t.Errorf("the lock on node %d = %d after 2 s of B waiting behind it, want it removed", replayedNode, v)
	}
	f.s.End(id)
}
