// Package sessionstore owns PHP session ids and their entries in a replicated
// memcached pool, stored the way Debian 12's pecl memcache and memcached session
// handlers store them: id validation and key derivation, a parallel lookup on every
// node, repair of missing replicas (with add, never set, and never touching lock
// keys) and of stale ones (with cas), renewal (touch), inspection and kill, node
// liveness and restart tracking (the one owner of it in sessiongate: a watcher per
// node), holding requests for a restarting node, a re-check of recent sessions
// when a node comes back, the verification cache, and the per-session record of
// requests in flight on this instance, with the order of those waiting for a
// slot (lock.go, queue.go).
//
// It speaks to memcached only; cookies and headers are the proxy's business
// (reading an id out of the session cookie and the signed renewal cookie are
// proxy/cookie's).
//
// Deployment assumptions: memcached 1.6 or later (meta commands), and with
// Replicas 0 PHP itself must write every node (pecl memcache
// memcache.session_redundancy >= number of servers; php-memcached
// sess_number_of_replicas = servers-1 with the binary protocol). A copy on a node PHP
// never writes is never updated or deleted by PHP and could revive a destroyed
// session.
package sessionstore

// This file holds the API: Store, Options, New, Run, Stats and the types
// callers see (Verdict, Result, NodeEntry). The work is elsewhere: lookup.go
// (Check), repair.go (repair and TTL arithmetic), ops.go (Touch, Inspect),
// kill.go (Kill), lock.go (in-flight requests and lock release), queue.go,
// node.go (node liveness), meta.go, cache.go, recent.go, decide.go, id.go.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Handlers (Options.Handler).
const (
	HandlerMemcache  = "memcache"  // pecl memcache: data <prefix><id>, lock <data>.lock
	HandlerMemcached = "memcached" // pecl memcached: data <prefix><id>, lock <prefix>lock.<id>
)

// Defaults for zero Options fields (DefaultVerifyTTL and DefaultRestartHold
// excepted: zero there means no caching and no holding, as in the config).
// config fills its defaults from these.
const (
	DefaultTimeout   = 100 * time.Millisecond
	DefaultLifetime  = 24 * time.Minute // PHP's session.gc_maxlifetime default
	DefaultVerifyTTL = 2 * time.Second
	// DefaultResyncRate is memcached.resync_rate's default.
	DefaultResyncRate = 500
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
	// maxIdleConns is the idle connections kept per node. Below the lookups
	// in flight at once, connections are dialed and closed all the time:
	// at 16, with 64 client connections of cold sessions, dialing was a fifth
	// of the CPU (bench/profiles.md). 64 per node and instance stays well
	// under memcached's default 1024 connections for a handful of instances.
	maxIdleConns = 64
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
	// DisableRawIO keeps net.Conn's own reads and writes on memcached
	// connections on Linux too (server.sockio: false); by default they
	// skip the scheduler's system-call bookkeeping (internal/sockio).
	DisableRawIO bool
	// Repaired, if set, is told of every repair that wrote copies: those of
	// Checks, of background refreshes, and of re-checks after a node's return.
	Repaired func(copies int)
	// StaleLockAfter > 0 releases a session lock that lookups find held,
	// unchanged, this long while no request of the session that could hold
	// it is in flight here (see lock.go); 0 = off.
	StaleLockAfter time.Duration
	// LockReleased, if set, is told of every lock released, with why:
	// LockOrphaned, LockStale or LockReplayed.
	LockReleased func(reason string)
	// RestartHold is how long requests with a session wait for a node that
	// lost its connection or stopped answering (see Check); 0 or negative =
	// never wait, as in the config (DefaultRestartHold is the usual value).
	RestartHold time.Duration
	// Held, if set, is told of every Check that waited for a restarting
	// node, and how long.
	Held func(time.Duration)
	// Probed, if set, is told of every `stats` a node's watcher read, and
	// its round-trip time.
	Probed func(node string, rtt time.Duration)
	// User, if set, finds the user id in a session's stored value (raw
	// bytes and client flags), for List's User queries.
	User func(value []byte, flags uint32) (user string, ok bool)
	// ScanInterval > 0 makes Run scan the pool this often (see Scan); 0 = only on demand.
	ScanInterval time.Duration
	// ResyncRate > 0 fills a node that restarted, came back or joined with
	// the sessions it lacks, looking at this many per second (see
	// resync.go); 0 = no resync (config's default is DefaultResyncRate).
	ResyncRate int
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
	// Held is how long the lookup waited for a restarting node, or for the
	// release of a lock held over a copy a returned node lacks (see
	// awaitUnlock), 0 if it did not. Checks sharing the lookup of one id
	// share its Held.
	Held time.Duration
	// unheld: a lookup that does not hold (a re-check after a node's
	// return, a sweep, the repeat after a hold) decided without a node that
	// requests are held for, or a node refused it, or a node lacking the
	// copy did not take its repair, or a request of the session was at PHP
	// here as it read. A Check that shared it looks again itself.
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
	ReplayedLocks   uint64               // locks a node that resumed took for requests that had failed over, released (resume.go)
	StoreDownEvents uint64               // times the whole pool went unreachable
	Held            uint64               // Checks that waited for a restarting node
	HoldsFull       uint64               // lookups that did not wait for a restarting node because the hold slots were taken (maxHeld; half of them for ids no node holds)
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
	born      time.Time // for mono
	rawIO     bool      // see Options.DisableRawIO
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
	peekedAt                                                    atomic.Int64 // unix ns of the last peekNodes (see peekDue)
	kr                                                          killReads

	// Session locks (lock.go).
	staleAfter                time.Duration
	lockReleased              func(reason string)
	inflight                  sessionTable[inflight]
	queue                     queueCounts // queue.go
	staleWatch                sessionTable[heldLock]
	locksReleased, staleLocks atomic.Uint64

	scanState
	resync    resyncState
	scanEvery time.Duration
	userOf    func([]byte, uint32) (string, bool)

	// Locks a resumed node took for nobody (resume.go).
	resumes       sessionTable[resumeSweep]
	resumeUntil   atomic.Int64  // unix ns until which some candidate may wait (0: none ever)
	resumed       chan struct{} // a node came back without a restart (buffered: signals coalesce)
	replayedLocks atomic.Uint64
	// returns[i] is when s.nodes[i] last came back without a restart (unix
	// ns, 0 never), and settled when each session was last settled here
	// after one: a session's first request after a return is settled against
	// the node even if this instance did not see it around the outage
	// (resume.go, adopt).
	returns []atomic.Int64
	settled sessionTable[settledMark]
	marks   []atomic.Pointer[resumeMark] // per node: its CAS watermark after its latest return
	// Sessions whose request is at PHP soon after a return, followed for a
	// lock replayed after their settle (replaywait.go).
	waits    sessionTable[replayWait]
	waitWake chan struct{} // a session is followed (buffered: signals coalesce)

	// test hook: runs between reading a resync batch's sources and adding
	// the copies (atomic: set while Run runs, read by the resync goroutine)
	beforeResyncAdd atomic.Pointer[func()]
	beforeRepair    func()      // test hook: runs between choosing the source and writing copies
	beforeUnlock    func()      // test hook: runs between reading a lock and deleting it (Orphaned)
	afterUnlock     func(i int) // test hook: runs when releaseReplayed has deleted a lock on node i
	afterGet        func()      // test hook: runs after a lookup's reads
	beforeFailed    func(i int) // test hook: runs before a failed operation on node i is recorded
	// test hook: runs when a watcher's idle connection ends, before the
	// watcher handles it (atomic: set while Run runs)
	idleEnded atomic.Pointer[func()]
	// killRead, when set, runs before each read of the kill epoch reader (tests).
	killRead atomic.Pointer[func()]
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
		resumed:   make(chan struct{}, 1),
		waitWake:  make(chan struct{}, 1),
		refreshes: make(chan pendingRefresh, refreshQueue),

		staleAfter:   o.StaleLockAfter,
		lockReleased: o.LockReleased,
		restartHold:  max(o.RestartHold, 0), // 0 means never wait, as in the config: no default to fill in
		holds:        make(chan struct{}, maxHeld),
		heldHook:     o.Held,
		probedHook:   o.Probed,
		scanEvery:    o.ScanInterval,
		userOf:       o.User,
		resync:       resyncState{rate: o.ResyncRate, wake: make(chan struct{}, 1)},
		born:         time.Now(),
		rawIO:        !o.DisableRawIO,
		kr:           killReads{wake: make(chan struct{}, 1), done: make(chan struct{})},
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
		// Resolved once, here, as the configuration names it; discovery
		// (cmd) reloads the store when a name's addresses change.
		ta, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("sessionstore: server %q: %w", addr, err)
		}
		n := &node{addr: addr, dialAddr: ta.String(), meta: make(chan metaConn, maxIdleConns)}
		n.up.Store(true) // optimistic until a failure or the watcher says otherwise
		s.nodes = append(s.nodes, n)
		s.all = append(s.all, i)
		s.byAddr[addr] = n
	}
	s.returns = make([]atomic.Int64, min(len(s.nodes), 64))
	s.marks = make([]atomic.Pointer[resumeMark], len(s.returns))
	return s, nil
}

// orDefault returns v, or def if v is zero.
func orDefault(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// Run starts one watcher per node, the kill epoch reader (watchKills), the
// re-check of recent sessions when a node comes back, with StaleLockAfter the
// sweep of stale locks (sweepStale), and the background
// refresh of cached verifications, and blocks until ctx ends, then closes
// every connection the store holds. Call it once.
func (s *Store) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, n := range s.nodes {
		wg.Go(func() { s.watch(ctx, n) })
	}
	wg.Go(func() { s.watchKills(ctx) })
	wg.Go(func() { s.reconcile(ctx) })
	wg.Go(func() { s.releaseResumed(ctx) })
	wg.Go(func() { s.followWaits(ctx) })
	if s.staleAfter > 0 {
		wg.Go(func() { s.sweepStale(ctx) })
	}
	var gather sync.Mutex // one refresh worker gathers a batch at a time
	for range refreshWorkers {
		wg.Go(func() { s.refresh(ctx, &gather) })
	}
	if s.resync.rate > 0 && !s.sharded {
		wg.Go(func() { s.resyncLoop(ctx) })
	}
	if s.scanEvery > 0 {
		wg.Go(func() { s.scanLoop(ctx, s.scanEvery) })
	}
	wg.Wait()
	for _, n := range s.nodes {
		drainMeta(n)
	}
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	st := Stats{Cached: s.cached.Load(), Refreshes: s.refreshed.Load(), Repairs: s.repairs.Load(), Touches: s.touches.Load(),
		Kills: s.kills.Load(), StoreDownEvents: s.storeDownEvents.Load(), Held: s.held.Load(), HoldsFull: s.holdsFull.Load(),
		LocksReleased: s.locksReleased.Load(), StaleLocks: s.staleLocks.Load(), ReplayedLocks: s.replayedLocks.Load()}
	for i := range st.Lookups {
		st.Lookups[i] = s.lookups[i].Load()
	}
	return st
}
