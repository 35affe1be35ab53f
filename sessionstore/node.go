package sessionstore

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The watcher of each node is the one owner of its liveness and restart
// detection: everything else (lookups, status pages, metrics) reads what it
// and failed operations recorded here.

// Watcher bounds.
const (
	// redialPause is the pause between failed redials. It does not grow: a
	// timed-out dial already cost Timeout, a refused one costs nothing, and
	// while a node is marked down lookups skip it, so the sooner the watcher
	// sees it again (resumed, or restarted empty) the better.
	redialPause = 50 * time.Millisecond
	// restartPoll is the redial period for a node that refuses connections
	// while requests are held for it (see restarting).
	restartPoll = 5 * time.Millisecond
	// restartSlack absorbs the one-second granularity of memcached's uptime when
	// comparing start times derived from two observations.
	restartSlack = 2 * time.Second
	// statsInterval is how often the watcher asks `stats` on its connection:
	// a node that stops answering (hung) is noticed within twice
	// statsInterval even without traffic, and the status page gets fresh
	// figures.
	statsInterval = time.Second
	// stallProbe is how often the watcher sends a no-op (`mn`) between two
	// `stats`, and stallMin the answer time from which it counts a stall:
	// a node that hung that long and resumed runs what PHP queued on it
	// meanwhile, though it may never have been marked down (resume.go).
	// Shorter stalls do not matter: PHP waits at least its own timeout
	// (pecl memcache: 1 s) before it gives up on a node. The same bound
	// tells a return after an outage from a lookup's timeout (observe).
	stallProbe = 100 * time.Millisecond
	stallMin   = 250 * time.Millisecond
)

// Holding requests for a node that lost its connection (see hold).
const (
	// DefaultRestartHold is how long requests with a session usually wait for
	// a node that lost its connection (config's memcached.restart_hold default).
	DefaultRestartHold = 2 * time.Second
	// maxHeld bounds the lookups holding at once, one per session: requests
	// of the same session share its lookup, so this is not a bound on
	// requests. A lookup that finds every slot taken goes on without the
	// node, as for a node declared down. Ids that no node answering holds
	// take at most half of them (see lookupOnce).
	maxHeld = 1024
	// flapWindow and flapLosses: a node that lost its connection (closed or
	// refused) flapLosses times within flapWindow is not held for at its next
	// loss. Why: holding costs every request with a session up to
	// RestartHold; worth it for a restart now and then, not for a node that
	// keeps dropping (a crash loop, a flaky link), where requests would wait
	// nearly all the time. Such a node is declared down at once; PHP skips it
	// too, and each session's first request after its return repairs it, as
	// after any outage. The rule lifts by itself once flapWindow passes with
	// fewer losses.
	flapWindow = 30 * time.Second
	flapLosses = 2
)

// Node states (NodeStatus.State).
const (
	NodeUp         = "up"
	NodeRestarting = "restarting" // lost (connection closed, refused or unanswered) less than RestartHold ago: requests with a session wait for it
	NodeDown       = "down"       // lookups skip it (or try it only when that costs no waiting) and nobody waits for it
)

// node is one memcached server and what is known about it.
type node struct {
	addr     string        // as configured
	dialAddr string        // addr resolved once (New), for the pool's dials
	meta     chan metaConn // idle connections: the node's one pool (see meta.go)
	batch    batcher       // lookups waiting to go together (see batch.go)
	up       atomic.Bool   // false: skipped by lookups until the watcher sees it again
	// refused: down, and the last attempt was refused at once (the host is
	// there, memcached is not listening: typically restarting). Lookups still
	// try such a node, because an attempt costs no waiting and the moment it
	// accepts again it is empty and must be repaired before PHP reads it —
	// before the watcher has noticed it is back.
	refused atomic.Bool
	// gen counts the changes observe recorded (up, down, restarted). An
	// operation remembers it when it begins: if it fails after the node came
	// back, the failure belongs to the outage before (see observe).
	gen atomic.Uint64

	mu        sync.Mutex // guards the fields below
	watchConn net.Conn   // the watcher's idle connection, nil while it is not idling
	downSince time.Time  // when it last went down; zero while up
	// silentSince is when it stopped answering, as far as known: downSince,
	// or earlier when the watcher's probe had waited for an answer.
	silentSince time.Time
	back        chan struct{}         // closed when it comes back up; nil while up
	holdable    bool                  // requests may be held for this outage: it began with the connection closed or refused, and the node is not flapping
	declared    bool                  // this outage outlasted RestartHold and was logged
	lost        [flapLosses]time.Time // the latest losses, newest first
	stats       nodeStats             // from the last `stats` seen
	started     time.Time             // process start derived from uptime, zero if never seen
	seenAt      time.Time
	// upSince is when the node last restarted or came back up; zero if
	// neither was seen. Until Lifetime after it, the node may lack sessions
	// written elsewhere before and unused since, so it cannot vouch that a
	// session does not exist (see Store.vouched).
	upSince     time.Time
	latency     time.Duration // of the last `stats`
	losses      int
	restarts    int
	lastRestart time.Time
	lastErr     string

	resync atomic.Bool // it restarted, came back or joined: copy the sessions it lacks (resync.go)
}

// nodeStats are the `stats` figures sessiongate reads.
type nodeStats struct {
	pid, uptime, flushes           int64
	items, evictions, bytes, limit int64
}

func parseStats(st map[string]string) nodeStats {
	v := func(k string) int64 { n, _ := strconv.ParseInt(st[k], 10, 64); return n }
	return nodeStats{pid: v("pid"), uptime: v("uptime"), flushes: v("cmd_flush"), items: v("curr_items"),
		evictions: v("evictions"), bytes: v("bytes"), limit: v("limit_maxbytes")}
}

// NodeStatus is the state of one memcached node, for status pages.
type NodeStatus struct {
	Addr  string
	State string // NodeUp, NodeRestarting or NodeDown
	Up    bool   // State == NodeUp
	// Losses counts the times the node went from up to down: its connection
	// closed or was refused, or it did not answer within Timeout. A loss by
	// itself is not a restart (a pause or a network blip keeps the data).
	Losses int
	// Restarts counts restarts seen: the pid or the uptime changed, or the
	// node was flushed. Each one means the node's data is gone.
	Restarts    int
	LastRestart time.Time // zero if none
	Pid         int64     // from the last `stats` seen, 0 if never seen
	Uptime      time.Duration
	Latency     time.Duration // of the watcher's last `stats`
	Items       int64         // curr_items
	Evictions   int64
	Bytes       int64
	LimitBytes  int64
	LastError   string // why it was last marked down; empty while up
}

// Epoch is the store's node epoch: it changes whenever a node is marked
// down, comes back or is found restarted. Read it before a Check, and ask
// FaultSince once PHP has answered.
func (s *Store) Epoch() uint64 { return s.epoch.Load() }

// FaultSince reports whether a node failed, restarted or came back since
// Epoch returned epoch. While the epoch is unchanged it peeks at the
// nodes' idle connections (peekNodes), since a node killed a moment ago
// may not have been seen by its watcher yet while PHP already met it: a
// pecl memcached request answers 1-2 ms after meeting a dead node, within
// the interval at which cache hits peek. Call it only for an answer that
// looks lost: it costs two system calls per node.
func (s *Store) FaultSince(epoch uint64) bool {
	if s.epoch.Load() != epoch {
		return true
	}
	s.peekNodes()
	return s.epoch.Load() != epoch
}

// Nodes reports every node's state, in Options.Servers order.
func (s *Store) Nodes() []NodeStatus {
	now := s.now()
	out := make([]NodeStatus, len(s.nodes))
	for i, n := range s.nodes {
		_, _, restarting := s.restarting(n)
		n.mu.Lock()
		st := NodeStatus{Addr: n.addr, State: NodeDown, Up: n.up.Load(), Losses: n.losses, Restarts: n.restarts,
			LastRestart: n.lastRestart, Pid: n.stats.pid, Uptime: time.Duration(n.stats.uptime) * time.Second,
			Latency: n.latency, Items: n.stats.items, Evictions: n.stats.evictions, Bytes: n.stats.bytes,
			LimitBytes: n.stats.limit, LastError: n.lastErr}
		switch {
		case st.Up:
			st.State = NodeUp
			if !n.seenAt.IsZero() {
				st.Uptime += now.Sub(n.seenAt).Truncate(time.Second)
			}
		case restarting:
			st.State = NodeRestarting
		}
		n.mu.Unlock()
		out[i] = st
	}
	return out
}

// observe is the one place node state changes; st is what `stats` said, nil
// when the node failed. A restart — the pid changed, the process start
// derived from uptime moved, or cmd_flush grew: the data is gone — and every
// up/down transition bump the store epoch (a node that was unreachable may
// have missed writes), drop pooled connections (they may belong to the old
// process), and wake the watcher when a node is found down so that it
// re-verifies the node. A failure (st nil) of an operation that began at
// generation gen, when n is up at a later one, is dropped: typically a
// connect refused while n restarted whose error is handled just after the
// watcher saw n back; marking n down again would begin a second outage —
// counted towards flapping, its verifications dropped — for nothing.
func (s *Store) observe(n *node, st *nodeStats, reason error, gen uint64) {
	up := st != nil
	now := s.now()
	n.mu.Lock()
	if !up && n.up.Load() && n.gen.Load() != gen {
		n.mu.Unlock()
		return
	}
	if !up {
		// A timeout on a node down since it closed or refused connections
		// (restarting, typically) is most likely a loaded machine (a connect
		// not scheduled within Timeout), not a hang: lookups keep asking it
		// for RestartHold, since the moment it accepts again it is empty and
		// PHP reads it, and for a flapping node (not held for) only they
		// repair it first. Seen in TestBackToBackRestartsNoLoss at load
		// average 15: skipped after one timeout, the node was back 376 ms
		// before the watcher saw it, and PHP read it empty meanwhile. Later
		// timeouts mean the host is gone: then it is skipped, at no cost.
		keep := !n.up.Load() && n.refused.Load() && isTimeout(reason) && now.Sub(n.downSince) < s.restartHold
		if !keep {
			n.refused.Store(!isTimeout(reason))
		}
	}
	wasUp := n.up.Swap(up)
	restarted := false
	var resumedFrom time.Time
	var outage time.Duration // how long it was down, when it comes back
	if up && st.pid > 0 {
		started := now.Add(-time.Duration(st.uptime) * time.Second)
		restarted = n.stats.pid > 0 &&
			(st.pid != n.stats.pid || started.Sub(n.started) > restartSlack || st.flushes > n.stats.flushes)
		n.stats, n.started, n.seenAt = *st, started, now
	}
	if restarted || wasUp != up {
		n.gen.Add(1)
	}
	if restarted {
		n.restarts++
		n.lastRestart = now
		s.forgetReturn(n) // nothing queued survived it, and its CAS count began again
	}
	if restarted || !wasUp && up {
		n.upSince = now
	}
	if up {
		n.lastErr = ""
		n.refused.Store(false)
	} else if reason != nil {
		n.lastErr = reason.Error()
	}
	switch {
	case wasUp && !up:
		n.losses++
		// Held for, unless the node is flapping: a restart (the connection
		// closed or refused) — empty, it must be repaired before PHP reads
		// it — and a hang (a timeout) as well: while a node does not
		// answer, every PHP request that reaches it leaves lock commands
		// queued there, which run when it resumes, for requests long gone
		// (resume.go); held here, a session's requests reach PHP after
		// those locks are released. (PHP waits for a hung node anyway: its
		// writes go to every copy.) Decided once per outage: a lookup
		// timing out on the node later must not end the hold.
		n.holdable = n.lost[flapLosses-1].IsZero() || now.Sub(n.lost[flapLosses-1]) > flapWindow
		if n.refused.Load() {
			// Only losses that requests were (or could be) held for count
			// towards flapping: a node slow to answer on a loaded machine
			// must not lose the hold for its next restart.
			copy(n.lost[1:], n.lost[:])
			n.lost[0] = now
		}
		n.downSince, n.back, n.declared = now, make(chan struct{}), false
		n.silentSince = now
		if h := (*hungError)(nil); errors.As(reason, &h) {
			// The watcher's probe went unanswered that long first: an
			// idle node's hang is noticed late, and it counts.
			n.silentSince = now.Add(-h.waited)
		}
	case !wasUp && up:
		outage = now.Sub(n.silentSince)
		// Back without a restart: what PHP sent it meanwhile and gave up
		// on may run now (resume.go) — if it was away long enough for PHP
		// to give up, stallMin as for a stall. Back sooner, a lookup timed
		// out on a loaded machine and the node never stopped: PHP's writes
		// there since are its newest copies, and taken for replays a
		// repair may put older ones over them (the likely cause of lost
		// updates right after "copies=1 stale=1" repairs in the steady
		// phase of TestZeroLossUnderFaults at load 14-21). At load 13-14
		// such outages lasted 13-141 ms there, the 1 s pause 849-970 ms.
		if !restarted && outage >= stallMin {
			resumedFrom = n.downSince // what it was sent meanwhile may run now
			s.noteReturn(n)           // before the held requests wake (adopt)
		}
		if n.back != nil {
			close(n.back)
		}
		n.downSince, n.back = time.Time{}, nil
		select {
		case s.returned <- struct{}{}:
		default: // a re-check is pending already
		}
	}
	wc, flapping := n.watchConn, wasUp && !up && n.refused.Load() && !n.holdable
	n.mu.Unlock()
	if !resumedFrom.IsZero() {
		s.noteResumed(n, resumedFrom)
	}

	if wasUp == up && !restarted {
		return
	}
	s.epoch.Add(1)
	if restarted || !wasUp && up {
		s.needResync(n)
	}
	drainMeta(n) // idle connections only
	switch {
	case !up:
		if wc != nil {
			wc.SetReadDeadline(time.Unix(1, 0)) // wake the watcher to redial
		}
		if wasUp && !flapping {
			s.log.Warn("memcached node down", "node", n.addr, "error", reason)
		} else if flapping {
			// The message stays "memcached node down" for those who match it.
			s.log.Warn("memcached node down", "node", n.addr, "error", reason,
				"flapping", fmt.Sprintf("lost %d times within %v: requests do not wait for it", flapLosses+1, flapWindow))
		}
	case restarted:
		s.log.Warn("memcached node restarted: earlier verifications dropped", "node", n.addr,
			"pid", st.pid, "uptime", st.uptime, "why", "pid or uptime changed, or flushed: its data is gone")
	default:
		s.log.Info("memcached node up", "node", n.addr, "pid", st.pid, "down_for", outage.Round(time.Millisecond))
	}
}

func drainMeta(n *node) {
	for {
		select {
		case mc := <-n.meta:
			mc.c.Close()
		default:
			return
		}
	}
}

// failed marks n down after a failed operation.
func (s *Store) failed(n *node, err error) {
	s.observe(n, nil, err, n.gen.Load())
}

// watch keeps one connection open to n after reading `stats` on it, and asks
// `stats` again on it every statsInterval (see idle). Then it redials every
// redialPause until `stats` works again.
func (s *Store) watch(ctx context.Context, n *node) {
	backoff := time.Duration(0) // the first redial after losing a connection is immediate
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		if backoff > 0 {
			t.Reset(backoff)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		start := time.Now()
		c, r, st, err := s.dialStats(ctx, n.addr)
		if isTimeout(err) && ctx.Err() == nil {
			// Hung: rather than polling it, wait on one connection for its answer,
			// to see the node the moment it resumes (PHP reads it at once, and the
			// copies it missed meanwhile must be put right first; see reconcile).
			s.failed(n, err)
			start = time.Now()
			c, r, st, err = s.awaitStats(ctx, n.addr)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.failed(n, err)
			backoff = redialPause
			if !isTimeout(err) {
				// The host is there and the port closed: memcached is restarting.
				// Poll fastest while requests are held for it.
				if _, _, ok := s.restarting(n); ok {
					backoff = restartPoll
				} else {
					s.declareDown(n)
				}
			}
			continue
		}
		s.probed(n, st, time.Since(start))
		err = s.idle(ctx, n, c, r)
		if ctx.Err() != nil {
			return
		}
		s.watchLost(n, err)
		backoff = 0
	}
}

// watchLost records that n's watcher connection ended for err — also when
// a Check's peek found it closed before the watcher ran (peekNodes) —
// unless n is marked down already: then a failed operation woke the watcher
// and already said why.
func (s *Store) watchLost(n *node, err error) {
	if n.up.Load() {
		s.failed(n, fmt.Errorf("watch connection: %w", err))
	}
}

// probed records an answer to `stats` that took rtt.
func (s *Store) probed(n *node, raw map[string]string, rtt time.Duration) {
	st := parseStats(raw)
	n.mu.Lock()
	n.latency = rtt
	n.mu.Unlock()
	if s.probedHook != nil {
		s.probedHook(n.addr, rtt)
	}
	s.observe(n, &st, nil, n.gen.Load())
}

// declareDown logs, once per outage, that a node lost while requests could
// be held for it stayed away past RestartHold.
func (s *Store) declareDown(n *node) {
	n.mu.Lock()
	log := n.holdable && !n.declared && n.back != nil && s.restartHold > 0
	n.declared = n.declared || log
	n.mu.Unlock()
	if log {
		s.log.Warn("memcached node declared down: not back within restart_hold, requests no longer wait for it",
			"node", n.addr, "restart_hold", s.restartHold)
	}
}

// dialStats opens a connection to addr and reads `stats` on it.
func (s *Store) dialStats(ctx context.Context, addr string) (net.Conn, *bufio.Reader, map[string]string, error) {
	c, err := s.dial(ctx, addr)
	if err != nil {
		return nil, nil, nil, err
	}
	r := bufio.NewReaderSize(c, 512)
	if _, err = io.WriteString(c, "stats\r\n"); err == nil {
		var st map[string]string
		if st, err = readStats(r); err == nil {
			return c, r, st, nil
		}
	}
	c.Close()
	return nil, nil, nil, err
}

// awaitStats is dialStats without a deadline on the answer: it returns when the
// node answers, the connection breaks or ctx ends. Connecting is still bounded.
func (s *Store) awaitStats(ctx context.Context, addr string) (net.Conn, *bufio.Reader, map[string]string, error) {
	c, err := s.dial(ctx, addr)
	if err != nil {
		return nil, nil, nil, err
	}
	r := bufio.NewReaderSize(c, 512)
	if err = c.SetDeadline(time.Time{}); err == nil {
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
		defer stop()
		if _, err = io.WriteString(c, "stats\r\n"); err == nil {
			var st map[string]string
			if st, err = readStats(r); err == nil {
				return c, r, st, nil
			}
		}
	}
	c.Close()
	return nil, nil, nil, err
}

// idle keeps the connection c to n until it ends, and returns why. memcached
// never writes unprompted, so a blocked read returns only when the process
// exits (EOF, before a restarted process can accept), the connection breaks,
// a lookup found the node failing (observe sets a past deadline), ctx ends —
// or stallProbe passes, when it sends a no-op, and every statsInterval asks
// `stats` instead: no answer within statsInterval is a hang; an answer that
// took stallMin or more was a stall (see noteResumed).
func (s *Store) idle(ctx context.Context, n *node, c net.Conn, r *bufio.Reader) error {
	defer c.Close()
	n.mu.Lock()
	n.watchConn = c
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		n.watchConn = nil
		n.mu.Unlock()
	}()
	defer func() {
		// Runs first, while c is still published: as if the watcher were
		// not scheduled yet (see peekNodes).
		if h := s.idleEnded.Load(); h != nil {
			(*h)()
		}
	}()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for i := 1; ; i++ {
		if err := c.SetDeadline(time.Now().Add(stallProbe)); err != nil {
			return err
		}
		// After setting the deadline, which may have replaced the past one
		// observe set to wake us: observe marks the node down before that.
		if !n.up.Load() || ctx.Err() != nil {
			return errors.New("marked down")
		}
		_, err := r.ReadByte()
		if err == nil {
			return errProtocol
		}
		if !isTimeout(err) || !n.up.Load() || ctx.Err() != nil {
			return err
		}
		// Bounded by statsInterval rather than Timeout: lookups, bounded by
		// Timeout, notice a hang under traffic; this bound only has to
		// notice one without traffic, and must not take a node that is slow
		// for a moment on a loaded machine for a hung one.
		start := time.Now()
		if err := c.SetDeadline(start.Add(max(s.timeout, statsInterval))); err != nil {
			return err
		}
		if i%int(statsInterval/stallProbe) != 0 {
			if _, err := io.WriteString(c, "mn\r\n"); err != nil {
				return err
			}
			if line, err := readLine(r); err != nil || line != "MN" {
				return cmp.Or(probeErr(err, start), errProtocol)
			}
			if rtt := time.Since(start); rtt >= stallMin && n.up.Load() {
				s.noteReturn(n)
				s.noteResumed(n, start)
			}
			continue
		}
		if _, err := io.WriteString(c, "stats\r\n"); err != nil {
			return err
		}
		st, err := readStats(r)
		if err != nil {
			return probeErr(err, start)
		}
		if !n.up.Load() {
			return errors.New("marked down")
		}
		rtt := time.Since(start)
		s.probed(n, st, rtt)
		if rtt >= stallMin {
			s.noteReturn(n)
			s.noteResumed(n, start)
		}
	}
}

// restarting reports whether requests are held for n: it went down less
// than RestartHold ago — closing or refusing connections (a restart,
// typically: it accepts again soon, empty), or not answering (a hang: see
// observe) — and it is not flapping (see flapWindow). If so, it returns a
// channel closed when n is back up and how long to wait for that at most.
func (s *Store) restarting(n *node) (back <-chan struct{}, left time.Duration, ok bool) {
	if n.up.Load() {
		return nil, 0, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	left = s.restartHold - s.now().Sub(n.downSince)
	if n.back == nil || !n.holdable || left <= 0 {
		return nil, 0, false
	}
	return n.back, left, true
}

// hold waits, for a lookup that some node answered, until every node in idx
// (those that did not answer the lookup) that is restarting is back up, at most
// until RestartHold after each went down, and at most until ctx ends, if
// fewer than slots (at most maxHeld) lookups are holding. It reports how
// long it waited, and whether a node came back, which makes the lookup worth
// repeating (and its repair the one PHP reads).
//
// Why wait at all: a request forwarded meanwhile could reach PHP just after
// the node is back, empty and not yet repaired, and PHP would read the empty
// copy (the restart loss) or fail. Waiting lets the repair come first.
//
// ctx is that of the request that started the lookup: when it ends, the
// requests sharing the lookup go on without the node, as when the hold
// expires.
func (s *Store) hold(ctx context.Context, idx []int, slots int) (waited time.Duration, back bool) {
	type wait struct {
		back <-chan struct{}
		left time.Duration
	}
	var waits []wait
	for _, i := range idx {
		n := s.nodes[i]
		if n.up.Load() {
			back = true // returned since the lookup: look again
		} else if b, left, ok := s.restarting(n); ok {
			waits = append(waits, wait{b, left})
		}
	}
	if len(waits) == 0 {
		return 0, back
	}
	if !s.takeHold(slots) {
		return 0, back
	}
	defer func() { <-s.holds }()
	start := time.Now()
	for _, w := range waits {
		t := time.NewTimer(max(0, w.left-time.Since(start)))
		select {
		case <-w.back:
			back = true
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			break
		}
	}
	return time.Since(start), back
}

// takeHold takes one of the hold slots if fewer than slots are taken; the
// caller gives it back (<-s.holds). A lookup that finds none free goes on
// without waiting, counted in holdsFull.
func (s *Store) takeHold(slots int) bool {
	if len(s.holds) < slots {
		select {
		case s.holds <- struct{}{}:
			return true
		default:
		}
	}
	s.holdsFull.Add(1)
	return false
}

// outcome is one node's answer in a fanout.
type outcome[T any] struct {
	v   T
	err error
}

var errSkipped = errors.New("sessionstore: node skipped (known down)")

// fanout runs op on the nodes listed in idx in parallel and waits for all of them.
// Every operation is bounded by Timeout through the clients' socket deadlines, so a
// hung node costs one Timeout, and no goroutine outlives the call. The result is
// indexed like s.nodes; nodes not in idx get errSkipped. Failures other than a cache
// miss or "not stored" mark the node down.
func fanout[T any](s *Store, idx []int, op func(*node) (T, error)) []outcome[T] {
	out := make([]outcome[T], len(s.nodes))
	for i := range out {
		out[i].err = errSkipped
	}
	gens := make([]uint64, len(s.nodes))
	var wg sync.WaitGroup
	for _, i := range idx {
		gens[i] = s.nodes[i].gen.Load()
		wg.Go(func() {
			n := s.nodes[i]
			v, err := op(n)
			if err != nil && !isTimeout(err) && !answered(err) {
				// A pooled connection may belong to a process that has since
				// restarted unnoticed: drop them and try once on a fresh one.
				drainMeta(n)
				v, err = op(n)
			}
			out[i] = outcome[T]{v, err}
		})
	}
	wg.Wait()
	for _, i := range idx {
		if err := out[i].err; err != nil && !answered(err) {
			if s.beforeFailed != nil {
				s.beforeFailed(i)
			}
			s.observe(s.nodes[i], nil, err, gens[i])
		}
	}
	return out
}

// answered reports whether err is an answer of the node (a miss, an add or
// compare-and-swap refused) rather than its failure.
func answered(err error) bool {
	return errors.Is(err, errMiss) || errors.Is(err, errNotStored) || errors.Is(err, errCASConflict)
}

// isTimeout reports whether err means the node kept us waiting (hung), as
// opposed to failing at once (refused, reset, EOF: typically restarting).
// hungError is a watcher's probe that got no answer: the node had not
// answered for waited when it was marked down (observe counts its outage
// from then).
type hungError struct {
	waited time.Duration
	err    error
}

func (e *hungError) Error() string { return e.err.Error() }
func (e *hungError) Unwrap() error { return e.err }

// probeErr is err, as a hungError if it is the timeout of a probe sent at
// start.
func probeErr(err error, start time.Time) error {
	if !isTimeout(err) {
		return err
	}
	return &hungError{waited: time.Since(start), err: err}
}

func isTimeout(err error) bool {
	if err == nil {
		return false // and no allocation for errors.As's target
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
