package sessionstore

import (
	"context"
	"hash/maphash"
	"sync"
)

// cacheShards splits the verification cache so concurrent Checks rarely share a lock.
const cacheShards = 16

// verifyCache remembers recent verifications, keyed by a seeded 64-bit hash of the id
// (the raw id is not kept, so memory per entry is fixed). A seeded hash collision could
// let an unknown id pass as a verified one; with a per-process random seed and 100k
// entries that is about 5 in 10^15 per guessed id, and guesses cannot be aimed.
type verifyCache struct {
	seed   maphash.Seed
	perMax int // entries per shard before the shard is emptied wholesale
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.Mutex // guards m
	m  map[uint64]cacheEntry
}

type cacheEntry struct {
	epoch      uint64 // Store epoch read before the lookup that verified the id
	at         int64  // unix nanoseconds of that lookup
	empty      bool
	refreshing bool // a background re-verification was queued for it (see Store.refresh)
}

func newVerifyCache(maxEntries int) *verifyCache {
	c := &verifyCache{seed: maphash.MakeSeed(), perMax: max(1, maxEntries/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[uint64]cacheEntry)
	}
	return c
}

func (c *verifyCache) hash(id string) uint64 { return maphash.String(c.seed, id) }

func (c *verifyCache) shard(h uint64) *cacheShard { return &c.shards[h>>60] }

// get returns the entry for h if it was made in epoch and is younger than ttl at now.
func (c *verifyCache) get(h, epoch uint64, now, ttl int64) (cacheEntry, bool) {
	sh := c.shard(h)
	sh.mu.Lock()
	e, ok := sh.m[h]
	sh.mu.Unlock()
	return e, ok && e.epoch == epoch && now-e.at < ttl
}

func (c *verifyCache) put(h uint64, e cacheEntry) {
	sh := c.shard(h)
	sh.mu.Lock()
	if _, ok := sh.m[h]; !ok && len(sh.m) >= c.perMax {
		// Evicting wholesale keeps this O(1) and bounded; the cost is some extra
		// lookups, which is what a cache miss is anyway.
		sh.m = make(map[uint64]cacheEntry, c.perMax/4)
	}
	sh.m[h] = e
	sh.mu.Unlock()
}

// claim marks the entry for h made at at as being refreshed, and reports
// whether this call did so: only one refresh is queued per verification.
func (c *verifyCache) claim(h uint64, at int64) bool {
	sh := c.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[h]
	if !ok || e.at != at || e.refreshing {
		return false
	}
	e.refreshing = true
	sh.m[h] = e
	return true
}

// drop removes the entry for h if it is still the one made at at: a newer
// verification stays.
func (c *verifyCache) drop(h uint64, at int64) {
	sh := c.shard(h)
	sh.mu.Lock()
	if e, ok := sh.m[h]; ok && e.at == at {
		delete(sh.m, h)
	}
	sh.mu.Unlock()
}

func (c *verifyCache) remove(h uint64) {
	sh := c.shard(h)
	sh.mu.Lock()
	delete(sh.m, h)
	sh.mu.Unlock()
}

// flights coalesces concurrent work on one session id: concurrent Checks share one
// lookup, and Kill runs alone so a lookup's repair cannot write a copy back after the
// kill deleted it.
type flights struct {
	mu    sync.Mutex // guards calls
	calls map[string]*call
}

type call struct {
	done chan struct{} // closed when res is set
	res  Result
	dups int // callers that waited for this call instead of starting their own (guarded by flights.mu)
}

// do runs fn for id unless a call for id is in flight, in which case it waits for that
// call's result (or for ctx, returning StoreDown: fail open).
func (f *flights) do(ctx context.Context, id string, fn func() Result) Result {
	f.mu.Lock()
	if c, ok := f.calls[id]; ok {
		c.dups++
		f.mu.Unlock()
		select {
		case <-c.done:
			return c.res
		case <-ctx.Done():
			return Result{Verdict: StoreDown}
		}
	}
	c := f.start(id)
	f.mu.Unlock()
	return f.finish(id, c, fn())
}

// exclusive waits until no call for id is in flight, then runs fn as the only one;
// calls arriving meanwhile get fn's result.
func (f *flights) exclusive(ctx context.Context, id string, fn func() Result) (Result, error) {
	for {
		f.mu.Lock()
		c, ok := f.calls[id]
		if !ok {
			c = f.start(id)
			f.mu.Unlock()
			return f.finish(id, c, fn()), nil
		}
		c.dups++
		f.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
}

// tryStart registers a call for id, as do would before running its
// function, unless one is in flight; finish must follow.
func (f *flights) tryStart(id string) (*call, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.calls[id]; ok {
		return nil, false
	}
	return f.start(id), true
}

// start registers a call for id; f.mu must be held.
func (f *flights) start(id string) *call {
	if f.calls == nil {
		f.calls = make(map[string]*call)
	}
	c := &call{done: make(chan struct{})}
	f.calls[id] = c
	return c
}

func (f *flights) finish(id string, c *call, res Result) Result {
	c.res = res
	f.mu.Lock()
	delete(f.calls, id)
	f.mu.Unlock()
	close(c.done)
	return res
}
