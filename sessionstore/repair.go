package sessionstore

// This file repairs replicas: repair copies the latest copy (source) to the
// nodes that lack it or hold a stale one, and the TTL arithmetic that decides
// which copy is latest and what TTL a copy gets (ttlSlack, copyAge, expiration).

import (
	"bytes"
	"errors"
	"slices"
	"time"
)

// repair brings the answering nodes' copies up to date from the latest one
// (see source). Nodes in d.Repair lack the data: it is copied there with add,
// so a concurrent PHP write wins. Stale copies are replaced with cas, so again
// a PHP write since the lookup wins — even while PHP holds the lock, if
// clearly stale by lockedSlack: a request
// waiting for that lock (after a hang, the node may hold a lock nobody will
// release) would read the stale copy next, and the holder's own write comes
// later and wins anyway. Value bytes and flags are kept, and the remaining TTL
// less copyAge. Everything it needs of the copies (value, flags, TTL, CAS)
// came with the lookup's meta gets: no further read. It reports copies written and whether every copy now matches.
func (s *Store) repair(id, key string, d decision, got []outcome[[2]*metaItem], replays uint64) (stored int, complete bool) {
	best, stale := source(d, got, replays, int64(s.lifetime/time.Second))
	if best < 0 {
		return 0, false
	}
	src := got[best].v[0]
	complete = true
	exp := s.expiration(older(src.TTL))
	if s.beforeRepair != nil {
		s.beforeRepair()
	}
	adds := fanout(s, d.Repair, func(n *node) (struct{}, error) {
		return struct{}{}, s.metaStore(n, key, src.Value, src.Flags, exp, true, 0)
	})
	for _, i := range d.Repair {
		switch err := adds[i].err; {
		case err == nil:
			stored++
		case !errors.Is(err, errNotStored):
			complete = false
		}
	}
	cas := fanout(s, stale, func(n *node) (bool, error) {
		// The CAS read by the lookup: a PHP write (or delete) since wins.
		err := s.metaStore(n, key, src.Value, src.Flags, exp, false, got[slices.Index(s.nodes, n)].v[0].CAS)
		if errors.Is(err, errCASConflict) {
			return false, nil
		}
		return err == nil, err
	})
	for _, i := range stale {
		switch o := cas[i]; {
		case o.err != nil:
			complete = false
		case o.v:
			stored++
		}
	}
	s.repairs.Add(uint64(stored))
	if stored > 0 && s.repaired != nil {
		s.repaired(stored)
	}
	s.log.Debug("session replicas repaired", "session", ShortID(id), "copies", stored, "stale", len(stale),
		"source", s.nodes[best].addr, "ttl", src.TTL)
	return stored, complete
}

// source picks, among the copies on the nodes in d.Sources, the one to repair
// from, and the stale ones to replace; best is -1 when it cannot tell. The
// latest write has the longest TTL (PHP gives every copy of one write the same
// expiry), and a copy that differs from it with a clearly shorter TTL (by
// ttlSlack, lockedSlack while the lock is held) is stale: its node missed
// writes. Copies that differ with about the same TTL are
// ambiguous — PHP may be part-way through a write, or have skipped a node in
// it, and the copy it has not reached could be the one chosen.
//
// Except the copies in replays (bit i = node i; see replaySuspects): a
// write a hung node ran as it resumed, queued there since, got its TTL
// counted from the resume and may be older than the others' copies however
// long its TTL. Such a copy is the source only when no other node holds
// one, and is stale whenever it differs from the source.
//
// TTLs are compared up to lifetime (seconds, PHP's gc_maxlifetime): no write
// gives more, but a node whose clock runs late reads a copy just written
// with up to seconds more (pecl memcache sends absolute expiry times;
// memcached counts its time once a second, later under load: 1442 beside
// 1440 in TestFaultsUnderLoad), which made an older copy look the newest.
func source(d decision, got []outcome[[2]*metaItem], replays uint64, lifetime int64) (best int, stale []int) {
	ttl := func(i int) int64 {
		if t := got[i].v[0].TTL; t >= 0 && lifetime > 0 {
			return min(t, lifetime)
		}
		return got[i].v[0].TTL
	}
	best = -1
	for _, pass := range []bool{false, true} { // other nodes' copies first
		for _, i := range d.Sources {
			if c := got[i].v[0]; c != nil && (replays&(1<<i) != 0) == pass && (best < 0 || longer(ttl(i), ttl(best))) {
				best = i
			}
		}
		if best >= 0 {
			break
		}
	}
	if best < 0 {
		return -1, nil
	}
	src := got[best].v[0]
	slack := int64(ttlSlack)
	if d.Locked {
		slack = lockedSlack
	}
	for _, i := range d.Sources {
		c := got[i].v[0]
		switch {
		case bytes.Equal(c.Value, src.Value) && c.Flags == src.Flags:
		case replays&(1<<i) != 0 && replays&(1<<best) == 0, longerBy(ttl(best), ttl(i), slack):
			stale = append(stale, i)
		default:
			return -1, nil
		}
	}
	return best, stale
}

// diverged reports whether the copies found on the nodes in idx differ.
func diverged(got []outcome[[2]*metaItem], idx []int) bool {
	for _, i := range idx[min(1, len(idx)):] {
		a, b := got[idx[0]].v[0], got[i].v[0]
		if !bytes.Equal(a.Value, b.Value) || a.Flags != b.Flags {
			return true
		}
	}
	return false
}

// ttlSlack is how far apart, in seconds, two nodes may report the remaining
// TTL of copies that expire at the same moment: each memcached process ticks
// its clock once a second counted from its own start, so their seconds are
// out of phase.
const ttlSlack = 1

// lockedSlack is ttlSlack while the session's lock is held: its holder may
// be part-way through a write (it writes one node after another), so the
// copies just written are the newest, and a loaded memcached's clock can run
// seconds late, so that an older copy reads with the longer TTL (1442 beside
// 1440 just written, in TestZeroLossUnderFaults at load 13; replaced, the
// newest copy was lost, as the holder does not write a node twice). A copy
// this much older is one the holder skipped, or a hung node's.
const lockedSlack = 5

// clearlyLonger reports whether remaining TTL a, read on one node, outlasts b,
// read on another, by more than ttlSlack (-1 = never expires).
func clearlyLonger(a, b int64) bool { return longerBy(a, b, ttlSlack) }

// longerBy reports whether remaining TTL a outlasts b by more than slack
// seconds (-1 = never expires).
func longerBy(a, b, slack int64) bool {
	return b >= 0 && (a < 0 || a > b+slack)
}

// copyAge is how much shorter than its source's a copy's TTL is made, in
// seconds, so that any PHP write after the copy clearly outlives it: should
// PHP skip the copy's node in that write (the node failed earlier in the same
// PHP request), the next lookup sees the copy as stale rather than as a tie.
// The source's TTL is read on one node and the copy's set on another, and a
// later comparison again reads two nodes: ttlSlack twice, plus a margin of
// ttlSlack+1.
const copyAge = 3*ttlSlack + 1

// older returns the TTL for a copy of a source with remaining TTL secs.
func older(secs int64) int64 {
	if secs < 0 {
		return secs // never expires
	}
	return max(secs-copyAge, 1)
}

// longer reports whether remaining TTL a outlasts b (-1 = never expires).
func longer(a, b int64) bool {
	return b >= 0 && (a < 0 || a > b)
}

// maxRelativeTTL is the largest expiration memcached reads as relative seconds;
// larger values are unix times.
const maxRelativeTTL = 30 * 24 * 3600

// expiration converts remaining seconds into a memcached exptime.
func (s *Store) expiration(secs int64) int32 {
	switch {
	case secs < 0:
		return 0 // never expires, like the source
	case secs == 0:
		return 1 // expires within the second; 0 would mean never
	case secs > maxRelativeTTL:
		return int32(s.now().Unix() + secs) // memcached reads this as a unix time
	}
	return int32(secs)
}
