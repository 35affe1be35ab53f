package sessionstore

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// This file releases a replayed lock that lands after the settle (resume.go)
// under a request already at PHP.
//
// A hung node runs the lock commands queued for it as it resumes, usually
// within milliseconds; the settle reads the lock resumeSettle after the
// return, just before the session's request goes to PHP. On a busy node the
// replay can come later: pecl memcache's queued `incr <id>.lock` turns the
// released lock ("0") into a held one after the settle found it free, and the
// request waits in PHP behind it until the lock's TTL runs out
// (memcache.lock_timeout, 15 s). Seen once in TestZeroLossUnderFaults (a
// request 5 ms after the resume waited past the client's 10 s). No release may
// touch the lock while the request is at PHP, as it may be the request's own
// — unless the request shows it is waiting: pecl memcache's waiter repeats
// its `incr` at each back-off tick (5 ms doubling to 1 s), so the counter
// climbs, which the holder never makes it do. So for resumeWindow after a
// return, a session whose request went to PHP after its settle (or after
// its Check gave up waiting for the session's other requests to end, with
// the lock unsettled: resumeWait) is followed
// while that request is its only one admitted here since (the admission count
// moved by exactly one, one in flight): from the second poll that finds it at
// PHP (most requests have ended by then, and cost no read), its lock on the
// returned nodes is read every replayWaitPoll, and when a held lock's
// counter grew between two reads the session is settled again
// (releaseReplayed, with the request here as the one in flight): the copy
// there brought up to date, as the node may have replayed an older write
// too, then the lock removed by compare-and-delete; until both are done the
// session stays followed. pecl memcached's waiter
// re-sends `add`, which moves nothing, and gives up within seconds
// (sess_lock_retries), so only pecl memcache's locks are followed.
//
// What the rule cannot tell: a request of the session through another
// instance that holds the lock on that node, while this one waits for it
// (or holds it while the other instance's request waits): the lock is
// removed and the two run at once (see README, "What is and is not
// protected").

// replayWaitPoll is how often a followed session is looked at.
const replayWaitPoll = 100 * time.Millisecond

// replayWait is a session followed for a replayed lock under its request at
// PHP: the returned nodes to read, the window's end, the admission count
// before that request, whether a poll found it at PHP already, and the lock
// counters the last read found there under it (per node, 0: free or not
// read).
type replayWait struct {
	id     string
	nodes  uint64
	until  int64 // unix ns
	before uint32
	atPHP  bool
	seen   []uint64
}

// followWait starts following session id (hash h), whose next request here
// goes to PHP now or went already (inflight: its admission counted), for a
// replayed lock on nodes. Only pecl memcache's locks show a waiter.
func (s *Store) followWait(h uint64, id string, nodes uint64, inflight bool) {
	if s.handler != HandlerMemcache || nodes == 0 {
		return
	}
	f, _ := s.inflight.get(h)
	before := f.begun
	if inflight {
		if f.n != 1 {
			return // two at PHP here: one waiting for the other is no sign
		}
		before--
	}
	until := s.now().Add(resumeWindow).UnixNano()
	s.waits.update(h, resumeMax, func(replayWait, bool) (replayWait, bool) {
		return replayWait{id: strings.Clone(id), nodes: nodes, until: until, before: before}, true
	})
	select {
	case s.waitWake <- struct{}{}:
	default:
	}
}

// followWaits reads the followed locks every replayWaitPoll while any
// session is followed. It returns when ctx ends.
func (s *Store) followWaits(ctx context.Context) {
	t := time.NewTicker(replayWaitPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.waitWake:
		}
		for s.pollWaits() {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
}

// pollWaits reads each followed session's lock once, dropping those no longer
// followed. It reports whether any remain.
func (s *Store) pollWaits() bool {
	all := s.waits.snapshot()
	for _, e := range all {
		s.pollWait(e.h, e.v)
	}
	return len(all) > 0
}

// pollWait reads w's lock on its nodes, and settles the session again when a
// held one's counter grew since the last read while the same one request was
// in flight.
func (s *Store) pollWait(h uint64, w replayWait) {
	now := s.now().UnixNano()
	f, _ := s.inflight.get(h)
	drop := func() {
		s.waits.update(h, resumeMax, func(cur replayWait, ok bool) (replayWait, bool) {
			return cur, ok && cur.id != w.id // only the record read (a colliding id's stays)
		})
	}
	switch {
	case now > w.until || f.begun-w.before > 1 || f.begun != w.before && f.n == 0:
		drop() // the window closed, another request was admitted, or it ended
		return
	case f.begun == w.before || f.n != 1:
		return // not at PHP yet, or not alone there
	case !w.atPHP:
		s.waits.update(h, resumeMax, func(cur replayWait, ok bool) (replayWait, bool) {
			cur.atPHP = cur.atPHP || ok && cur.id == w.id
			return cur, ok
		})
		return
	}
	_, lock := s.Keys(w.id)
	seen := make([]uint64, len(s.nodes))
	climbed := false
	for i, n := range s.nodes {
		if w.nodes&(1<<i) == 0 || !n.up.Load() {
			continue
		}
		it, err := s.metaGet(context.Background(), n, "mg "+lock+" v\r\n")
		if err != nil || !it.Found || !s.lockHeld(it.Value) {
			continue
		}
		seen[i], _ = strconv.ParseUint(strings.TrimSpace(string(it.Value)), 10, 64)
		climbed = climbed || w.seen != nil && w.seen[i] != 0 && seen[i] > w.seen[i]
	}
	s.waits.update(h, resumeMax, func(cur replayWait, ok bool) (replayWait, bool) {
		if ok && cur.id == w.id {
			cur.seen = seen // a new slice: the stored one is read outside this lock
		}
		return cur, ok
	})
	if !climbed {
		return // no waiter seen
	}
	if g, _ := s.inflight.get(h); g.n != 1 || g.begun != f.begun {
		drop() // no longer the same request alone
		return
	}
	// The request here waits for a lock it does not hold. The node's late
	// replays may have put an older copy back as well (seen in
	// TestZeroLossUnderFaults: with the lock alone removed, PHP read the
	// replayed copy, one write old), so the session is settled again as at
	// the return: its copy there brought up to date, then its lock removed,
	// under the same guards, with the request here counted as the one in
	// flight.
	s.log.Info("a session's request waits at PHP behind a lock a returned memcached node took after its settle: settling it again",
		"session", ShortID(w.id))
	s.resumes.update(h, resumeMax, func(r resumeSweep, ok bool) (resumeSweep, bool) {
		if ok && r.id != w.id {
			return r, true // a colliding id's: leave it
		}
		return resumeSweep{id: w.id, nodes: w.nodes, until: w.until}, true // due now
	})
	if s.releaseReplayed(h, w.id, 1, true) {
		drop()
	} // else a copy or the lock did not settle (a failed store, a moved lock): the next climb tries again
}
