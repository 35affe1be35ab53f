package sessionstore

import (
	"context"
	"strings"
	"sync"
)

// Bounds of the re-check after a node comes back.
const (
	// recentCap is how many of the latest checks of existing sessions are
	// remembered: enough to cover every request still queued at PHP.
	recentCap = 4096
	// recentShards split the memory of recent checks so that concurrent
	// Checks rarely share a lock.
	recentShards = 16
	// recentIDBytes is the longest id kept without an allocation (PHP's ids
	// are 22 to 256 characters; Debian's are 26).
	recentIDBytes = 48
	// reconcileWorkers bounds the lookups a re-check runs at once.
	reconcileWorkers = 8
)

// recent remembers the ids of the latest checks of existing sessions. Its
// zero value is ready to use.
type recent struct {
	shards [recentShards]recentShard
}

type recentShard struct {
	mu   sync.Mutex // guards next and ids
	next int
	ids  [recentCap / recentShards]recentID
}

// recentID is an id copied into fixed storage (never a view into a large
// Cookie header), or long when it does not fit.
type recentID struct {
	n    uint8
	b    [recentIDBytes]byte
	long string
	at   int64 // unix ns of the check
}

// add remembers a check of id at at (unix ns).
func (r *recent) add(id string, at int64) {
	h := uint32(2166136261) // FNV-1a spreads ids over the shards
	for i := range len(id) {
		h = (h ^ uint32(id[i])) * 16777619
	}
	sh := &r.shards[h%recentShards]
	sh.mu.Lock()
	e := &sh.ids[sh.next%len(sh.ids)]
	sh.next++
	e.at = at
	if len(id) <= recentIDBytes {
		e.n, e.long = uint8(copy(e.b[:], id)), ""
	} else {
		e.n, e.long = 0, strings.Clone(id)
	}
	sh.mu.Unlock()
}

// distinct returns the remembered ids checked at since (unix ns) or later,
// without repeats, about the latest first: the likeliest to be waiting at PHP.
func (r *recent) distinct(since int64) []string {
	per := len(r.shards[0].ids)
	var all [recentShards][]string
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for k := range min(sh.next, per) {
			e := &sh.ids[(sh.next-1-k)%per]
			if e.at < since {
				break // older ones follow
			}
			id := e.long
			if e.n > 0 {
				id = string(e.b[:e.n])
			}
			all[i] = append(all[i], id)
		}
		sh.mu.Unlock()
	}
	seen := make(map[string]bool)
	var out []string
	for k := range per {
		for i := range all {
			if k < len(all[i]) && !seen[all[i][k]] {
				seen[all[i][k]] = true
				out = append(out, all[i][k])
			}
		}
	}
	return out
}

// reconcile looks up the recently checked sessions again each time a node
// comes back up, repairing their copies on it. Requests checked while the node
// was down went to PHP without it, and some are still waiting there — for a
// PHP worker, or for a lock that a hung node took for a request that had
// given up on it — and will read the node first: it may hold no copy (it
// restarted) or a stale one (it missed writes while hung). The re-check puts
// the current copy there before most of them read it.
func (s *Store) reconcile(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.returned:
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, reconcileWorkers)
		for _, id := range s.recent.distinct(0) {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				// Through flights, so that a Kill cannot be undone by a copy
				// written back. Not cached: a PHP request in flight that read
				// before the node failed may write the others and skip this
				// node, and the copy put there must be looked at again (see
				// copyAge).
				s.flights.do(ctx, id, func() Result {
					res, _, _ := s.lookupOnce(ctx, id, 0, false)
					return res
				})
			})
		}
		wg.Wait()
	}
}
