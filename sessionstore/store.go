// Package sessionstore owns PHP session ids and their entries in a replicated
// memcached pool, stored the way Debian 12's pecl memcache and memcached session
// handlers store them: id validation and key derivation, a parallel lookup on every
// node, repair of missing replicas (with add, never set, and never touching lock
// keys) and of stale ones (with cas), renewal (touch), inspection and kill, node
// liveness and restart tracking (the one owner of it in sessiongate: a watcher per
// node), holding requests for a restarting node, a re-check of recent sessions
// when a node comes back, the verification cache, the signed bookkeeping cookie
// codec (Marker), and the per-session record of requests in flight on this
// instance, with the order of those waiting for a slot (lock.go, queue.go).
//
// It speaks to memcached only; cookies and headers are the proxy's business.
//
// Deployment assumptions: memcached 1.6 or later (meta commands), and with
// Replicas 0 PHP itself must write every node (pecl memcache
// memcache.session_redundancy >= number of servers; php-memcached
// sess_number_of_replicas = servers-1 with the binary protocol). A copy on a node PHP
// never writes is never updated or deleted by PHP and could revive a destroyed
// session.
package sessionstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// Handlers (Options.Handler).
const (
	HandlerMemcache  = "memcache"  // pecl memcache: data <prefix><id>, lock <data>.lock
	HandlerMemcached = "memcached" // pecl memcached: data <prefix><id>, lock <prefix>lock.<id>
)

// Defaults for zero Options fields (DefaultVerifyTTL excepted: a zero
// VerifyTTL means no caching). config fills its defaults from these.
const (
	DefaultTimeout   = 100 * time.Millisecond
	DefaultLifetime  = 24 * time.Minute // PHP's session.gc_maxlifetime default
	DefaultVerifyTTL = 2 * time.Second
	// DefaultMemcachedPrefix is php-memcached's memcached.sess_prefix default.
	DefaultMemcachedPrefix = "memc.sess.key."
)

const (
	cacheEntries = 100_000
	// refreshQueue and refreshWorkers bound the background re-verifications
	// of cached sessions (see Store.refresh); a refresh that finds the queue
	// full is dropped, and that session's next request after verifyTTL looks
	// it up itself, as without refreshes.
	refreshQueue   = 256
	refreshWorkers = 4
	maxIdleConns   = 16
	// maxRelativeTTL is the largest expiration memcached reads as relative seconds;
	// larger values are unix times.
	maxRelativeTTL = 30 * 24 * 3600
)

// Errors.
var (
	ErrInvalidID = errors.New("sessionstore: invalid session id")
	ErrStoreDown = errors.New("sessionstore: no memcached node reachable")
)

// Options configure a Store. Zero values get documented defaults.
type Options struct {
	Servers   []string         // "host:port", at least one; resolved once by New
	Timeout   time.Duration    // per node operation bound (default 100ms)
	Handler   string           // "memcache" (default) or "memcached"
	KeyPrefix *string          // nil = handler default ("" for memcache, "memc.sess.key." for memcached)
	Replicas  int              // 0 = all (every node holds every session; repair onto all), 1 = sharded (look up only, never copy)
	Strict    bool             // unknown ids are reported Unknown so the proxy strips them (else Adopted)
	Lifetime  time.Duration    // store TTL used by Touch (= PHP session.gc_maxlifetime), default 24m
	VerifyTTL time.Duration    // how long a verification may be reused while no node changed (0 or negative = never cache; DefaultVerifyTTL is the usual value)
	Logger    *slog.Logger     // default: discard
	Now       func() time.Time // for tests; default time.Now
	// Repaired, if set, is told of every repair that wrote copies: those of
	// Checks, of background refreshes, and of re-checks after a node's return.
	Repaired func(copies int)
	// StaleLockAfter > 0 releases a session lock that lookups find held,
	// unchanged, this long while no request of the session that could hold
	// it is in flight here (see lock.go); 0 = off.
	StaleLockAfter time.Duration
	// LockReleased, if set, is told of every lock released: stale (found by
	// StaleLockAfter) or left by a request whose backend failed (Orphaned).
	LockReleased func(stale bool)
	// RestartHold is how long requests with a session wait for a node that
	// lost its connection (see Check); default 2s, negative = never wait.
	RestartHold time.Duration
	// Held, if set, is told of every Check that waited for a restarting
	// node, and how long.
	Held func(time.Duration)
	// Probed, if set, is told of every `stats` a node's watcher read, and
	// its round-trip time.
	Probed func(node string, rtt time.Duration)
}

// Verdict is the outcome of Check. String gives the metrics label.
type Verdict int

const (
	Verified  Verdict = iota // "verified": present (on every live node for replicas=all) or cached verification
	Repaired                 // "repaired": was missing on some live node(s), copied there
	Unknown                  // "unknown": no reachable node has data or lock key (strict strips it)
	Invalid                  // "invalid": not an id PHP would generate; never used as a key
	StoreDown                // "store_down": no node could answer: fail open (forward unchanged)
	Adopted                  // "adopted": like Unknown, but Strict is off: forward unchanged, PHP adopts the id
	Killed                   // "killed": killed through Kill on some instance (a tombstone exists): strip it, strict or not
	verdictCount
)

var verdictNames = [verdictCount]string{"verified", "repaired", "unknown", "invalid", "store_down", "adopted", "killed"}

func (v Verdict) String() string {
	if v < 0 || v >= verdictCount {
		return "verdict(" + strconv.Itoa(int(v)) + ")"
	}
	return verdictNames[v]
}

// Result is what Check found.
type Result struct {
	Verdict Verdict
	Cached  bool // answered from the verification cache, no round trip
	Locked  bool // a PHP request holds the session lock (locked sessions are never cached)
	Empty   bool // data key present but empty value (new/anonymous session); may be VerifyTTL old when Cached
	Copies  int  // replicas written by this Check's repair
	// Held is how long the lookup waited for a restarting node, 0 if it did
	// not. Checks sharing the lookup of one id share its Held.
	Held time.Duration
	// unheld: a lookup that does not hold (a re-check after a node's
	// return, a sweep, the repeat after a hold) decided without a node that
	// requests are held for. A Check that shared it looks again itself.
	unheld bool
}

// NodeEntry is one node's view of a session (Inspect).
type NodeEntry struct {
	Node      string
	Reachable bool
	Present   bool   // data key exists
	Size      int    // bytes of the stored value
	Flags     uint32 // memcached client flags: 0, or 2 = zlib (pecl memcache)
	TTL       int64  // seconds left, -1 never expires, 0 if not present
	Locked    bool   // lock held (memcache: value >= 1; memcached: key exists)
	Error     string // why the node could not be asked
}

// Stats are the store's counters since New.
type Stats struct {
	Lookups         [verdictCount]uint64 // Check results, indexed by Verdict
	Cached          uint64               // Checks answered from the verification cache
	Refreshes       uint64               // background re-verifications of cached sessions in use
	Repairs         uint64               // copies written by repairs
	Touches         uint64               // Touch calls that reached a node
	Kills           uint64               // Kill calls that reached a node
	LocksReleased   uint64               // locks left by requests whose backend failed, released (Orphaned)
	StaleLocks      uint64               // locks held past StaleLockAfter with no request here, released
	StoreDownEvents uint64               // times the whole pool went unreachable
	Held            uint64               // Checks that waited for a restarting node
	HoldsFull       uint64               // lookups that did not wait for a restarting node because maxHeld were waiting
}

// Store finds, repairs, renews and deletes PHP sessions on every node of a memcached
// pool. It is safe for concurrent use. Run must be running for nodes marked down to
// be noticed coming back, and for verifications to be cached (it reads the
// pool's kill epoch; see kill.go).
type Store struct {
	nodes     []*node
	all       []int // indexes of every node
	byAddr    map[string]*node
	timeout   time.Duration
	lifetime  time.Duration
	verifyTTL time.Duration
	handler   string
	prefix    string
	sharded   bool
	strict    bool
	log       *slog.Logger
	now       func() time.Time
	repaired  func(copies int)

	restartHold time.Duration
	holds       chan struct{} // one slot per lookup holding for a restarting node (maxHeld)
	heldHook    func(time.Duration)
	probedHook  func(string, time.Duration)
	held        atomic.Uint64
	holdsFull   atomic.Uint64

	// epoch changes on every node transition or restart; a verification is reused
	// only while it is unchanged.
	epoch     atomic.Uint64
	cache     *verifyCache
	flights   flights
	storeDown atomic.Bool         // last lookup found no node answering (logged once per change)
	recent    recent              // latest checked sessions, re-checked when a node comes back
	returned  chan struct{}       // a node came back up (buffered: signals coalesce)
	refreshes chan pendingRefresh // verifications to renew in the background (buffered, never blocks a Check)

	lookups                                                     [verdictCount]atomic.Uint64
	cached, refreshed, repairs, touches, kills, storeDownEvents atomic.Uint64

	// Session locks (lock.go).
	staleAfter                time.Duration
	lockReleased              func(stale bool)
	inflight                  sessionTable[inflight]
	queue                     queueCounts // queue.go
	staleWatch                sessionTable[heldLock]
	killWatched               atomic.Bool // some node's kill epoch has been read (see watchKills)
	locksReleased, staleLocks atomic.Uint64

	beforeRepair func()      // test hook: runs between choosing the source and writing copies
	beforeUnlock func()      // test hook: runs between reading a lock and deleting it (Orphaned)
	afterGet     func()      // test hook: runs after a lookup's reads
	beforeFailed func(i int) // test hook: runs before a failed operation on node i is recorded
}

// New validates o and builds a Store. It does not connect; see Run.
func New(o Options) (*Store, error) {
	s := &Store{
		byAddr:    make(map[string]*node, len(o.Servers)),
		timeout:   orDefault(o.Timeout, DefaultTimeout),
		lifetime:  orDefault(o.Lifetime, DefaultLifetime),
		verifyTTL: o.VerifyTTL, // 0 means never cache, as in the config: no default to fill in
		handler:   o.Handler,
		sharded:   o.Replicas == 1,
		strict:    o.Strict,
		log:       o.Logger,
		now:       o.Now,
		repaired:  o.Repaired,
		cache:     newVerifyCache(cacheEntries),
		returned:  make(chan struct{}, 1),
		refreshes: make(chan pendingRefresh, refreshQueue),

		staleAfter:   o.StaleLockAfter,
		lockReleased: o.LockReleased,
		restartHold:  orDefault(o.RestartHold, DefaultRestartHold),
		holds:        make(chan struct{}, maxHeld),
		heldHook:     o.Held,
		probedHook:   o.Probed,
	}
	if s.handler == "" {
		s.handler = HandlerMemcache
	}
	switch {
	case len(o.Servers) == 0:
		return nil, errors.New("sessionstore: no servers")
	case s.timeout < 0:
		return nil, errors.New("sessionstore: negative timeout")
	case s.lifetime < time.Second:
		return nil, errors.New("sessionstore: lifetime must be at least 1s")
	case o.Replicas != 0 && o.Replicas != 1:
		return nil, fmt.Errorf("sessionstore: replicas %d: must be 0 (all) or 1 (sharded)", o.Replicas)
	case s.handler != HandlerMemcache && s.handler != HandlerMemcached:
		return nil, fmt.Errorf("sessionstore: handler %q: must be %q or %q", s.handler, HandlerMemcache, HandlerMemcached)
	}
	switch {
	case o.KeyPrefix != nil:
		s.prefix = *o.KeyPrefix
	case s.handler == HandlerMemcached:
		s.prefix = DefaultMemcachedPrefix
	}
	if !legalPrefix(s.prefix) {
		return nil, fmt.Errorf("sessionstore: key prefix %q: no spaces or control characters, at most %d bytes",
			s.prefix, maxKeyLen-lockOverhead-minIDLen)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	for i, addr := range o.Servers {
		if s.byAddr[addr] != nil {
			return nil, fmt.Errorf("sessionstore: server %q listed twice", addr)
		}
		sl := new(memcache.ServerList)
		if err := sl.SetServers(addr); err != nil {
			return nil, fmt.Errorf("sessionstore: server %q: %w", addr, err)
		}
		c := memcache.NewFromSelector(sl)
		c.Timeout = s.timeout
		c.MaxIdleConns = maxIdleConns
		n := &node{addr: addr, client: c, meta: make(chan metaConn, metaIdle)}
		n.up.Store(true) // optimistic until a failure or the watcher says otherwise
		s.nodes = append(s.nodes, n)
		s.all = append(s.all, i)
		s.byAddr[addr] = n
	}
	return s, nil
}

// orDefault returns v, or def if v is zero.
func orDefault(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// Run starts one watcher and one kill epoch reader (watchKills) per node, the
// re-check of recent sessions when a node comes back, with StaleLockAfter the
// sweep of stale locks (sweepStale), and the background
// refresh of cached verifications, and blocks until ctx ends, then closes
// every connection the store holds. Call it once.
func (s *Store) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, n := range s.nodes {
		wg.Go(func() { s.watch(ctx, n) })
		wg.Go(func() { s.watchKills(ctx, n) })
	}
	wg.Go(func() { s.reconcile(ctx) })
	if s.staleAfter > 0 {
		wg.Go(func() { s.sweepStale(ctx) })
	}
	for range refreshWorkers {
		wg.Go(func() { s.refresh(ctx) })
	}
	wg.Wait()
	for _, n := range s.nodes {
		n.client.Close()
		drainMeta(n)
	}
}

// Check is the per-request entry point: it validates id, consults the verification
// cache, otherwise looks the session up on every node in parallel (nodes known down
// are skipped without waiting; each node operation is bounded by Timeout), repairs,
// and returns. One exception to not waiting: an existing session is held for a
// node that lost its connection less than RestartHold ago (see hold), as it is
// most likely restarting and must be repaired before PHP reads it. Concurrent
// Checks of one id share one lookup; a waiting caller whose ctx ends gets
// StoreDown (fail open). The lookup is bounded by a few Timeouts (each round of
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
		s.recent.add(id)
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
// that exists but could not be checked on a restarting node is held for that
// node (see hold), and looked up again if it came back.
func (s *Store) lookup(ctx context.Context, id string, h uint64) Result {
	res, held, again := s.lookupOnce(ctx, id, h, true)
	if again {
		res, _, _ = s.lookupOnce(ctx, id, h, false)
	}
	res.Held = held
	return res
}

// lookupOnce is one lookup; h is the id's cache hash, 0 to leave the cache
// alone. With await, a session that exists but could not be checked on a
// restarting node waits for that node instead of being decided without it:
// held says how long, and again that the lookup must be repeated. Without
// await, such a result is marked unheld instead.
func (s *Store) lookupOnce(ctx context.Context, id string, h uint64, await bool) (res Result, held time.Duration, again bool) {
	epoch := s.epoch.Load() // before any I/O: a node change during the lookup voids it
	allUp := true           // a node flagged down may restart again unnoticed: don't cache then
	for _, n := range s.nodes {
		allUp = allUp && n.up.Load()
	}
	at := s.now()
	data, lock := s.Keys(id)
	tomb := s.tombKey(id)
	keys := []string{data, lock, tomb}
	var killed atomic.Bool
	get := func(n *node) ([2]*memcache.Item, error) {
		m, err := n.client.GetMulti(keys)
		if m[tomb] != nil {
			killed.Store(true)
		}
		return [2]*memcache.Item{m[data], m[lock]}, err
	}
	got := fanout(s, s.liveNodes(), get)
	vouched := s.vouched(got)
	if !vouched && !s.sharded && !found(got) && !killed.Load() {
		// Nothing found, but only on nodes that restarted or returned
		// recently: ask the nodes skipped as hung as well (often just slow
		// for a moment on a loaded machine), at the cost of one Timeout.
		var skipped []int
		for i, g := range got {
			if errors.Is(g.err, errSkipped) {
				skipped = append(skipped, i)
			}
		}
		for i, o := range fanout(s, skipped, get) {
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
	if (d.Verdict == Unknown || d.Verdict == Adopted) && !vouched && slices.ContainsFunc(got, unanswered) {
		// No node that can tell whether the session exists has answered:
		// fail open rather than strip a session PHP may still find.
		d = decision{Verdict: StoreDown}
	}
	unheld := false
	if !s.sharded && len(d.Sources) > 0 {
		// The nodes that did not answer (skipped ones too: a restarting node
		// may have timed out once), and, when a node went or came during the
		// lookup, those down now: a node that answered and then went restarting
		// is empty when it returns. Requests that joined this lookup after the
		// node went must not reach PHP before it is repaired.
		changed := s.epoch.Load() != epoch
		var failed []int
		for i, g := range got {
			if g.err != nil || changed && !s.nodes[i].up.Load() {
				failed = append(failed, i)
			}
		}
		if !await {
			// Checks that share this lookup hold themselves (see Result.unheld).
			unheld = slices.ContainsFunc(failed, func(i int) bool { _, _, ok := s.restarting(s.nodes[i]); return ok })
		} else if held, again = s.hold(ctx, failed); again {
			return Result{}, held, true
		}
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
func found(got []outcome[[2]*memcache.Item]) bool {
	return slices.ContainsFunc(got, func(o outcome[[2]*memcache.Item]) bool {
		return o.err == nil && (o.v[0] != nil || o.v[1] != nil)
	})
}

// unanswered reports whether a node did not answer a lookup.
func unanswered(o outcome[[2]*memcache.Item]) bool { return o.err != nil }

// vouched reports whether a node that can vouch for a session's absence
// answered: one up, without a restart or return, for at least Lifetime
// (see node.upSince).
func (s *Store) vouched(got []outcome[[2]*memcache.Item]) bool {
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

// repair brings the answering nodes' copies up to date from the latest one
// (see source). Nodes in d.Repair lack the data: it is copied there with add,
// so a concurrent PHP write wins. Stale copies are replaced with cas, so again
// a PHP write since the lookup wins — even while PHP holds the lock: a request
// waiting for that lock (after a hang, the node may hold a lock nobody will
// release) would read the stale copy next, and the holder's own write comes
// later and wins anyway. Value bytes and flags are kept, and the remaining TTL
// less copyAge. It reports copies written and whether every copy now matches.
func (s *Store) repair(id, key string, d decision, got []outcome[[2]*memcache.Item]) (stored int, complete bool) {
	ttls := fanout(s, d.Sources, func(n *node) (metaItem, error) { return s.metaTTL(n, key) })
	best, stale := source(d, got, ttls)
	if best < 0 {
		return 0, false
	}
	src, ttl := got[best].v[0], ttls[best].v.TTL
	complete = true
	exp := s.expiration(older(ttl))
	if s.beforeRepair != nil {
		s.beforeRepair()
	}
	item := &memcache.Item{Key: key, Value: src.Value, Flags: src.Flags, Expiration: exp}
	adds := fanout(s, d.Repair, func(n *node) (struct{}, error) { return struct{}{}, n.client.Add(item) })
	for _, i := range d.Repair {
		switch err := adds[i].err; {
		case err == nil:
			stored++
		case !errors.Is(err, memcache.ErrNotStored):
			complete = false
		}
	}
	cas := fanout(s, stale, func(n *node) (bool, error) {
		it := *got[slices.Index(s.nodes, n)].v[0] // keeps the CAS id read by the lookup
		it.Value, it.Flags, it.Expiration = src.Value, src.Flags, exp
		err := n.client.CompareAndSwap(&it)
		if errors.Is(err, memcache.ErrCASConflict) || errors.Is(err, memcache.ErrNotStored) {
			return false, nil // PHP wrote (or deleted) it since the lookup: its write wins
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
		"source", s.nodes[best].addr, "ttl", ttl)
	return stored, complete
}

// source picks, among the copies on the nodes in d.Sources, the one to repair
// from, and the stale ones to replace; best is -1 when it cannot tell. The
// latest write has the longest TTL (PHP gives every copy of one write the same
// expiry), and a copy that differs from it with a clearly shorter TTL is stale:
// its node missed writes. Copies that differ with about the same TTL are
// ambiguous — PHP may be part-way through a write, or have skipped a node in
// it, and the copy it has not reached could be the one chosen — and so are
// copies that vanished meanwhile.
func source(d decision, got []outcome[[2]*memcache.Item], ttls []outcome[metaItem]) (best int, stale []int) {
	found := func(i int) bool { return ttls[i].err == nil && ttls[i].v.Found }
	best = -1
	for _, i := range d.Sources {
		if found(i) && (best < 0 || longer(ttls[i].v.TTL, ttls[best].v.TTL)) {
			best = i
		}
	}
	if best < 0 {
		return -1, nil
	}
	src := got[best].v[0]
	for _, i := range d.Sources {
		c := got[i].v[0]
		switch {
		case bytes.Equal(c.Value, src.Value) && c.Flags == src.Flags:
		case found(i) && clearlyLonger(ttls[best].v.TTL, ttls[i].v.TTL):
			stale = append(stale, i)
		default:
			return -1, nil
		}
	}
	return best, stale
}

// diverged reports whether the copies found on the nodes in idx differ.
func diverged(got []outcome[[2]*memcache.Item], idx []int) bool {
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

// clearlyLonger reports whether remaining TTL a, read on one node, outlasts b,
// read on another, by more than ttlSlack (-1 = never expires).
func clearlyLonger(a, b int64) bool {
	return b >= 0 && (a < 0 || a > b+ttlSlack)
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

// Touch renews the data key's TTL to Lifetime on every live node that has it, in
// parallel. It never touches lock keys and never creates a key. It fails only if the
// id is invalid or no node answered.
func (s *Store) Touch(ctx context.Context, id string) error {
	data, _ := s.Keys(id)
	if data == "" {
		return ErrInvalidID
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	exp := s.expiration(int64(s.lifetime / time.Second))
	res := fanout(s, s.liveNodes(), func(n *node) (struct{}, error) { return struct{}{}, n.client.Touch(data, exp) })
	for _, o := range res {
		if o.err == nil || errors.Is(o.err, memcache.ErrCacheMiss) {
			s.touches.Add(1)
			return nil
		}
	}
	return ErrStoreDown
}

// Inspect reports what every node (known down ones included) holds for id.
func (s *Store) Inspect(ctx context.Context, id string) ([]NodeEntry, error) {
	data, lock := s.Keys(id)
	if data == "" {
		return nil, ErrInvalidID
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	req := "mg " + data + " s f t\r\nmg " + lock + " v\r\n"
	res := fanout(s, s.all, func(n *node) (entry NodeEntry, err error) {
		// Bounded by Timeout, not ctx: a caller going away must not mark nodes down.
		err = s.metaDo(context.Background(), n, req, func(r *bufio.Reader) error {
			d, err := readMeta(r)
			if err != nil {
				return err
			}
			l, err := readMeta(r)
			if err != nil {
				return err
			}
			entry = NodeEntry{Reachable: true, Present: d.Found, Size: d.Size, Flags: d.Flags,
				Locked: l.Found && s.lockHeld(l.Value)}
			if d.Found {
				entry.TTL = d.TTL
			}
			return nil
		})
		return entry, err
	})
	out := make([]NodeEntry, len(s.nodes))
	for i, o := range res {
		out[i] = o.v
		out[i].Node = s.nodes[i].addr
		if o.err != nil {
			out[i].Error = o.err.Error()
		}
	}
	return out, nil
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	st := Stats{Cached: s.cached.Load(), Refreshes: s.refreshed.Load(), Repairs: s.repairs.Load(), Touches: s.touches.Load(),
		Kills: s.kills.Load(), StoreDownEvents: s.storeDownEvents.Load(), Held: s.held.Load(), HoldsFull: s.holdsFull.Load(),
		LocksReleased: s.locksReleased.Load(), StaleLocks: s.staleLocks.Load()}
	for i := range st.Lookups {
		st.Lookups[i] = s.lookups[i].Load()
	}
	return st
}
