// Package limits owns the per-client limits at the front door: a request
// rate (a token bucket per client, like nginx's limit_req) and a bound on
// each client's open connections (nginx's limit_conn), both kept in one
// fixed-size table so that a spray of distinct addresses costs bounded
// memory.
//
// A client is its address, IPv4 as is and IPv6 grouped by /64 (one
// subscriber's allocation, which an attacker can walk through freely).
// The table is split into shards, each a fixed array of entries found
// through a map, with CLOCK eviction when full: the first entry, from the
// clock hand on, that holds no connection and was not used since the hand
// last passed. Evicting a client forgets its bucket, so under a spray of
// more distinct clients than the table holds a client may start again
// with a full burst. Connection counts are never forgotten: entries holding
// connections are not evicted. Should a shard fill with clients that all
// hold connections (about Size open connections from distinct clients),
// a new client there has its connections refused and its requests let
// through unmetered until one of them closes.
//
// Each instance limits what it sees: two instances side by side let a
// client through twice the rate, each its own share.
package limits

import (
	"math"
	"net/netip"
	"sync"
	"time"
)

// Options configure a Limiter. A zero Rate or Conns turns that limit off.
type Options struct {
	Rate  int // requests per second per client, sustained
	Burst int // requests beyond Rate at once; 0 = Rate
	Conns int // open connections per client
	// Exempt clients are never limited.
	Exempt []netip.Prefix
	// Size bounds the clients tracked at once; 0 = DefaultSize.
	Size int
	// Now is the clock; nil = time.Now. Tests inject theirs.
	Now func() time.Time
}

// DefaultSize is how many clients a Limiter tracks at once: about 64 bytes
// each, 4 MB in all.
const DefaultSize = 65536

const shards = 64

// Limiter applies per-client limits. It is safe for concurrent use.
type Limiter struct {
	rate   float64 // tokens per nanosecond
	burst  float64
	conns  int32
	exempt []netip.Prefix
	now    func() time.Time
	shards [shards]shard
}

type shard struct {
	mu      sync.Mutex
	index   map[[16]byte]int32
	entries []entry
	hand    int
}

type entry struct {
	key    [16]byte // Key(client).As16(): no pointer for the collector to scan
	tokens float64
	last   int64 // unix nanoseconds of the last refill
	conns  int32
	used   bool // CLOCK's reference bit
	live   bool
}

// New returns a Limiter, or nil when o sets no limit.
func New(o Options) *Limiter {
	if o.Rate <= 0 && o.Conns <= 0 {
		return nil
	}
	if o.Size <= 0 {
		o.Size = DefaultSize
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Burst <= 0 {
		o.Burst = o.Rate
	}
	l := &Limiter{rate: float64(o.Rate) / 1e9, burst: float64(o.Burst), conns: int32(o.Conns),
		exempt: o.Exempt, now: o.Now}
	per := max(1, (o.Size+shards-1)/shards)
	for i := range l.shards {
		l.shards[i].index = make(map[[16]byte]int32, per)
		l.shards[i].entries = make([]entry, per)
	}
	return l
}

// Key is the client a limit applies to: a's IPv4 address, or a's IPv6 /64.
func Key(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is4() {
		return a
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.Addr()
}

func (l *Limiter) exempted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range l.exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (l *Limiter) shard(b [16]byte) *shard {
	var h uint64 = 14695981039346656037 // FNV-1a
	for _, c := range b {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return &l.shards[h%shards]
}

// Allow takes one request of client a. When the client is over its rate it
// returns false and how long until a request would be allowed.
func (l *Limiter) Allow(a netip.Addr) (bool, time.Duration) {
	if l == nil || l.rate == 0 || l.exempted(a) {
		return true, 0
	}
	k := Key(a).As16()
	s := l.shard(k)
	now := l.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.get(k, now, l.burst)
	if e == nil { // every entry holds connections: rather serve than refuse blindly
		return true, 0
	}
	e.tokens = math.Min(l.burst, e.tokens+float64(now-e.last)*l.rate)
	e.last = now
	if e.tokens >= 1 {
		e.tokens--
		return true, 0
	}
	return false, time.Duration(math.Ceil((1 - e.tokens) / l.rate))
}

// Open counts a new connection of client a. It returns false, counting
// nothing, when the client already has its limit open; otherwise the
// caller must call the returned release once the connection is closed.
func (l *Limiter) Open(a netip.Addr) (ok bool, release func()) {
	if l == nil || l.conns == 0 || l.exempted(a) {
		return true, nil
	}
	k := Key(a).As16()
	s := l.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.get(k, l.now().UnixNano(), l.burst)
	if e == nil || e.conns >= l.conns {
		return false, nil
	}
	e.conns++
	return true, func() { l.close(k) }
}

func (l *Limiter) close(k [16]byte) {
	s := l.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.index[k]; ok && s.entries[i].conns > 0 {
		s.entries[i].conns--
	}
}

// get returns k's entry, making one (evicting another if need be) with a
// full bucket; nil when every entry holds connections. Callers hold s.mu.
func (s *shard) get(k [16]byte, now int64, burst float64) *entry {
	if i, ok := s.index[k]; ok {
		e := &s.entries[i]
		e.used = true
		return e
	}
	n := len(s.entries)
	for range 2 * n { // two turns: the first may only clear reference bits
		i := s.hand
		s.hand = (s.hand + 1) % n
		e := &s.entries[i]
		if e.live && (e.conns > 0 || e.used) {
			e.used = false
			continue
		}
		if e.live {
			delete(s.index, e.key)
		}
		*e = entry{key: k, tokens: burst, last: now, used: true, live: true}
		s.index[k] = int32(i)
		return e
	}
	return nil
}

// Tracked reports how many clients the table holds now.
func (l *Limiter) Tracked() int {
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.index)
		s.mu.Unlock()
	}
	return n
}
