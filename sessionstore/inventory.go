package sessionstore

// This file counts the sessions in the pool (Scan, Inventory): one metadump
// per node, one node after the other, on a connection of its own.

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Inventory bounds.
const (
	// sampleCap bounds the distinct sessions a scan remembers (about 24
	// bytes each). Up to this many sessions the pool-wide counts are exact;
	// beyond it the scan keeps a uniform sample of the ids — those whose
	// hash is below a threshold halved each time the sample fills up (the
	// same threshold for every node, so a kept id is counted on every node
	// holding it) — and scales its counts up: Inventory.Sampled says so,
	// and the error is about 1/sqrt(sampleCap/2), under 0.5%.
	sampleCap = 1 << 17
	// largestN is how many of the largest sessions an Inventory lists.
	largestN = 10
)

// SizeBounds are the upper bounds, in bytes, of Inventory.Sizes' buckets
// (the last bucket, past the final bound, is unbounded).
var SizeBounds = [...]int{0, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20}

// Inventory is what one scan of the pool found.
type Inventory struct {
	ScannedAt time.Time
	Duration  time.Duration
	// Sessions counts distinct session ids (data keys by the handler's key
	// layout, prefix and id rules) over every node; lock keys and other
	// keys are not sessions.
	Sessions int64
	WithData int64 // of which hold data; the rest are empty placeholders
	// Active counts sessions last accessed (on any node) within 1, 5 and
	// 15 minutes of the scan.
	Active1m, Active5m, Active15m int64
	// Incomplete counts sessions missing on some node that was scanned
	// (replicas: all only; 0 when sharded).
	Incomplete int64
	// Sampled: the pool held more than sampleCap sessions, and the counts
	// above are estimates from a uniform sample (per-node counts stay exact).
	Sampled bool
	// Sizes counts sessions by their largest copy's value bytes, in the
	// buckets of SizeBounds plus one beyond.
	Sizes   [len(SizeBounds) + 1]int64
	Largest []SessionSize // the largest sessions, largest first
	Nodes   []NodeInventory
}

// SessionSize is a session and its largest copy's value bytes.
type SessionSize struct {
	ID    string
	Bytes int
}

// NodeInventory is one node's part of an Inventory (exact counts).
type NodeInventory struct {
	Addr     string
	Sessions int64 // session data keys
	WithData int64
	Locks    int64  // session lock keys
	Other    int64  // keys that are neither: another application's, this store's tombstones
	Error    string // why the node could not be scanned
}

// sampleEntry is what a scan remembers of one sampled session.
type sampleEntry struct {
	nodes uint64 // bit i: node i holds it (the first 64 nodes)
	la    int64
	bytes int
}

// Scan counts the sessions in the pool now and keeps the result for
// Inventory. Scans do not overlap: a Scan waits for one running. It fails
// only if ctx ends or no node could be scanned.
func (s *Store) Scan(ctx context.Context) (Inventory, error) {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	start := time.Now()
	seed := maphash.MakeSeed()
	sample := make(map[uint64]sampleEntry)
	threshold, halvings := ^uint64(0), 0
	var largest []SessionSize
	inv := Inventory{Nodes: make([]NodeInventory, len(s.nodes))}
	var scanned uint64
	ok := 0
	for i, n := range s.nodes {
		ni := &inv.Nodes[i]
		ni.Addr = n.addr
		bit := uint64(1) << (i % 64)
		err := s.metadump(ctx, n, func(it dumpItem) error {
			id := s.sessionID(it.Key)
			if id == nil {
				if s.isLockKey(it.Key) {
					ni.Locks++
				} else {
					ni.Other++
				}
				return nil
			}
			ni.Sessions++
			if it.Size > 0 {
				ni.WithData++
			}
			largest = keepLargest(largest, id, it.Size)
			h := maphash.Bytes(seed, id)
			if h >= threshold {
				return nil
			}
			e := sample[h]
			e.nodes |= bit
			e.la = max(e.la, it.LA)
			e.bytes = max(e.bytes, it.Size)
			sample[h] = e
			for len(sample) > sampleCap {
				threshold /= 2
				halvings++
				for k := range sample {
					if k >= threshold {
						delete(sample, k)
					}
				}
			}
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return Inventory{}, ctx.Err()
			}
			ni.Error = err.Error()
			s.log.Warn("pool scan: node not scanned", "node", n.addr, "error", err)
			continue
		}
		ok++
		scanned |= bit
	}
	if ok == 0 {
		return Inventory{}, ErrStoreDown
	}
	now := s.now()
	scale := int64(1) << halvings
	inv.Sampled = halvings > 0
	for _, e := range sample {
		inv.Sessions++
		if e.bytes > 0 {
			inv.WithData++
		}
		age := now.Unix() - e.la
		inv.Active1m += b2i64(age <= 60)
		inv.Active5m += b2i64(age <= 5*60)
		inv.Active15m += b2i64(age <= 15*60)
		if !s.sharded && e.nodes&scanned != scanned {
			inv.Incomplete++
		}
		inv.Sizes[sizeBucket(e.bytes)]++
	}
	for _, p := range []*int64{&inv.Sessions, &inv.WithData, &inv.Active1m, &inv.Active5m, &inv.Active15m, &inv.Incomplete} {
		*p *= scale
	}
	for i := range inv.Sizes {
		inv.Sizes[i] *= scale
	}
	inv.Largest = largest
	inv.ScannedAt, inv.Duration = now, time.Since(start)
	s.inventory.Store(&inv)
	return inv, nil
}

// Inventory returns the latest scan's result, and false before the first.
func (s *Store) Inventory() (Inventory, bool) {
	inv := s.inventory.Load()
	if inv == nil {
		return Inventory{}, false
	}
	return *inv, true
}

// scanLoop scans every interval until ctx ends, the first time at once.
func (s *Store) scanLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := s.Scan(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("pool scan failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// keepLargest adds id (a view: copied when kept) with size to the largest
// sessions, at most largestN, largest first; an id seen on several nodes
// counts once, with its largest copy.
func keepLargest(l []SessionSize, id []byte, size int) []SessionSize {
	if size <= 0 || len(l) == largestN && size <= l[len(l)-1].Bytes {
		return l
	}
	for i := range l {
		if l[i].ID == string(id) {
			if size <= l[i].Bytes {
				return l
			}
			l = append(l[:i], l[i+1:]...)
			break
		}
	}
	at := len(l)
	for at > 0 && l[at-1].Bytes < size {
		at--
	}
	if len(l) < largestN {
		l = append(l, SessionSize{})
	}
	copy(l[at+1:], l[at:])
	l[at] = SessionSize{ID: string(id), Bytes: size}
	return l
}

// sizeBucket is the index in Inventory.Sizes of a session of size bytes.
func sizeBucket(size int) int {
	for i, b := range SizeBounds {
		if size <= b {
			return i
		}
	}
	return len(SizeBounds)
}

func b2i64(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// scanState is the Store's part for scans (embedded in Store).
type scanState struct {
	scanMu sync.Mutex // one scan at a time
	// inventory is the latest scan's result.
	inventory atomic.Pointer[Inventory]
}
