package sessionstore

import (
	"fmt"
	"time"
)

// peekEvery is the most often a Check answered from the verification cache
// peeks at the nodes' idle connections (peekNodes), across every request
// of a Store. Why: when memcached exits, its watcher's blocked read gets EOF
// at once, but on a loaded machine the watcher goroutine waited 330–660 ms
// for a CPU before handling it (load average 15 on 2 cores, issue 14), and
// a request answered from the cache meanwhile went to PHP, which read the
// restarted, empty node. Peeking on every hit costs 3 system calls per
// request; once per 5 ms narrows that window to a few ms (the restarted
// process needs longer than that to accept) at no cost per request beyond
// one atomic load and a comparison.
const peekEvery = 5 * time.Millisecond

// peekDue reports, for a Check at now (unix ns), whether it is the one to
// peek: peekEvery has passed since the last peek and no other Check claimed
// this one first.
func (s *Store) peekDue(now int64) bool {
	last := s.peekedAt.Load()
	return now-last >= int64(peekEvery) && s.peekedAt.CompareAndSwap(last, now)
}

// peekNodes looks, without blocking and without reading, at the idle
// watcher connection of every node marked up, and at one of its idle pooled
// connections, and handles one the node closed as its watcher would
// (watchLost): the node is marked down, restarting, and every cached
// verification is void. It reports whether it found one. The pooled
// connection covers what the watcher's cannot show: a watcher starved of
// CPU has its probe's answer waiting unread, so its peek sees that answer,
// not the EOF behind it (seen in TestZeroLossUnderFaults at load 12-16: PHP
// met a node killed 30 ms before, and the watcher connection still looked
// open); an idle pooled connection has nothing unread. The watcher's own
// Read stays blocked as it was; peekClosed does not take its read lock.
func (s *Store) peekNodes() (lost bool) {
	for _, n := range s.nodes {
		if !n.up.Load() {
			continue
		}
		var err error
		n.mu.Lock()
		if n.watchConn != nil { // under n.mu, so idle cannot close it meanwhile
			err = peekClosed(n.watchConn)
		}
		n.mu.Unlock()
		if err != nil {
			s.watchLost(n, err)
			lost = true
		} else if err = peekPooled(n); err != nil && n.up.Load() {
			s.failed(n, fmt.Errorf("idle pooled connection: %w", err))
			lost = true
		}
	}
	return lost
}

// peekPooled peeks at one idle pooled connection of n, if there is one,
// and returns it to the pool unless it was closed.
func peekPooled(n *node) error {
	var mc metaConn
	select {
	case mc = <-n.meta:
	default:
		return nil
	}
	if err := peekClosed(mc.c); err != nil {
		mc.c.Close()
		return err
	}
	putIdle(n, mc)
	return nil
}
