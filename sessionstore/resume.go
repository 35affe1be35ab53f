package sessionstore

import (
	"bufio"
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"time"
)

// This file releases the locks a hung node takes for nobody when it resumes.
//
// While a node hangs (SIGSTOP, a stalled host), PHP's requests that reach it
// wait for their own timeout, then fail over to the next node and finish
// there. pecl memcache leaves the lock commands it sent on the abandoned
// connections (`incr <id>.lock`, `add <id>.lock`) queued in the hung node's
// socket buffers; the node runs them the moment it resumes, often after the
// request that sent them has written its session and ended: a lock nobody
// holds, which the session's next request waits behind for the lock's TTL
// (memcache.lock_timeout, 15 s).
//
// So when a node comes back without a restart (a restart drops whatever was
// queued), the sessions that had a request here around the outage — checked
// from resumeLag before it was noticed, or in flight now — are candidates.
// From resumeSettle after the return (the replays land within milliseconds
// of the resume) until resumeWindow, a candidate's lock and copy on the
// returned node are read; the copy is replaced by the one the other nodes
// agree on when that one is provably newer (see freshen), and then the
// lock, if held, is removed by compare-and-delete of the CAS just read
// (either failing leaves the candidate for another try), once no request of
// the session is at PHP through this instance:
//   - in the background, at once, for candidates with no request in flight;
//   - when a candidate's request ends and it was the session's last in
//     flight here (End, Release: before a waiting request is handed the slot);
//   - in Check, before a candidate's request goes to PHP: it waits (at most
//     resumeWait) for the session's other requests here to end first. This
//     one is done for every candidate, even one settled in the background or
//     at an End: a command queued on the node may have run after that, and
//     the copy PHP reads next is the one to be sure of. Only then is the
//     session no longer a candidate.
//
// With two instances, a session's requests around the outage may have gone
// through the other one, which alone follows them, and its next request
// through this one. So every instance records each return (noteReturn: its
// own watcher sees the node come back), and for resumeWindow after it every
// session's first request here is settled the same way in Check, candidate
// or not (adopt); the settle is recorded per session (markSettled), so that
// its later requests cost nothing until another node returns. Without a
// return in the window Check reads one atomic and no node.
//
// The guard is the one Orphaned uses: no request of the session in flight
// here between the read and the delete (the admission count must not move),
// and CAS pins the item read, so a lock a request takes after the read is
// never removed (its incr or add changes or recreates the item). What it
// cannot see is a request of the session through another instance that holds
// the lock on that node at that moment (see README, "What is and is not
// protected").

// Bounds of the release after a resume.
const (
	// resumeSettle is how long after a node's return its locks are first
	// read: the queued commands run as soon as it resumes, but the watcher
	// may see the return a little before the node has worked through them.
	resumeSettle = 50 * time.Millisecond
	// resumeLag is how far before an outage was noticed a check makes its
	// session a candidate: a hang is noticed within a lookup's Timeout under
	// traffic, and within twice statsInterval without.
	resumeLag = 2*statsInterval + time.Second
	// resumeWindow is how long a candidate waits for its release: longer than
	// pecl memcache's default lock_timeout (15 s), after which the lock has
	// expired by itself.
	resumeWindow = 20 * time.Second
	// resumeWait bounds how long a candidate's request waits in Check for the
	// session's other requests here to end.
	resumeWait = 500 * time.Millisecond
	// resumePoll is how often that wait looks again.
	resumePoll = 2 * time.Millisecond
	// resumeMax bounds the candidates kept (per shard, like the in-flight table).
	resumeMax = recentCap / inflightShards
)

// resumeSweep is one candidate session: its id, the returned nodes to read
// its lock on (bit i = s.nodes[i]), from when until when, and, per returned
// node (indexed like s.nodes; nil until one is known), the CAS of the copy
// that node held while it also held a replayed lock (see freshen), 0 if
// none.
type resumeSweep struct {
	id          string
	nodes       uint64
	from, until int64 // unix ns
	skipped     []uint64
	// adopted: of nodes, those it is a candidate for only by adopt (this
	// instance saw none of its requests around that node's outage): a lock
	// there is taken for a replay only below the node's mark (resumeMark).
	adopted uint64
}

// noteResumed makes the sessions that had a request here around n's outage
// (begun at down) candidates, and wakes the background release. The caller
// has recorded the return (noteReturn).
func (s *Store) noteResumed(n *node, down time.Time) {
	idx := s.index(n)
	if idx < 0 {
		return
	}
	now := s.now()
	from, until := now.Add(resumeSettle).UnixNano(), now.Add(resumeWindow).UnixNano()
	since := down.Add(-resumeLag - s.timeout).UnixNano()
	ids := s.recent.distinct(since)
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		seen[id] = true
	}
	for _, id := range s.recent.distinct(0) {
		if f, _ := s.inflight.get(s.cache.hash(id)); f.n > 0 && !seen[id] {
			ids = append(ids, id) // a long request, or one waiting at PHP
		}
	}
	for _, id := range ids {
		h := s.cache.hash(id)
		var nodes uint64
		s.resumes.update(h, resumeMax, func(r resumeSweep, _ bool) (resumeSweep, bool) {
			if r.id != id {
				r = resumeSweep{} // new, or a hash collision: the latest wins
			}
			r.id, r.nodes, r.from, r.until = id, r.nodes|1<<idx, from, until
			r.adopted &^= 1 << idx
			nodes = r.nodes
			return r, true
		})
		// A request at PHP now may be waiting behind a lock the node
		// replays (replaywait.go); it is settled only at its End.
		s.followWait(h, id, nodes, true)
	}
	if len(ids) == 0 {
		return
	}
	s.extendResume(until)
	s.log.Info("memcached node back without a restart: releasing the locks it may have taken for requests that had failed over",
		"node", n.addr, "sessions", len(ids))
	select {
	case s.resumed <- struct{}{}:
	default: // a release is pending already
	}
}

// noteReturn records that n came back without a restart (or stalled), for
// every session's next request here (adopt). Cheap: the watcher calls it
// before it wakes the requests held for n, so that none of them gets past
// Check without seeing the return.
func (s *Store) noteReturn(n *node) {
	idx := s.index(n)
	if idx < 0 {
		return
	}
	now := s.now()
	s.returns[idx].Store(now.UnixNano())
	s.extendResume(now.Add(resumeWindow).UnixNano())
	select {
	case s.resumed <- struct{}{}: // the background takes n's mark
	default:
	}
}

// forgetReturn drops n's return and mark: it restarted.
func (s *Store) forgetReturn(n *node) {
	if i := s.index(n); i >= 0 {
		s.returns[i].Store(0)
		s.marks[i].Store(nil)
	}
}

// resumeMark is a node's CAS watermark after a return: the CAS of a key
// written there resumeSettle after the return noted at at (noteReturn's
// stamp). memcached gives every write, incr included, the next value of one
// counter as its CAS, so a lock with a lower CAS was last taken before the
// mark — by the commands the node ran as it resumed, or by a request that
// held it across the outage — and one with a higher CAS by a request since,
// which is alive (or just ended: it released it by its write).
type resumeMark struct {
	at  int64 // unix ns
	cas uint64
}

// markKey is the key a mark is written to (prefixed like the kill epoch).
const markKey = "sg.resume-mark"

// mark returns node i's mark for its latest return, taking it if it is due
// and missing (the background takes it on time: see releaseResumed); nil if
// the node never returned, the mark is not due yet, or the node did not
// answer.
func (s *Store) mark(i int) *resumeMark {
	at := s.returns[i].Load()
	old := s.marks[i].Load()
	if old != nil && old.at >= at {
		return old
	}
	if at == 0 || s.now().UnixNano() < at+int64(resumeSettle) {
		return nil
	}
	it, err := s.metaGet(context.Background(), s.nodes[i], "ms "+s.prefix+markKey+" 1 T60 c\r\n1\r\n")
	if err != nil || !it.Found || it.CAS == 0 {
		return nil
	}
	m := &resumeMark{at: at, cas: it.CAS}
	if !s.marks[i].CompareAndSwap(old, m) {
		// Another caller took this return's mark first, and requests may
		// have been let through to PHP under it since: replaced by this
		// later one, their writes would read as made before it.
		if cur := s.marks[i].Load(); cur != nil && cur.at >= at {
			return cur
		}
	}
	return m
}

// replaySuspects returns the nodes (bit i = s.nodes[i]) whose copy of the
// session in got may be a write replayed as the node resumed (see source):
// a node that came back within resumeWindow, whose copy was last written
// before its mark (resumeMark; all of them while it has none). PHP writes
// nothing to a hung node that runs before it resumes, so such a copy is
// older than the hang or a replay. None while a live request may hold the
// session's lock — held on a node that did not return, or taken on a
// returned one since its mark — as it may be part-way through a write made
// since the return (both handlers write the node PHP reads first): its copy
// there is the newest, however early. A lock the node took before its mark
// is a replayed one (see releaseReplayed). Cost when no node returned within
// the window: one atomic load; else at most one mark write per node and
// return (mark).
func (s *Store) replaySuspects(got []outcome[[2]*metaItem]) uint64 {
	if !s.resumePending() {
		return 0
	}
	now := s.now().UnixNano()
	var out uint64
	for i, o := range got {
		if o.err != nil {
			continue
		}
		var m *resumeMark
		returned := false
		if i < len(s.returns) {
			at := s.returns[i].Load()
			if returned = at != 0 && now-at <= int64(resumeWindow); returned {
				m = s.mark(i)
			}
		}
		if l := o.v[1]; l != nil && s.lockHeld(l.Value) && (!returned || m != nil && l.CAS > m.cas) {
			return 0 // a live request's lock
		}
		if returned && o.v[0] != nil && (m == nil || o.v[0].CAS < m.cas) {
			out |= 1 << i
		}
	}
	return out
}

// extendResume makes resumePending true until at least until.
func (s *Store) extendResume(until int64) {
	for {
		u := s.resumeUntil.Load()
		if u >= until || s.resumeUntil.CompareAndSwap(u, until) {
			return
		}
	}
}

// index returns n's index in s.nodes, -1 if it is not followed after a
// return (more than 64 nodes: see resumeSweep.nodes).
func (s *Store) index(n *node) int {
	for i, m := range s.nodes {
		if m == n && i < len(s.returns) {
			return i
		}
	}
	return -1
}

// settledMark is when a session was last settled here after a return
// (adopt): the return's time, and the id, for hash collisions.
type settledMark struct {
	id string
	at int64 // unix ns
}

// settledMax bounds the settled marks kept per shard; a shard that fills is
// emptied, and its sessions are settled once more (a read of every node).
const settledMax = cacheEntries / inflightShards

// adopt makes session id a candidate for the nodes that came back within
// resumeWindow since it was last settled here, whether or not this instance
// saw it around the outage: with two instances, its requests may have gone
// through the other one then (which follows only those), and this one would
// otherwise let its next request read the returned node's older copy, or
// wait behind a lock the node took for nobody. It returns the latest return
// (for markSettled); cost: no round trip, a few atomic loads.
func (s *Store) adopt(h uint64, id string) int64 {
	now := s.now().UnixNano()
	m, _ := s.settled.get(h)
	var since int64
	if m.id == id {
		since = m.at
	}
	var mask uint64
	var latest, newest int64
	for i := range s.returns {
		at := s.returns[i].Load()
		latest = max(latest, at)
		if at > since && now-at <= int64(resumeWindow) {
			mask |= 1 << i
			newest = max(newest, at)
		}
	}
	if mask == 0 {
		return latest
	}
	s.resumes.update(h, resumeMax, func(r resumeSweep, ok bool) (resumeSweep, bool) {
		switch {
		case ok && r.id != id:
			return r, true // a colliding id's: leave it
		case !ok:
			r = resumeSweep{id: strings.Clone(id)} // id may be a view into a request's header
		}
		r.adopted |= mask &^ r.nodes
		r.nodes |= mask
		r.from = max(r.from, newest+int64(resumeSettle))
		r.until = max(r.until, newest+int64(resumeWindow))
		return r, true
	})
	return latest
}

// markSettled records that session id was settled here after the returns up
// to at.
func (s *Store) markSettled(h uint64, id string, at int64) {
	s.settled.update(h, settledMax, func(m settledMark, ok bool) (settledMark, bool) {
		if !ok || m.id != id {
			m.id = strings.Clone(id)
		}
		m.at = max(m.at, at)
		return m, true
	})
}

// releaseResumed runs the background release: resumeSettle after each
// return, every candidate with no request in flight here. It returns when ctx
// ends.
func (s *Store) releaseResumed(ctx context.Context) {
	t := time.NewTimer(0)
	<-t.C
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.resumed:
		}
		t.Reset(resumeSettle)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i := range s.marks {
			s.mark(i)
		}
		all := s.resumes.snapshot()
		var wg sync.WaitGroup
		sem := make(chan struct{}, reconcileWorkers)
		for _, c := range all {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				s.releaseReplayed(c.h, c.v.id, 0, false)
			})
		}
		wg.Wait()
	}
}

// resumePending reports whether some candidates may still be waiting for
// their release: cheap, for the request path.
func (s *Store) resumePending() bool {
	u := s.resumeUntil.Load()
	return u != 0 && s.now().UnixNano() <= u
}

// Unsettled reports whether session id is still waiting for the release of
// a lock a returned node may hold for nobody: its Check could not settle it
// (the session's other requests here did not end within resumeWait, or the
// node did not answer the release's reads), so its request went to PHP with
// the lock possibly still there. Cheap while no node returned lately.
func (s *Store) Unsettled(id string) bool {
	if !s.resumePending() {
		return false
	}
	r, ok := s.resumes.get(s.cache.hash(id))
	return ok && r.id == id && s.now().UnixNano() <= r.until
}

// awaitResumed is Check's part: a candidate's request waits until the
// session's other requests here have ended (at most resumeWait, and ctx;
// mine of those in flight are the caller's own, see Recheck),
// and its lock and copy on the returned nodes are settled, before it goes to
// PHP; the session is then no longer a candidate.
func (s *Store) awaitResumed(ctx context.Context, id string, mine int32) {
	h := s.cache.hash(id)
	at := s.adopt(h, id)
	r, ok := s.resumes.get(h)
	if !ok || r.id != id {
		return
	}
	t := time.NewTimer(resumeWait)
	defer t.Stop()
	tick := time.NewTicker(resumePoll)
	defer tick.Stop()
	for !s.releaseReplayed(h, id, mine, true) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Its lock is left to the session's other requests' ends — but
			// they may end before this one, which then waits at PHP behind
			// the lock; that shows, as for a late replay.
			s.followWait(h, id, r.nodes, false)
			return
		case <-tick.C:
		}
	}
	s.markSettled(h, id, at)
	s.followWait(h, id, r.nodes, false) // a replay may still land (replaywait.go)
}

// endResumed is End's and Release's part: a candidate's request that was its
// session's last in flight here releases the lock as it ends.
func (s *Store) endResumed(id string) {
	if s.resumePending() {
		s.releaseReplayed(s.cache.hash(id), id, 1, false)
	}
}

// releaseReplayed reads candidate id's lock and data on every node, freshens
// its copies on its returned nodes and then removes its lock there by
// compare-and-delete if held, provided no more than mine requests of the
// session are in flight here (the caller's own, ended one) and none began
// since the read. With last (Check's call, just before the session's
// request goes to PHP) the session is no longer a candidate afterwards,
// unless a returned node could not be settled. It reports whether the
// candidate is settled (released, found free, or no longer a candidate);
// false means try again later: also when a copy's store or a lock's delete
// failed (the lock moved since the read, or a timeout).
func (s *Store) releaseReplayed(h uint64, id string, mine int32, last bool) bool {
	r, ok := s.resumes.get(h)
	if !ok || r.id != id {
		return true // not a candidate (or a hash collision: leave it)
	}
	r.skipped = slices.Clone(r.skipped) // written below; the stored one is never written in place
	now := s.now().UnixNano()
	if now > r.until {
		s.resumes.update(h, resumeMax, func(resumeSweep, bool) (resumeSweep, bool) { return resumeSweep{}, false })
		return true
	}
	if now < r.from {
		return false
	}
	// The returned nodes' marks are taken before the session's request
	// goes to PHP (the background takes them on time, unless the machine
	// is loaded): that request's writes there must read as made since the
	// mark, not as replays (see replaySuspects). Seen in
	// TestZeroLossUnderFaults at load 10: a request let through as the
	// node came back wrote it first, the mark came later, and the next
	// lookup replaced that newest copy with the others' older one.
	for i := range s.nodes {
		if r.nodes&(1<<i) != 0 && i < len(s.marks) {
			s.mark(i)
		}
	}
	f, _ := s.inflight.get(h)
	if f.n > mine {
		return false
	}
	begun := f.begun
	var up []int
	for i, n := range s.nodes {
		if n.up.Load() {
			up = append(up, i)
		}
	}
	data, lock := s.Keys(id)
	req := sessionReads(data, lock, 0)
	got := fanout(s, up, func(n *node) (got [2]*metaItem, err error) {
		err = s.metaDoBytes(context.Background(), n, req, func(r *bufio.Reader) error { return readFound(r, got[:]) })
		return got, err
	})
	var idx []int
	for i := range s.nodes {
		if r.nodes&(1<<i) == 0 {
			continue
		}
		if got[i].err != nil {
			return false // not back (or failed again): its next return makes it a candidate again
		}
		idx = append(idx, i)
	}
	if s.beforeUnlock != nil {
		s.beforeUnlock()
	}
	if f, _ := s.inflight.get(h); f.n > mine || f.begun != begun {
		return false // a request began since the read: it may hold the lock, or be writing
	}
	released, stale := 0, 0
	ctx := context.Background() // bounded by Timeout
	for _, i := range idx {
		l := got[i].v[1]
		if l != nil && r.adopted&(1<<i) != 0 {
			// This instance saw none of the session's requests around the
			// outage: a lock taken since the mark is a live request's
			// through another instance (or none, if the node gave no mark).
			if m := s.mark(i); m == nil || l.CAS > m.cas {
				l = nil
			}
		}
		held := l != nil && s.lockHeld(l.Value)
		if c := got[i].v[0]; held && c != nil && s.handler == HandlerMemcache {
			// A request failed over from this node and wrote the others
			// without it (see freshen): this copy is older than theirs.
			if r.skipped == nil {
				r.skipped = make([]uint64, len(s.nodes))
			}
			r.skipped[i] = c.CAS
		}
		// The copy before the lock: a request waiting at PHP takes the lock
		// at its next back-off tick and reads the copy in the same round
		// trip (pecl memcache pipelines incr, add and get), so a copy put
		// right after the release can come too late for it (a lost update
		// in TestZeroLossUnderFaults just after the settle again of
		// replaywait.go fits this).
		if !s.freshen(id, data, i, r, got) {
			// An older copy that could not be put right (a timeout on a
			// loaded machine): the lock stays, so that PHP does not read
			// it, and the candidate with it, for another try. (stale
			// counts the returned nodes not settled, for whatever reason.)
			stale++
			continue
		}
		if !held {
			continue
		}
		if ok, _ := s.deleteCAS(ctx, s.nodes[i], lock, l.CAS); !ok {
			// The lock moved since the read: most often the waiting
			// request's own incr at a back-off tick (the sign it waits),
			// or the delete timed out. Not settled: try again, or the
			// request waits out the lock's TTL (seen in
			// TestZeroLossUnderFaults: a request at PHP past the client's
			// 10 s after the settle again of replaywait.go had brought the
			// copy up to date but not removed the lock).
			stale++
			continue
		}
		released++
		if s.afterUnlock != nil {
			s.afterUnlock(i)
		}
	}
	s.resumes.update(h, resumeMax, func(cur resumeSweep, ok bool) (resumeSweep, bool) {
		if !ok || cur.id != id {
			return cur, ok // gone meanwhile, or taken by a colliding id
		}
		if r.skipped != nil {
			// A new slice: the stored one is read outside this lock.
			merged := make([]uint64, len(s.nodes))
			copy(merged, cur.skipped)
			for i, c := range r.skipped {
				if c != 0 {
					merged[i] = c
				}
			}
			cur.skipped = merged
		}
		// Check's settle is the last: a command queued on the node may
		// still run after the others, so until the session's next request
		// goes to PHP the candidate stays (its window bounds it).
		return cur, !last || stale > 0
	})
	if released > 0 {
		s.replayedLocks.Add(1)
		if s.lockReleased != nil {
			s.lockReleased(LockReplayed)
		}
		s.log.Warn("released a session lock a resumed memcached node took for a request that had failed over",
			"session", ShortID(id), "nodes", released)
	}
	if stale > 0 {
		s.log.Debug("a session's lock or older copy on a resumed memcached node could not be settled yet: to try again",
			"session", ShortID(id), "nodes", stale)
		return false
	}
	return true
}

// freshen brings the copy of session id's data on returned node i up to
// date when the nodes that did not hang agree on a copy, i's differs or is
// missing, and theirs is provably newer than i's:
//   - i has none (it is added: a PHP write since wins);
//   - theirs has a clearly longer TTL: written more than a second after i's;
//   - or, with pecl memcache, i held a replayed lock while it held this very
//     copy (same CAS, r.skipped): a request's lock command waited in i, timed
//     out, and the request failed over and wrote the other nodes without i
//     (pecl memcache marks the node failed and skips it), so theirs is the
//     later write, even in the same second; unless i's TTL is clearly longer.
//
// Anything else is left: a copy that differs with about the same TTL may be
// the newer one. Both handlers write the node PHP reads first, and wait for
// it, before the others (pecl memcached sets the primary, then sends the
// replicas their copies when it releases the lock; pecl memcache sets each
// node in probe order), so while a write of the session is part-way — from
// another instance, whose requests this one cannot see, or any request not
// in flight here — the node PHP reads holds the newer copy and the others
// still agree on the older one. Replacing it then (as this did, on a TTL
// tie, before) made PHP's next read one write old. pecl memcached never
// skips a node that hangs: its requests wait for it (a resumed node missed
// no write of theirs), so it needs no more than the first two rules.
//
// It reports false when such a copy was there and its store failed (the
// caller then keeps the lock and tries again).
//
// The caller has checked that no request of the session is in flight here;
// compare-and-swap of the CAS read lets any write since the read win. The
// copy keeps the source's value, flags and remaining TTL less copyAge, as
// repair's do.
func (s *Store) freshen(id, key string, i int, r resumeSweep, got []outcome[[2]*metaItem]) bool {
	if s.sharded {
		return true // one copy per session: nothing to compare with
	}
	src := -1
	for j, o := range got {
		if r.nodes&(1<<j) != 0 || o.err != nil {
			continue
		}
		if o.v[0] == nil || src >= 0 && (!bytes.Equal(o.v[0].Value, got[src].v[0].Value) || o.v[0].Flags != got[src].v[0].Flags) {
			return true // the others disagree, or lack it: not for us to decide
		}
		if src < 0 {
			src = j
		}
	}
	cur := got[i].v[0]
	if src < 0 || cur != nil && bytes.Equal(cur.Value, got[src].v[0].Value) && cur.Flags == got[src].v[0].Flags {
		return true
	}
	sc := got[src].v[0]
	switch {
	case cur == nil, clearlyLonger(sc.TTL, cur.TTL):
	case i < len(r.skipped) && r.skipped[i] == cur.CAS && !clearlyLonger(cur.TTL, sc.TTL):
	default:
		return true // not provably older: it may be the newest copy there is
	}
	var cas uint64 // add for a missing copy; else the CAS read
	if cur != nil {
		cas = cur.CAS
	}
	if err := s.metaStore(s.nodes[i], key, sc.Value, sc.Flags, s.expiration(older(sc.TTL)), cur == nil, cas); err != nil {
		return false
	}
	s.repairs.Add(1)
	if s.repaired != nil {
		s.repaired(1)
	}
	s.log.Info("session copy on a resumed memcached node brought up to date", "session", ShortID(id), "node", s.nodes[i].addr)
	return true
}
