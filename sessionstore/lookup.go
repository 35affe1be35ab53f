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
// lookup; a waiting caller whose ctx ends gets StoreDown (fail open). The lookup is bounded by a few Timeouts (each round of
// reads and writes costs at most one), plus RestartHold when it held.
func (s *Store) Check(ctx context.Context, id string) Result {
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
			s.awaitResumed(ctx, id)
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
		if e, ok := s.cache.get(h, s.epoch.Load(), now, int64(s.verifyTTL)); ok {
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
func (s *Store) refresh(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-s.refreshes:
			// Through flights: shares a lookup with concurrent Checks, and waits
			// for a Kill of the same id.
			s.flights.do(ctx, r.id, func() Result { return s.lookup(ctx, r.id, r.h) })
			s.cache.drop(r.h, r.at)
			s.refreshed.Add(1)
		}
	}
}

// lookup asks every live node for the data and lock key in one round trip each,
// decides, repairs, and caches the verification when that is safe. A session
// that could not be checked on a restarting node is held for that node (see
// hold), and looked up again if it came back.
func (s *Store) lookup(ctx context.Context, id string, h uint64) Result {
	res, held, again := s.lookupOnce(ctx, id, h, true)
	if again {
		res, _, _ = s.lookupOnce(ctx, id, h, false)
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
	epoch := s.epoch.Load() // before any I/O: a node change during the lookup voids it
	allUp := true           // a node flagged down may restart again unnoticed: don't cache then
	for _, n := range s.nodes {
		allUp = allUp && n.up.Load()
	}
	at := s.now()
	data, lock := s.Keys(id)
	tomb := s.tombKey(id)
	// One write per node: the session's reads, and the tombstone's presence
	// (see kill.go).
	req := append(append(append(sessionReads(data, lock, len(tomb)+5), "mg "...), tomb...), "\r\n"...)
	var killed atomic.Bool
	get := func(n *node) (got [2]*metaItem, err error) {
		// Bounded by Timeout, not ctx: a client going away must not mark
		// nodes down.
		err = s.metaDoBytes(context.Background(), n, req, func(r *bufio.Reader) error {
			if err := readFound(r, got[:]); err != nil {
				return err
			}
			t, err := readMeta(r)
			if t.Found {
				killed.Store(true)
			}
			return err
		})
		return got, err
	}
	got := fanout(s, s.liveNodes(), get)
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
		changed := s.epoch.Load() != epoch
		var failed []int
		for i, g := range got {
			if g.err != nil || changed && !s.nodes[i].up.Load() {
				failed = append(failed, i)
			}
		}
		slots := maxHeld
		if d.Verdict == Unknown || d.Verdict == Adopted {
			slots = maxHeld / 2
		}
		if !await {
			// Checks that share this lookup hold themselves (see Result.unheld).
			unheld = slices.ContainsFunc(failed, func(i int) bool { _, _, ok := s.restarting(s.nodes[i]); return ok })
		} else if held, again = s.hold(ctx, failed, slots); again {
			return Result{}, held, true
		}
	}
	if (d.Verdict == Unknown || d.Verdict == Adopted) && !vouched && slices.ContainsFunc(got, unanswered) {
		// No node that can tell whether the session exists has answered:
		// fail open rather than strip a session PHP may still find.
		d = decision{Verdict: StoreDown}
	}
	res = Result{Verdict: d.Verdict, Locked: d.Locked, Empty: d.Empty, unheld: unheld}
	if len(d.Repair) > 0 || !s.sharded && diverged(got, d.Sources) {
		stored, complete := s.repair(id, data, d, got)
		res.Copies = stored
		res.Verdict = Repaired
		if stored == 0 {
			res.Verdict = Verified // every target refused (PHP wrote first) or failed
		}
		d.Cacheable = d.Cacheable && complete
	}
	if d.Cacheable && allUp && s.verifyTTL > 0 && h != 0 && s.killWatched.Load() {
		s.cache.put(h, cacheEntry{epoch: epoch, at: at.UnixNano(), empty: d.Empty})
	}
	return res, held, false
}

// found reports whether any node answered with the data or the lock key.
func found(got []outcome[[2]*metaItem]) bool {
	return slices.ContainsFunc(got, func(o outcome[[2]*metaItem]) bool {
		return o.err == nil && (o.v[0] != nil || o.v[1] != nil)
	})
}

// unanswered reports whether a node did not answer a lookup.
func unanswered(o outcome[[2]*metaItem]) bool { return o.err != nil }

// vouched reports whether a node that can vouch for a session's absence
// answered: one up, without a restart or return, for at least Lifetime
// (see node.upSince).
func (s *Store) vouched(got []outcome[[2]*metaItem]) bool {
	now := s.now()
	for i, o := range got {
		n := s.nodes[i]
		if o.err != nil || !n.up.Load() {
			continue
		}
		n.mu.Lock()
		since := n.upSince
		n.mu.Unlock()
		if since.IsZero() || now.Sub(since) >= s.lifetime {
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
