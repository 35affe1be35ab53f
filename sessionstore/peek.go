package sessionstore

import "time"

// peekEvery is the most often a Check answered from the verification cache
// peeks at the watchers' connections (peekWatchers), across every request
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

// peekWatchers looks, without blocking and without reading, at every idle
// watcher connection of a node marked up, and handles one the node closed
// as its watcher would (watchLost): the node is marked down, restarting,
// and every cached verification is void. It reports whether it found one.
// The watcher's own Read stays blocked as it was; peekClosed does not take
// its read lock.
func (s *Store) peekWatchers() (lost bool) {
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
		}
	}
	return lost
}
