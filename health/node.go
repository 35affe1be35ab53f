package health

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// Defaults applied by NodeOptions when a field is zero.
const (
	DefaultNodeInterval = time.Second
	DefaultNodeTimeout  = 100 * time.Millisecond
)

// NodeReporter receives the result of every memcached probe
// (sessionstore.Store implements it). pid and uptime (seconds) are 0 when
// up is false.
type NodeReporter interface {
	ObserveNode(addr string, up bool, pid, uptime int64)
}

// ProbeFunc returns the raw `stats` of the memcached node at addr
// (sessionstore.Store.NodeStats). It must honour ctx.
type ProbeFunc func(ctx context.Context, addr string) (map[string]string, error)

// NodeOptions configures memcached probing. Zero fields take the defaults.
type NodeOptions struct {
	Interval time.Duration // between probes; default 1s
	Timeout  time.Duration // per probe; default 100ms
}

func (o NodeOptions) withDefaults() NodeOptions {
	if o.Interval <= 0 {
		o.Interval = DefaultNodeInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultNodeTimeout
	}
	return o
}

// NodeStatus is the observed state of one memcached node.
type NodeStatus struct {
	Addr        string
	Up          bool
	Latency     time.Duration // of the last probe
	LastCheck   time.Time     // end of the last probe; zero before the first
	Uptime      time.Duration // as reported by the last successful probe
	Pid         int64
	Items       int64 // curr_items
	Evictions   int64
	BytesUsed   int64 // bytes
	LimitBytes  int64 // limit_maxbytes
	Restarts    int   // restarts seen since the checker started
	LastRestart time.Time
	LastError   string // why the last probe failed; "" if it passed
}

// NodeChecker probes memcached nodes, detects restarts and tells a
// NodeReporter about every probe.
type NodeChecker struct {
	probe ProbeFunc
	r     NodeReporter
	log   *slog.Logger
	clock Clock

	mu    sync.Mutex // guards opts, nodes, list, loops and every *node's fields
	opts  NodeOptions
	nodes map[string]*node
	list  []*node // in address order as given, for Status
	loops loops
}

// node is the state of one memcached node; guarded by NodeChecker.mu.
type node struct {
	NodeStatus
	probed bool // at least one probe finished
	seen   bool // at least one probe succeeded
}

// nodeEvent is what one probe changed, for logging.
type nodeEvent int

const (
	nodeSame nodeEvent = iota
	nodeUp
	nodeDown
	nodeRestarted
)

// apply records one probe result taken at now and says what changed, with
// the reason for nodeDown and nodeRestarted.
func (n *node) apply(stats map[string]string, err error, now time.Time) (nodeEvent, string) {
	n.LastCheck = now
	if err != nil {
		n.LastError = err.Error()
		first := !n.probed
		n.probed = true
		if n.Up || first {
			n.Up = false
			return nodeDown, n.LastError
		}
		return nodeSame, ""
	}
	pid, uptime := statInt(stats, "pid"), statInt(stats, "uptime")
	var why string
	switch {
	case !n.seen: // first contact: nothing to compare with
	case pid != n.Pid:
		why = fmt.Sprintf("pid changed from %d to %d", n.Pid, pid)
	case uptime < int64(n.Uptime/time.Second):
		why = fmt.Sprintf("uptime went backwards from %ds to %ds", int64(n.Uptime/time.Second), uptime)
	case !n.Up:
		// It may not have restarted, but writes went elsewhere while it
		// was unreachable, so its copies are just as untrustworthy.
		why = "came back after being down"
	}
	wasUp := n.Up
	n.Up, n.probed, n.seen, n.LastError = true, true, true, ""
	n.Pid, n.Uptime = pid, time.Duration(uptime)*time.Second
	n.Items, n.Evictions = statInt(stats, "curr_items"), statInt(stats, "evictions")
	n.BytesUsed, n.LimitBytes = statInt(stats, "bytes"), statInt(stats, "limit_maxbytes")
	if why != "" {
		n.Restarts++
		n.LastRestart = now
		return nodeRestarted, why
	}
	if !wasUp {
		return nodeUp, ""
	}
	return nodeSame, ""
}

// statInt returns stats[key] as a number, 0 if absent or malformed.
func statInt(stats map[string]string, key string) int64 {
	v, _ := strconv.ParseInt(stats[key], 10, 64)
	return v
}

// NewNodeChecker returns a checker for the memcached nodes at addrs, all
// initially down until their first probe. probe and r must not be nil; a nil
// logger discards logs.
func NewNodeChecker(o NodeOptions, addrs []string, probe ProbeFunc, r NodeReporter, logger *slog.Logger, opts ...Option) *NodeChecker {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &NodeChecker{probe: probe, r: r, log: logger, clock: buildOptions(opts).clock}
	c.Update(o, addrs)
	return c
}

// Run probes every node in its own goroutine until ctx ends, and returns
// once all of them have. Nodes added by Update while Run is active get their
// goroutine at once. Run must not be called concurrently with itself.
func (c *NodeChecker) Run(ctx context.Context) {
	c.loops.run(ctx, &c.mu, func() {
		for _, n := range c.list {
			c.startLocked(n)
		}
	})
}

func (c *NodeChecker) startLocked(n *node) {
	c.loops.start(n.Addr, func(ctx context.Context) { c.loop(ctx, n) })
}

// Update replaces the options and node list. Nodes still listed keep their
// state; removed ones stop being probed and reported before Update returns.
func (c *NodeChecker) Update(o NodeOptions, addrs []string) {
	c.mu.Lock()
	c.opts = o.withDefaults()
	nodes := make(map[string]*node, len(addrs))
	list := make([]*node, 0, len(addrs))
	for _, a := range addrs {
		if nodes[a] != nil {
			continue // addresses are unique; config validation reports duplicates
		}
		n := c.nodes[a]
		if n == nil {
			n = &node{NodeStatus: NodeStatus{Addr: a}}
			c.startLocked(n)
		}
		nodes[a] = n
		list = append(list, n)
	}
	var stopped []<-chan struct{}
	for a := range c.nodes {
		if nodes[a] == nil {
			if done := c.loops.stop(a); done != nil {
				stopped = append(stopped, done)
			}
		}
	}
	c.nodes, c.list = nodes, list
	c.mu.Unlock()
	waitAll(stopped)
}

// loop probes one node until ctx ends.
func (c *NodeChecker) loop(ctx context.Context, n *node) {
	for {
		c.check(ctx, n)
		c.mu.Lock()
		d := c.opts.Interval
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-c.clock.After(d):
		}
	}
}

// check runs one probe of n and records and reports its result.
func (c *NodeChecker) check(ctx context.Context, n *node) {
	c.mu.Lock()
	timeout := c.opts.Timeout
	c.mu.Unlock()

	start := c.clock.Now()
	pctx, cancel := context.WithTimeout(ctx, timeout)
	stats, err := c.probe(pctx, n.Addr)
	cancel()
	end := c.clock.Now()

	c.mu.Lock()
	defer c.mu.Unlock()
	if ctx.Err() != nil {
		return // shutdown or removal is not a failure
	}
	n.Latency = end.Sub(start)
	switch ev, why := n.apply(stats, err, end); ev {
	case nodeUp:
		c.log.Info("memcached node up", "addr", n.Addr, "pid", n.Pid, "uptime", n.Uptime)
	case nodeDown:
		c.log.Warn("memcached node down", "addr", n.Addr, "reason", why)
	case nodeRestarted:
		c.log.Warn("memcached node restarted", "addr", n.Addr, "reason", why, "pid", n.Pid, "uptime", n.Uptime, "restarts", n.Restarts)
	}
	if n.Up {
		c.r.ObserveNode(n.Addr, true, n.Pid, int64(n.Uptime/time.Second))
	} else {
		c.r.ObserveNode(n.Addr, false, 0, 0)
	}
}

// Status returns the observed state of every node, in the order given.
func (c *NodeChecker) Status() []NodeStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]NodeStatus, 0, len(c.list))
	for _, n := range c.list {
		out = append(out, n.NodeStatus)
	}
	return out
}
