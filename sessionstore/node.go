package sessionstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// Watcher redial backoff bounds.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
	// restartPoll is the redial period for a node that refuses connections
	// during its first Timeout down: lookups are waiting for it.
	restartPoll = 5 * time.Millisecond
	// restartSlack absorbs the one-second granularity of memcached's uptime when
	// comparing start times derived from two observations.
	restartSlack = 2 * time.Second
)

// node is one memcached server and what is known about it.
type node struct {
	addr   string
	client *memcache.Client
	meta   chan metaConn // idle meta/stats connections
	up     atomic.Bool   // false: skipped by lookups until the watcher (or ObserveNode) sees it again
	// refused: down, and the last attempt was refused at once (the host is
	// there, memcached is not listening: typically restarting). Lookups still
	// try such a node, because an attempt costs no waiting and the moment it
	// accepts again it is empty and must be repaired before PHP reads it —
	// before the watcher has noticed it is back.
	refused atomic.Bool

	mu          sync.Mutex    // guards the fields below
	watchConn   net.Conn      // the watcher's idle connection, nil while it is not idling
	downSince   time.Time     // when it last went down; zero while up
	back        chan struct{} // closed when it comes back up; nil while up
	pid         int64
	started     time.Time // process start derived from uptime, zero if never seen
	uptime      time.Duration
	seenAt      time.Time
	restarts    int
	lastRestart time.Time
	lastErr     string
}

// NodeStatus is the state of one memcached node, for status pages.
type NodeStatus struct {
	Addr        string
	Up          bool
	Restarts    int       // restarts seen: pid changed or uptime went backwards
	LastRestart time.Time // zero if none
	Pid         int64     // from the last `stats` seen, 0 if never seen
	Uptime      time.Duration
	LastError   string // why it was last marked down; empty while up
}

// Nodes reports every node's state, in Options.Servers order.
func (s *Store) Nodes() []NodeStatus {
	now := s.now()
	out := make([]NodeStatus, len(s.nodes))
	for i, n := range s.nodes {
		n.mu.Lock()
		st := NodeStatus{Addr: n.addr, Up: n.up.Load(), Restarts: n.restarts, LastRestart: n.lastRestart,
			Pid: n.pid, Uptime: n.uptime, LastError: n.lastErr}
		if st.Up && !n.seenAt.IsZero() {
			st.Uptime += now.Sub(n.seenAt).Truncate(time.Second)
		}
		n.mu.Unlock()
		out[i] = st
	}
	return out
}

// ObserveNode lets an external health checker report what it saw (up/down, pid,
// uptime in seconds; 0 = unknown). A pid change or uptime going backwards counts as a
// restart; a restart and any down->up or up->down transition invalidate every earlier
// verification (a node that was unreachable may have come back empty).
func (s *Store) ObserveNode(addr string, up bool, pid, uptime int64) {
	if n := s.byAddr[addr]; n != nil {
		var reason error
		if !up {
			reason = errors.New("reported down by health check")
		}
		s.observe(n, up, pid, uptime, reason)
	}
}

// observe is the one place node state changes. It bumps the store epoch on every
// transition or restart, drops pooled connections (they belong to the old process),
// and wakes the watcher when a node is found down so that it re-verifies the node.
func (s *Store) observe(n *node, up bool, pid, uptime int64, reason error) {
	now := s.now()
	n.mu.Lock()
	wasUp := n.up.Swap(up)
	restarted := false
	if up && pid > 0 {
		started := now.Add(-time.Duration(uptime) * time.Second)
		restarted = n.pid > 0 && (pid != n.pid || started.Sub(n.started) > restartSlack)
		n.pid, n.started, n.uptime, n.seenAt = pid, started, time.Duration(uptime)*time.Second, now
	}
	if restarted {
		n.restarts++
		n.lastRestart = now
	}
	if up {
		n.lastErr = ""
		n.refused.Store(false)
	} else if reason != nil {
		n.lastErr = reason.Error()
	}
	switch {
	case wasUp && !up:
		n.downSince, n.back = now, make(chan struct{})
	case !wasUp && up:
		if n.back != nil {
			close(n.back)
		}
		n.downSince, n.back = time.Time{}, nil
		select {
		case s.returned <- struct{}{}:
		default: // a re-check is pending already
		}
	}
	wc := n.watchConn
	n.mu.Unlock()

	if wasUp == up && !restarted {
		return
	}
	s.epoch.Add(1)
	n.client.Close() // idle connections only; the client stays usable
	drainMeta(n)
	switch {
	case !up:
		if wc != nil {
			wc.SetReadDeadline(time.Unix(1, 0)) // wake the watcher to redial
		}
		if wasUp {
			s.log.Warn("memcached node down", "node", n.addr, "error", reason)
		}
	case restarted:
		s.log.Warn("memcached node restarted: earlier verifications dropped", "node", n.addr, "pid", pid, "uptime", uptime)
	default:
		s.log.Info("memcached node up", "node", n.addr, "pid", pid)
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
	n.refused.Store(!isTimeout(err))
	s.observe(n, false, 0, 0, err)
}

// watch keeps one idle connection open to n after reading `stats` on it. memcached
// never writes unprompted, so the blocked read returns only when the process exits
// (EOF, before a restarted process can accept), the connection breaks, a lookup found
// the node failing (observe sets a past deadline), or ctx ends. Then it redials with
// backoff until `stats` works again.
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
		c, r, st, err := s.dialStats(ctx, n.addr)
		if isTimeout(err) && ctx.Err() == nil {
			// Hung: rather than polling it, wait on one connection for its answer,
			// to see the node the moment it resumes (PHP reads it at once, and the
			// copies it missed meanwhile must be put right first; see reconcile).
			s.failed(n, err)
			c, r, st, err = s.awaitStats(ctx, n.addr)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.failed(n, err)
			backoff = min(max(2*backoff, minBackoff), maxBackoff)
			if !isTimeout(err) {
				// The host is there and the port closed: memcached is restarting. A
				// refused dial costs nothing, so keep the window in which a restarted,
				// empty node goes unnoticed (and unrepaired) short, and shortest
				// while lookups wait for it (see restarting).
				backoff = minBackoff
				if _, _, ok := s.restarting(n); ok {
					backoff = restartPoll
				}
			}
			continue
		}
		pid, _ := strconv.ParseInt(st["pid"], 10, 64)
		uptime, _ := strconv.ParseInt(st["uptime"], 10, 64)
		s.observe(n, true, pid, uptime, nil)
		err = s.idle(ctx, n, c, r)
		if ctx.Err() != nil {
			return
		}
		if n.up.Load() { // else a failed operation woke us and already said why
			s.failed(n, fmt.Errorf("watch connection: %w", err))
		}
		backoff = 0
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

// idle blocks until the connection c to n ends, and returns why.
func (s *Store) idle(ctx context.Context, n *node, c net.Conn, r *bufio.Reader) error {
	defer c.Close()
	if err := c.SetDeadline(time.Time{}); err != nil {
		return err
	}
	n.mu.Lock()
	n.watchConn = c
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		n.watchConn = nil
		n.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if !n.up.Load() { // marked down between stats and publishing watchConn: re-verify
		return errors.New("marked down")
	}
	_, err := r.ReadByte()
	if err == nil {
		err = errProtocol
	}
	return err
}

// restarting reports whether n is down after refusing connections for less
// than Timeout — most likely a restart, after which it accepts again,
// empty — and if so, a channel closed when it is back up and how long to wait
// for that at most.
//
// Why wait at all: a request forwarded meanwhile could reach PHP just after
// the node is back, empty and not yet repaired, and PHP would read the empty
// copy (the restart loss). Waiting lets the repair come first. The wait is
// bounded by Timeout, the most a dead node may add to a request, and is paid
// only during the first Timeout of an outage; a local memcached restart
// usually fits in it.
func (s *Store) restarting(n *node) (back <-chan struct{}, left time.Duration, ok bool) {
	if n.up.Load() || !n.refused.Load() {
		return nil, 0, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	left = s.timeout - s.now().Sub(n.downSince)
	if n.back == nil || left <= 0 {
		return nil, 0, false
	}
	return n.back, left, true
}

// awaitRestarts waits until every node in idx that is restarting is back up,
// at most until Timeout after each went down. It reports whether any
// came back.
func (s *Store) awaitRestarts(idx []int) bool {
	anyBack := false
	for _, i := range idx {
		back, left, ok := s.restarting(s.nodes[i])
		if !ok {
			continue
		}
		t := time.NewTimer(left)
		select {
		case <-back:
			anyBack = true
		case <-t.C:
		}
		t.Stop()
	}
	return anyBack
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
	var wg sync.WaitGroup
	for _, i := range idx {
		wg.Go(func() {
			n := s.nodes[i]
			v, err := op(n)
			if err != nil && !isTimeout(err) && !errors.Is(err, memcache.ErrCacheMiss) && !errors.Is(err, memcache.ErrNotStored) {
				// A pooled connection may belong to a process that has since
				// restarted unnoticed: drop them and try once on a fresh one.
				n.client.Close()
				v, err = op(n)
			}
			out[i] = outcome[T]{v, err}
		})
	}
	wg.Wait()
	for _, i := range idx {
		if err := out[i].err; err != nil && !errors.Is(err, memcache.ErrCacheMiss) && !errors.Is(err, memcache.ErrNotStored) {
			s.failed(s.nodes[i], err)
		}
	}
	return out
}

// isTimeout reports whether err means the node kept us waiting (hung), as
// opposed to failing at once (refused, reset, EOF: typically restarting).
func isTimeout(err error) bool {
	var cte *memcache.ConnectTimeoutError
	var ne net.Error
	return errors.As(err, &cte) || errors.As(err, &ne) && ne.Timeout()
}
