package sessionstore

import (
	"bufio"
	"context"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file releases session locks whose holder is gone.
//
// A PHP request that dies mid-way (backend killed, connection reset) leaves
// its session lock: pecl memcache's waiters block until the lock's 15 s TTL,
// pecl memcached's fail after 0.75 s until sess_lock_expire. The proxy sees
// the request die and calls Orphaned; a lock is removed only by a
// compare-and-delete (`md <key> C<cas>`) of the CAS read after the failure,
// and only while this instance has no other request of that session in
// flight (Begin/End), so a lock a live request took since is never removed.
// Whether the lock was free when the request was checked (Result.Locked) is
// the proxy's to check: if it was held, the request was a waiter, not the
// holder. Nodes that cannot be asked then (down, hung) are waited for, and
// what is still not asked is released when they come back (see Orphaned).
//
// With StaleLockAfter, a lock that lookups keep finding held, unchanged, for
// that long, while no request of that session that could hold it is in
// flight here, is reported and released the same way. sweepStale looks again
// at the locks being followed, because the request that saw such a lock is
// often the session's last: it waits in PHP behind the lock, and no further
// lookup would come (a hung node that resumes replays the lock commands queued
// for it while PHP had failed over: a lock nobody holds).

// Why a lock was released (Options.LockReleased).
const (
	LockOrphaned = "orphaned" // left by a request whose backend died under it (Orphaned)
	LockStale    = "stale"    // held unchanged past StaleLockAfter with no request here
	LockReplayed = "replayed" // taken for nobody by a node that resumed (resume.go)
)

// inflightShards splits the in-flight table like the verification cache.
const inflightShards = 16

// staleWatchMax bounds the locks watched for staleness (per shard: emptied
// wholesale beyond it, as the cache is).
const staleWatchMax = 10_000 / inflightShards

// sessionTable maps id hashes (verifyCache.hash) to small per-session records
// under sharded locks. A hash collision only makes the guards stricter.
type sessionTable[V any] struct {
	shards [inflightShards]struct {
		mu sync.Mutex // guards m
		m  map[uint64]V
	}
}

// update applies fn to h's record (zero and false if absent); fn returns the
// new record and whether to keep it.
func (t *sessionTable[V]) update(h uint64, limit int, fn func(v V, ok bool) (V, bool)) {
	sh := &t.shards[h>>60]
	sh.mu.Lock()
	v, ok := sh.m[h]
	v, keep := fn(v, ok)
	switch {
	case keep:
		if sh.m == nil || !ok && len(sh.m) >= limit {
			sh.m = make(map[uint64]V)
		}
		sh.m[h] = v
	case ok:
		delete(sh.m, h)
	}
	sh.mu.Unlock()
}

// get returns h's record.
func (t *sessionTable[V]) get(h uint64) (V, bool) {
	sh := &t.shards[h>>60]
	sh.mu.Lock()
	v, ok := sh.m[h]
	sh.mu.Unlock()
	return v, ok
}

// tableEntry is one record of a sessionTable and its key, as snapshot
// returns them.
type tableEntry[V any] struct {
	h uint64
	v V
}

// snapshot returns every record, each shard read under its lock: for the
// background loops that walk a table without holding it.
func (t *sessionTable[V]) snapshot() []tableEntry[V] {
	var all []tableEntry[V]
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for h, v := range sh.m {
			all = append(all, tableEntry[V]{h, v})
		}
		sh.mu.Unlock()
	}
	return all
}

// inflight is one session's requests in flight on this instance: n at PHP,
// and those waiting at the edge for one of them to end (queue.go).
type inflight struct {
	n          int32
	since      int64  // unix ns when n last went from 0 to 1
	slots      int32  // of n, those Enter admitted against a max (Release ends them)
	begun      uint32 // requests admitted so far, wrapping: a change means one began (resume.go)
	waiting    int32
	head, tail *Waiter
}

// heldLock is a held lock as lookups keep seeing it (StaleLockAfter).
type heldLock struct {
	first int64  // unix ns of the first lookup that saw it
	mark  uint64 // memcached: CAS sum; memcache: counter sum (waiters raise it)
	id    string // the session's id (a copy), for sweepStale
}

// Begin records that a request of session id is being forwarded; End must
// follow when it is over. Cheap: a sharded map update. It never waits: see
// Enter for the queue.
func (s *Store) Begin(id string) { s.Enter(id, 0, 0, nil) }

// End records that a request Begin announced is over.
func (s *Store) End(id string) {
	s.endResumed(id)
	s.inflight.update(s.cache.hash(id), 1<<30, func(f inflight, _ bool) (inflight, bool) {
		f.n--
		return f, f.n > 0 || f.head != nil
	})
}

// lockState is one node's lock key as read for a release.
type lockState struct {
	held  bool
	value int64
	cas   uint64
}

// Orphaned releases the lock of session id that a request left when its
// backend failed under it (connection reset or closed mid-request: PHP died
// holding the lock). Call it between Begin and End of that request, and only
// if its Check found the lock free. It does nothing while another request of
// the session is in flight here, and removes only a lock whose CAS is the one
// it read, on each node. It reports how many lock keys it removed.
//
// It asks every node, those marked down by timeouts too (lookups skip them):
// on a loaded machine such a node often answers the next time, and PHP still
// reads and locks there. A node that does not answer is waited for as Check
// holds for it (at most RestartHold after it went down) and asked again, so
// that the proxy's retry of the request, whose PHP would wait for this very
// lock and give up, comes after the release. Seen in TestZeroLossUnderFaults
// at load average 20: lookups had timed out on every node when the backend
// died, the release was skipped and never retried, and the retried request
// failed after 4.9 s (pecl memcached gave up waiting for the lock). What is
// still not asked is left to resume.go's sweep for when the node is back.
func (s *Store) Orphaned(id string) int {
	_, lock := s.Keys(id)
	if lock == "" {
		return 0
	}
	h := s.cache.hash(id)
	alone := func() bool {
		f, _ := s.inflight.get(h)
		return f.n <= 1
	}
	if !alone() {
		s.log.Info("backend failed under a session request; lock kept: another request of the session is in flight",
			"session", ShortID(id))
		return 0
	}
	restarts := make([]int, len(s.nodes))
	for i, n := range s.nodes {
		n.mu.Lock()
		restarts[i] = n.restarts
		n.mu.Unlock()
	}
	released, failed := s.unlockOn(s.all, lock)
	if len(failed) > 0 {
		// Remembered as checked now, so that a node that did not answer and
		// comes back without a restart makes it a candidate of resume.go's
		// sweep, which reads the lock there and removes it under Orphaned's
		// guard (no request of the session in flight here but one ending).
		// Not in the sweep's table right away: until the node is back, every
		// Check of the session would wait for it there (awaitResumed).
		s.recent.add(id, s.now().UnixNano())
		// Bounded by RestartHold, not the request's context: the lock must
		// go whether or not the client waits for the retry.
		if _, back := s.hold(context.Background(), failed, maxHeld); back && alone() {
			var up, down []int
			for _, i := range failed {
				n := s.nodes[i]
				n.mu.Lock()
				restarted := n.restarts != restarts[i]
				n.mu.Unlock()
				switch {
				case restarted:
					// Back empty: the dead request's lock is gone, and one
					// there now was taken since (through another instance).
				case n.up.Load():
					up = append(up, i)
				default:
					down = append(down, i)
				}
			}
			n, still := s.unlockOn(up, lock)
			released, failed = released+n, append(down, still...)
		}
	}
	if released > 0 {
		s.locksReleased.Add(1)
		if s.lockReleased != nil {
			s.lockReleased(LockOrphaned)
		}
		s.log.Warn("released the session lock a failed backend request left", "session", ShortID(id), "nodes", released)
	}
	if len(failed) > 0 {
		s.log.Warn("backend failed under a session request; its lock is released when these nodes answer again",
			"session", ShortID(id), "nodes", len(failed))
	}
	return released
}

// unlockOn removes lock where it is held on the nodes idx, by
// compare-and-delete of the CAS just read, and reports how many it removed
// and the nodes that failed.
func (s *Store) unlockOn(idx []int, lock string) (released int, failed []int) {
	// Bounded by Timeout, not the request's context: a client going away
	// must not mark nodes down.
	ctx := context.Background()
	read := "mg " + lock + " v c\r\n"
	res := fanout(s, idx, func(n *node) (int, error) {
		var released int
		// pecl memcache's waiters incr the lock (changing its CAS) while they
		// wait: retry while only that happened (the counter grew).
		var prev int64
		for range 3 {
			var st lockState
			err := s.metaDo(ctx, n, read, func(r *bufio.Reader) error {
				it, err := readMeta(r)
				st = lockState{held: it.Found && s.lockHeld(it.Value), cas: it.CAS}
				st.value, _ = strconv.ParseInt(strings.TrimSpace(string(it.Value)), 10, 64)
				return err
			})
			if err != nil || !st.held || prev != 0 && (s.handler == HandlerMemcached || st.value <= prev) {
				return released, err
			}
			if s.beforeUnlock != nil {
				s.beforeUnlock()
			}
			ok, err := s.deleteCAS(ctx, n, lock, st.cas)
			if err != nil || ok {
				return released + b2i(ok), err
			}
			prev = st.value
		}
		return released, nil
	})
	for _, i := range idx {
		released += res[i].v
		if res[i].err != nil && !answered(res[i].err) {
			failed = append(failed, i)
		}
	}
	return released, failed
}

// deleteCAS deletes key on n if its CAS is still cas, and reports whether it did.
func (s *Store) deleteCAS(ctx context.Context, n *node, key string, cas uint64) (bool, error) {
	var line string
	err := s.metaDo(ctx, n, "md "+key+" C"+strconv.FormatUint(cas, 10)+"\r\n", func(r *bufio.Reader) (err error) {
		line, err = readLine(r)
		return err
	})
	switch {
	case err != nil:
		return false, err
	case line == "HD":
		return true, nil
	case line == "EX" || line == "NF":
		return false, nil // taken again, or gone: not ours to remove
	}
	return false, errProtocol
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// noteLock follows held locks for StaleLockAfter; a lookup calls it with what
// it read. A lock found held, unchanged, for StaleLockAfter, while no request
// of the session that began before it was first seen is in flight here, is
// reported and released (compare-and-delete of the CAS just read).
func (s *Store) noteLock(id, lock string, locked bool, got []outcome[[2]*metaItem]) {
	if s.staleAfter <= 0 {
		return
	}
	h := s.cache.hash(id)
	var mark uint64
	for _, g := range got {
		if l := g.v[1]; g.err == nil && l != nil && s.lockHeld(l.Value) {
			if s.handler == HandlerMemcached {
				mark += l.CAS
			} else {
				v, _ := strconv.ParseUint(strings.TrimSpace(string(l.Value)), 10, 64)
				mark += v
			}
		}
	}
	now := s.now().UnixNano()
	var first int64
	s.staleWatch.update(h, staleWatchMax, func(w heldLock, ok bool) (heldLock, bool) {
		// The same lock: memcached's CAS is unchanged; memcache's counter
		// only grew (waiters incr it; a new holder starts again at 1).
		same := ok && (s.handler == HandlerMemcached && mark == w.mark || s.handler == HandlerMemcache && mark >= w.mark)
		if !same {
			w.first = now
		}
		if !ok {
			w.id = strings.Clone(id)
		}
		w.mark = mark
		first = w.first
		return w, locked
	})
	if !locked || now-first < int64(s.staleAfter) {
		return
	}
	if f, _ := s.inflight.get(h); f.n > 0 && f.since <= first {
		return // a request here began before the lock was seen: it may hold it
	}
	released := 0
	for i, g := range got {
		if l := g.v[1]; g.err == nil && l != nil && s.lockHeld(l.Value) {
			if ok, _ := s.deleteCAS(context.Background(), s.nodes[i], lock, l.CAS); ok {
				released++
			}
		}
	}
	s.staleWatch.update(h, staleWatchMax, func(heldLock, bool) (heldLock, bool) { return heldLock{}, false })
	s.staleLocks.Add(1)
	if s.lockReleased != nil {
		s.lockReleased(LockStale)
	}
	s.log.Warn("stale session lock released: held unchanged with no request of it in flight here",
		"session", ShortID(id), "held_for", time.Duration(now-first), "nodes", released)
}

// sweepStale looks up, every staleSweep, the sessions whose lock has been
// followed for StaleLockAfter, so that noteLock can release a stale one even
// if no request of the session comes to look (see the top of this file). The
// lookups go through flights, as reconcile's do. It returns when ctx ends.
func (s *Store) sweepStale(ctx context.Context) {
	t := time.NewTicker(max(s.staleAfter/4, minStaleSweep))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		due := s.now().UnixNano() - int64(s.staleAfter)
		for _, e := range s.staleWatch.snapshot() {
			id := e.v.id
			if e.v.first > due || id == "" {
				continue
			}
			if ctx.Err() != nil {
				return
			}
			s.flights.do(ctx, id, func() Result {
				res, _, _ := s.lookupOnce(ctx, id, 0, false)
				return res
			})
		}
	}
}

// minStaleSweep bounds how often sweepStale looks.
const minStaleSweep = 100 * time.Millisecond
