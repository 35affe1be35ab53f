package sessionstore

// This file looks sessions up: Check, the shared per-id lookup (lookup,
// lookupOnce), the background refresh of cached verifications, and what a
// lookup's answers mean (found, vouched, lockHeld, liveNodes, noteStoreDown).
// Holding for a restarting node is node.go's (hold), the decision from the
// answers decide.go's, the verification cache and shared lookups cache.go's.

import (
	"bufio"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Check is the per-request entry point: it validates id, consults the verification
// cache, otherwise looks the session up on every node in parallel (nodes known down
// are skipped without waiting; each node operation is bounded by Timeout), repairs,
// and returns. One exception to not waiting: a session (an existing one, or an
// id no node that answered holds) is held for a node that lost its connection
// less than RestartHold ago (see hold), as it is most likely restarting and
// must be repaired before PHP reads it. Concurrent Checks of one id share one
// lookup; a waiting caller whose ctx ends gets StoreDown (fail open). The
// lookup is bounded by a few Timeouts (each round of reads and writes costs
// at most one, or two when its reads queued behind another lookup's that the
// node answered late: batch.go), plus RestartHold when it held.
func (s *Store) Check(ctx context.Context, id string) Result {
	return s.checkFor(ctx, id, 0)
}

// Recheck is Check for a request of id that is already in flight here
// (between Begin or Enter and its End or Release) and is to go to PHP
// again: that request does not count as another of the session's, which
// would hold back the release of a lock a resumed node took for nobody
// (resume.go) until it ended — after PHP had failed to take that lock.
func (s *Store) Recheck(ctx context.Context, id string) Result {
	return s.checkFor(ctx, id, 1)
}

// checkFor is Check from a caller with mine requests of id in flight here.
func (s *Store) checkFor(ctx context.Context, id string, mine int32) Result {
	res := s.check(ctx, id)
	s.lookups[res.Verdict].Add(1)
	if res.Held > 0 {
		s.held.Add(1)
		if s.heldHook != nil {
			s.heldHook(res.Held)
		}
	}
	if res.Verdict == Verified || res.Verdict == Repaired {
		s.recent.add(id, s.now().UnixNano())
		if s.resumePending() {
			s.awaitResumed(ctx, id, mine)
		}
	}
	return res
}

func (s *Store) check(ctx context.Context, id string) Result {
	if !s.usable(id) {
		return Result{Verdict: Invalid}
	}
	var h uint64
	if s.verifyTTL > 0 {
		h = s.cache.hash(id)
		now := s.now().UnixNano()
		// A node lost since the verification voids it, though its watcher
		// may not have run yet (peekDue): then this Check looks it up.
		if e, ok := s.cachedVerification(ctx, h, now); ok && !(s.peekDue(now) && s.peekNodes()) {
			s.cached.Add(1)
			// In its last quarter, a verification in use is renewed behind (see refresh).
			if now-e.at >= int64(s.verifyTTL-s.verifyTTL/4) && s.cache.claim(h, e.at) {
				select {
				case s.refreshes <- pendingRefresh{id: strings.Clone(id), h: h, at: e.at}:
				default:
				}
			}
			return Result{Verdict: Verified, Cached: true, Empty: e.empty}
		}
	}
	res := s.flights.do(ctx, id, func() Result { return s.lookup(ctx, id, h) })
	if res.unheld {
		// The lookup this Check shared did not hold for a restarting node
		// (see Result.unheld): PHP would read that node, empty, the moment
		// it accepts. Once more, as a lookup that holds.
		res = s.flights.do(ctx, id, func() Result { return s.lookup(ctx, id, h) })
		res.unheld = false
	}
	return res
}

// pendingRefresh is a cached verification to renew: the id (a copy, never a view into
// a request's Cookie header), its cache hash, and the entry's time.
type pendingRefresh struct {
	id string
	h  uint64
	at int64
}

// refresh renews cached verifications in the background until ctx ends. A
// session in use is looked up again in the last quarter of its verifyTTL,
// while its requests are still answered from the cache, so that they do not
// wait for memcached when the verification runs out. This changes no
// guarantee: every request is still served under a verification at most
// verifyTTL old, made in the current epoch. A refresh that cannot verify the
// session again (gone, locked, a node not answering) drops the old
// verification, so the next request looks the session up itself.
//
// Refreshes are gathered for a moment (refreshWindow) and read together,
// one request per node for the whole batch (see refreshBatch): with many
// sessions in use, a refresh each on its own cost a write and a read on
// every node, which made the session layer's CPU per request a quarter
// more than the plain proxy's. One worker gathers at a time (gather), so
// that the batches do not split between the workers.
func (s *Store) refresh(ctx context.Context, gather *sync.Mutex) {
	batch := make([]pendingRefresh, 0, maxRefreshBatch)
	for {
		gather.Lock()
		batch = s.gatherRefreshes(ctx, batch[:0])
		gather.Unlock()
		if ctx.Err() != nil {
			return
		}
		s.refreshBatch(ctx, batch)
	}
}

// maxRefreshBatch is the most refreshes read in one request per node. The
// whole batch is bounded by one Timeout, like a single lookup: 16 ids are
// 48 meta commands, which memcached answers in three rounds of its event
// loop (it serves 20 commands of a connection per event, -R), and about
// as many as the bench's sessions workload queues in one refreshWindow.
const maxRefreshBatch = 16

// refreshWindow is how long refresh gathers after the first pending
// refresh: a small part of the quarter of verifyTTL a refresh has before
// the verification runs out, and at most 20 ms.
func (s *Store) refreshWindow() time.Duration {
	return min(s.verifyTTL/32, 20*time.Millisecond)
}

// gatherRefreshes waits for a pending refresh, then adds those that come
// within refreshWindow, up to maxRefreshBatch of them. It returns early when
// ctx ends.
func (s *Store) gatherRefreshes(ctx context.Context, batch []pendingRefresh) []pendingRefresh {
	select {
	case <-ctx.Done():
		return batch
	case r := <-s.refreshes:
		batch = append(batch, r)
	}
	t := time.NewTimer(s.refreshWindow())
	defer t.Stop()
	for len(batch) < maxRefreshBatch {
		select {
		case <-ctx.Done():
			return batch
		case <-t.C:
			return batch
		case r := <-s.refreshes:
			batch = append(batch, r)
		}
	}
	return batch
}

// refreshBatch looks up every session of batch again, as refresh did one
// at a time: each as one flight (flights.do), sharing a lookup a Check of
// the same id has in flight and keeping out a Kill of it. The ids not in
// flight yet are registered as flights first and read together, one
// request per node (prefetch); each is then decided as its own lookup
// would decide (lookupFrom). The others (in flight elsewhere, or twice in
// the batch) wait for their flight only after this batch's flights are
// finished, so that no flight is held while waiting for another.
func (s *Store) refreshBatch(ctx context.Context, batch []pendingRefresh) {
	calls := make([]*call, len(batch))
	var mine []int
	for i, r := range batch {
		if c, ok := s.flights.tryStart(r.id); ok {
			calls[i] = c
			mine = append(mine, i)
		}
	}
	if len(mine) > 0 {
		pre := s.prefetch(batch, mine)
		for _, i := range mine {
			r := batch[i]
			s.flights.finish(r.id, calls[i], s.lookupFrom(ctx, r.id, r.h, &pre[i]))
		}
	}
	for i, r := range batch {
		if calls[i] == nil {
			s.flights.do(ctx, r.id, func() Result { return s.lookup(ctx, r.id, r.h) })
		}
		s.cache.drop(r.h, r.at)
		s.refreshed.Add(1)
	}
}

// prefetched is the first round of a lookup's reads, made for several ids
// at once (prefetch): what lookupOnce would have read itself, and the
// store's state it would have noted before reading.
type prefetched struct {
	epoch  uint64
	allUp  bool
	at     time.Time
	got    []outcome[[2]*metaItem]
	killed bool
}

// prefetch reads the sessions batch[i], i in mine, on every live node: one
// request per node with each session's lookup reads (lookupReads), answers
// parsed in order. The result is indexed like batch. A node that fails
// fails for every id, as it would have for each one's own lookup.
func (s *Store) prefetch(batch []pendingRefresh, mine []int) []prefetched {
	p := prefetched{epoch: s.epoch.Load(), allUp: true} // before any I/O, as in lookupOnce
	for _, n := range s.nodes {
		p.allUp = p.allUp && n.up.Load()
	}
	p.at = s.now()
	var req []byte
	for _, i := range mine {
		req = s.lookupReads(req, batch[i].id)
	}
	type answer struct {
		v      [2]*metaItem
		killed bool
	}
	got := fanout(s, s.liveNodes(), func(n *node) ([]answer, error) {
		out := make([]answer, len(mine))
		err := s.metaDoBytes(context.Background(), n, req, func(r *bufio.Reader) error {
			for j := range out {
				if err := readLookup(r, &out[j].v, &out[j].killed); err != nil {
					return err
				}
			}
			return nil
		})
		return out, err
	})
	pre := make([]prefetched, len(batch))
	for j, i := range mine {
		pre[i] = p
		pre[i].got = make([]outcome[[2]*metaItem], len(s.nodes))
		for k, o := range got {
			pre[i].got[k].err = o.err
			if o.v == nil {
				continue // skipped
			}
			pre[i].killed = pre[i].killed || o.v[j].killed
			if o.err == nil {
				pre[i].got[k].v = o.v[j].v
			}
		}
	}
	return pre
}

// lookupReads appends to req the reads of one lookup of id: the session's
// data and lock (sessionReads), and its tombstone's presence (see kill.go).
// readLookup parses their answers.
func (s *Store) lookupReads(req []byte, id string) []byte {
	data, lock := s.Keys(id)
	tomb := s.tombKey(id)
	if req == nil {
		req = sessionReads(data, lock, len(tomb)+5)
	} else {
		req = appendSessionReads(req, data, lock)
	}
	return append(append(append(req, "mg "...), tomb...), "\r\n"...)
}

// readLookup reads the answers to lookupReads into got, and sets killed
// when the tombstone is there.
func readLookup(r *bufio.Reader, got *[2]*metaItem, killed *bool) error {
	if err := readFound(r, got[:]); err != nil {
		return err
	}
	t, err := readMeta(r)
	if t.Found {
		*killed = true
	}
	return err
}

// lookup asks every live node for the data and lock key in one round trip each,
// decides, repairs, and caches the verification when that is safe. A session
// that could not be checked on a restarting node is held for that node (see
// hold), and looked up again if it came back.
func (s *Store) lookup(ctx context.Context, id string, h uint64) Result {
	return s.lookupFrom(ctx, id, h, nil)
}

// lookupFrom is lookup whose first round of reads, if pre is not nil, was
// made already (see prefetch).
func (s *Store) lookupFrom(ctx context.Context, id string, h uint64, pre *prefetched) Result {
	res, held, again := s.lookupRound(ctx, id, h, true, true, pre)
	if again {
		// Held, and looked up again: now only a repair a node does not
		// take holds (it is the round that repairs a node a request was
		// held for), once more at most.
		var w time.Duration
		res, w, again = s.lookupRound(ctx, id, h, false, true, nil)
		held += w
		if again {
			res, _, _ = s.lookupRound(ctx, id, h, false, false, nil)
		}
	}
	res.Held = held
	return res
}

// lookupOnce is one lookup; h is the id's cache hash, 0 to leave the cache
// alone. With await, a session that could not be checked on a restarting
// node waits for that node instead of being decided without it: held says how
// long, and again that the lookup must be repeated. Without await, such a
// result is marked unheld instead.
func (s *Store) lookupOnce(ctx context.Context, id string, h uint64, await bool) (res Result, held time.Duration, again bool) {
	return s.lookupRound(ctx, id, h, await, await, nil)
}

// lookupRound is lookupOnce whose first round of reads, if pre is not nil,
// was made already (see prefetch). With awaitRepair, a repair that a node
// lacking the copy does not take waits for that node, and again asks for
// another round, await or not.
func (s *Store) lookupRound(ctx context.Context, id string, h uint64, await, awaitRepair bool, pre *prefetched) (res Result, held time.Duration, again bool) {
	epoch := s.epoch.Load() // before any I/O: a node change during the lookup voids it
	// A request of the session at PHP here may write after these reads,
	// skipping a node it failed on, where the repair then puts the copy
	// read now (reconcile): a Check that arrives after it ended must not
	// take this lookup's word (see Result.unheld).
	busy := false
	if !await {
		f, _ := s.inflight.get(s.cache.hash(id))
		busy = f.n > 0
	}
	allUp := true // a node flagged down may restart again unnoticed: don't cache then
	for _, n := range s.nodes {
		allUp = allUp && n.up.Load()
	}
	at := s.now()
	if pre != nil {
		epoch, allUp, at = pre.epoch, pre.allUp, pre.at
	}
	data, lock := s.Keys(id)
	// One write per node: the session's reads, and the tombstone's presence.
	req := s.lookupReads(nil, id)
	var killed atomic.Bool
	get := func(n *node) (got [2]*metaItem, err error) {
		// Bounded by Timeout, not ctx: a client going away must not mark
		// nodes down.
		err = s.metaPiped(n, req, func(r *bufio.Reader) error {
			var k bool
			err := readLookup(r, &got, &k)
			if k {
				killed.Store(true)
			}
			return err
		})
		return got, err
	}
	var got []outcome[[2]*metaItem]
	if pre != nil {
		got = pre.got
		if pre.killed {
			killed.Store(true)
		}
	} else {
		got = fanout(s, s.liveNodes(), get)
	}
	vouched := s.vouched(got)
	if !vouched && !s.sharded && !found(got) && !killed.Load() {
		// Nothing found, but only on nodes that restarted or returned
		// recently, or on none: ask once more the nodes skipped as hung and
		// those that timed out just now (often just slow for a moment on a
		// loaded machine), at the cost of one Timeout. Failing open instead
		// sends the request to PHP, which reads a restarted node empty.
		// Seen in TestBackToBackRestartsNoLoss at load average 20: every
		// node timed out once (100 ms), the session was forwarded unchecked
		// and PHP read the restarted node, not yet repaired, as an empty
		// session.
		var again []int
		for i, g := range got {
			if errors.Is(g.err, errSkipped) || isTimeout(g.err) {
				again = append(again, i)
			}
		}
		for i, o := range fanout(s, again, get) {
			if !errors.Is(o.err, errSkipped) {
				got[i] = o
			}
		}
		vouched = s.vouched(got)
	}
	if killed.Load() {
		return s.killedLookup(id, data, got), 0, false
	}
	if s.afterGet != nil {
		s.afterGet()
	}
	obs := make([]nodeObs, len(s.nodes))
	answered := false
	for i, g := range got {
		if g.err != nil {
			continue
		}
		answered = true
		d, l := g.v[0], g.v[1]
		obs[i] = nodeObs{Answered: true, Data: d != nil, Empty: d != nil && len(d.Value) == 0,
			LockKey: l != nil, Locked: l != nil && s.lockHeld(l.Value)}
	}
	s.noteStoreDown(!answered)

	d := decide(obs, s.sharded, s.strict)
	s.noteLock(id, lock, d.Locked, got)
	unheld := false
	if !s.sharded && d.Verdict != StoreDown {
		// The nodes that did not answer (skipped ones too: a restarting node
		// may have timed out once), and, when a node went or came during the
		// lookup, those down now: a node that answered and then went restarting
		// is empty when it returns. Requests that joined this lookup after the
		// node went must not reach PHP before it is repaired.
		//
		// A session found on no node that answered is held as well: it may be
		// one PHP made up in a request that met the node going down, written
		// only there (or nowhere), and while a node is missing pecl memcached
		// cannot even start the fresh session PHP makes instead (its lock key
		// may hash to that node): the page would render logged out. Such ids
		// (any well-formed id will do) get at most half the hold slots, so
		// that they can never keep existing sessions from being held.
		//
		// And a node that went and came back since the reads began: what it
		// answered is void (it restarted empty, or missed writes), though it
		// is up now. hold finds it up and has the lookup made again (not
		// holding, the result is unheld). A batch of refreshes reads its
		// sessions together and decides them one after the other: while one
		// held for a restart, the next waited with reads from before it
		// (TestRefreshReadBeforeARestartLooksAgain; it fits a loss in
		// TestFaultsUnderLoad, PHP reading the node empty just after it
		// was back).
		changed := s.epoch.Load() != epoch
		var failed []int
		for i, g := range got {
			if g.err != nil || changed && (!s.nodes[i].up.Load() || s.backSince(s.nodes[i], at)) {
				failed = append(failed, i)
			}
		}
		slots := maxHeld
		if d.Verdict == Unknown || d.Verdict == Adopted {
			slots = maxHeld / 2
		}
		waitLock := d.Locked && s.missedReturn(obs)
		if !await {
			// Checks that share this lookup hold themselves (see Result.unheld),
			// and ask again a node that refused it: one not held for (flapping)
			// may accept by now, empty, and PHP would read it so. Seen in
			// TestBackToBackRestartsNoLoss: a request 30 µs after the node's
			// return shared a re-check that had found it refusing.
			unheld = busy || waitLock || slices.ContainsFunc(failed, func(i int) bool {
				_, _, ok := s.restarting(s.nodes[i])
				err := got[i].err
				return ok || s.nodes[i].up.Load() || err != nil && !errors.Is(err, errSkipped) && !isTimeout(err)
			})
		} else if held, again = s.hold(ctx, failed, slots); again {
			return Result{}, held, true
		}
		if await && waitLock {
			// A copy the session's lock holder may be rewriting is not
			// repaired (decide), but the node that lacks it restarted or
			// returned: PHP's strict mode asks that node whether the id
			// exists before it waits for the lock (pecl memcached reads its
			// primary), and gives a new id when it does not. Wait for the
			// lock's release, then look again and repair. Seen in
			// TestZeroLossUnderFaults: the lock was left by a request that
			// met the restart and had answered already.
			if w := s.awaitUnlock(ctx, lock, got, slots); w > 0 {
				return Result{}, held + w, true
			}
		}
	}
	if (d.Verdict == Unknown || d.Verdict == Adopted) && !vouched && slices.ContainsFunc(got, unanswered) {
		// No node that can tell whether the session exists has answered:
		// fail open rather than strip a session PHP may still find.
		d = decision{Verdict: StoreDown}
	}
	res = Result{Verdict: d.Verdict, Locked: d.Locked, Empty: d.Empty, unheld: unheld}
	if len(d.Repair) > 0 || !s.sharded && diverged(got, d.Sources) {
		stored, complete := s.repair(id, data, d, got, s.replaySuspects(got))
		if awaitRepair && !complete && len(d.Repair) > 0 {
			// A node that lacks the copy did not take it: a write or dial
			// timed out (a loaded machine), and the node is marked down
			// now. PHP reads it empty if it is back by then (pecl memcache
			// reads the first node of its probe order). Hold for it as
			// for one that did not answer the lookup, and look again.
			// Seen in TestZeroLossUnderFaults at load 15-17: a restarted
			// node's repair failed on a dial, write or read timeout, in the
			// first round and in the one after a hold for the restart, and
			// PHP read the node empty 80-300 ms later.
			if w, back := s.hold(ctx, d.Repair, maxHeld); back {
				return Result{}, held + w, true
			}
		}
		// Not holding, the lookup leaves that node to the Checks that
		// shared it: each looks again itself. Seen in TestZeroLossUnderFaults
		// at load 17: a request shared the re-check after mc2's restart,
		// whose add there met a dial timeout, and PHP read mc2 empty.
		res.unheld = res.unheld || !awaitRepair && !complete && len(d.Repair) > 0
		res.Copies = stored
		res.Verdict = Repaired
		if stored == 0 {
			res.Verdict = Verified // every target refused (PHP wrote first) or failed
		}
		d.Cacheable = d.Cacheable && complete
	}
	if d.Cacheable && allUp && s.verifyTTL > 0 && h != 0 {
		s.cache.put(h, cacheEntry{epoch: epoch, at: at.UnixNano(), empty: d.Empty})
	}
	return res, held, false
}

// missedReturn reports whether a node that answered without the session's
// data restarted or came back less than Lifetime ago (see node.upSince),
// while another node holds the data: the copy it lacks was most likely
// lost with the outage.
func (s *Store) missedReturn(obs []nodeObs) bool {
	now := s.now()
	for i, o := range obs {
		if !o.Answered || o.Data {
			continue
		}
		if s.backWithin(s.nodes[i], now) {
			return slices.ContainsFunc(obs, func(o nodeObs) bool { return o.Data })
		}
	}
	return false
}

// lockPoll is how often awaitUnlock reads the lock again.
const lockPoll = 20 * time.Millisecond

// awaitUnlock waits until no node that reported the session's lock held in
// got holds it any more, at most RestartHold and until ctx ends, taking a
// hold slot as hold does (none free: it does not wait). It reports how
// long it waited.
func (s *Store) awaitUnlock(ctx context.Context, lock string, got []outcome[[2]*metaItem], slots int) time.Duration {
	var idx []int
	for i, g := range got {
		if g.err == nil && g.v[1] != nil && s.lockHeld(g.v[1].Value) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 || !s.takeHold(slots) {
		return 0
	}
	defer func() { <-s.holds }()
	start := time.Now()
	req := "mg " + lock + " v\r\n"
	t := time.NewTimer(lockPoll)
	defer t.Stop()
	for time.Since(start) < s.restartHold {
		select {
		case <-ctx.Done():
			return time.Since(start)
		case <-t.C:
		}
		held := false
		for _, o := range fanout(s, idx, func(n *node) (metaItem, error) {
			return s.metaGet(context.Background(), n, req)
		}) {
			held = held || o.err == nil && o.v.Found && s.lockHeld(o.v.Value)
		}
		if !held {
			break
		}
		t.Reset(lockPoll)
	}
	return time.Since(start)
}

// found reports whether any node answered with the data or the lock key.
func found(got []outcome[[2]*metaItem]) bool {
	return slices.ContainsFunc(got, func(o outcome[[2]*metaItem]) bool {
		return o.err == nil && (o.v[0] != nil || o.v[1] != nil)
	})
}

// upAt is n.upSince, read under n's lock.
func (n *node) upAt() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.upSince
}

// unanswered reports whether a node did not answer a lookup.
func unanswered(o outcome[[2]*metaItem]) bool { return o.err != nil }

// backSince reports whether n restarted or came back up after at.
func (s *Store) backSince(n *node, at time.Time) bool { return n.upAt().After(at) }

// backWithin reports whether n restarted or came back less than Lifetime
// before now (see node.upSince): it may lack sessions written before and
// unused since.
func (s *Store) backWithin(n *node, now time.Time) bool {
	since := n.upAt()
	return !since.IsZero() && now.Sub(since) < s.lifetime
}

// vouched reports whether a node that can vouch for a session's absence
// answered: one up, without a restart or return, for at least Lifetime
// (see node.upSince).
func (s *Store) vouched(got []outcome[[2]*metaItem]) bool {
	now := s.now()
	for i, o := range got {
		n := s.nodes[i]
		if o.err == nil && n.up.Load() && !s.backWithin(n, now) {
			return true
		}
	}
	return false
}

// lockHeld interprets an existing lock key: pecl memcache keeps it after a request
// and resets it to "0" (free; held is an integer >= 1), php-memcached deletes it at
// close (so existing is held).
func (s *Store) lockHeld(value []byte) bool {
	if s.handler == HandlerMemcached {
		return true
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(value)), 10, 64)
	return err == nil && v >= 1
}

// noteStoreDown tracks whether the whole pool is unreachable, logging each change once.
func (s *Store) noteStoreDown(down bool) {
	if s.storeDown.Load() == down || !s.storeDown.CompareAndSwap(!down, down) {
		return
	}
	if down {
		s.storeDownEvents.Add(1)
		s.log.Warn("session store down: no memcached node answered; forwarding sessions unchecked")
	} else {
		s.log.Info("session store reachable again")
	}
}

// liveNodes lists the nodes worth asking: those not known down, and those
// down only in the sense that they refused the last connection at once
// (asking them again costs no waiting; see node.refused).
func (s *Store) liveNodes() []int {
	live := make([]int, 0, len(s.nodes))
	for i, n := range s.nodes {
		if n.up.Load() || n.refused.Load() {
			live = append(live, i)
		}
	}
	return live
}
