// Package metrics owns sessiongate's Prometheus instrumentation: the metric
// families, their registration on a caller-supplied registry, the per-request
// hooks the proxy and session layer call, and the scrape-time collector that
// reads backend and memcached state from a Source.
//
// Nothing here is global: every Metrics value has its own collectors, so tests
// and config reloads can build as many as they like on separate registries.
package metrics

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const namespace = "sessiongate"

// Session lookup outcomes, the values of session_lookups_total's outcome label.
const (
	OutcomeVerified        = "verified"
	OutcomeRepaired        = "repaired"
	OutcomeUnknownStripped = "unknown_stripped"
	OutcomeInvalidStripped = "invalid_stripped"
	OutcomeStoreDown       = "store_down"
	OutcomeCached          = "cached"
	OutcomeKilledStripped  = "killed_stripped" // killed through some instance: stripped, strict or not
)

// methods are the method label values; anything else is "other".
var methods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other"}

// codes are the code label values, indexed by status/100 - 1.
var codes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// Metrics holds sessiongate's collectors. Its methods are safe for
// concurrent use.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	retries  *prometheus.CounterVec
	lookups  *prometheus.CounterVec
	repairs  prometheus.Counter
	renewals prometheus.Counter
	kills    prometheus.Counter
	replays  prometheus.Counter
	// locks counts released session locks by reason: orphaned (the backend
	// died under the request holding it), stale (session.stale_lock_after) or
	// replayed (taken for nobody by a memcached node that resumed).
	locks      *prometheus.CounterVec
	memLatency *prometheus.HistogramVec
	// Requests held for a restarting memcached node (see Hold).
	held     prometheus.Counter
	holdTime prometheus.Histogram
	// The session queue at the edge (proxy/queue.go): how long requests
	// waited, and those refused (reason timeout or full).
	queueWait     prometheus.Histogram
	queueRejected *prometheus.CounterVec
	// accessDropped counts access log lines dropped because the writer
	// could not keep up.
	accessDropped prometheus.Counter
	// refused counts client connections and requests turned away at the
	// front door, by reason (see ClientRefused).
	refused *prometheus.CounterVec

	// outcomes holds the pre-resolved lookup counters; built in New, never written after.
	outcomes map[string]prometheus.Counter
	backends children[*backendChildren]
	nodes    children[prometheus.Observer]
	source   atomic.Pointer[sourceBox]
}

// backendChildren are one backend's pre-resolved series, so the hot path does
// no label hashing.
type backendChildren struct {
	requests [len(methods)][len(codes)]prometheus.Counter
	duration prometheus.Observer
	retries  prometheus.Counter
}

// New creates the collectors and registers them, together with the Go runtime
// and process collectors, on reg. Like MustRegister it panics if reg already
// holds any of them, so call it once per registry.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "requests_total",
			Help: "Client requests answered, by backend, method and status class.",
		}, []string{"backend", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "request_duration_seconds",
			Help:    "Time from receiving a request to the end of its response, by backend.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"backend"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "retries_total",
			Help: "Upstream attempts that failed on this backend and were retried on another.",
		}, []string{"backend"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "session_lookups_total",
			Help: "Session id checks by outcome.",
		}, []string{"outcome"}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "session_repairs_total",
			Help: "Session copies written onto memcached nodes that had lost them.",
		}),
		renewals: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "session_renewals_total",
			Help: "Session TTL renewals (touch on every node).",
		}),
		kills: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "session_kills_total",
			Help: "Sessions deleted through the admin API.",
		}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "session_replays_total",
			Help: "GET and HEAD requests sent to PHP again because PHP answered their live session with a new id while a memcached node failed, restarted or came back under the request (the first answer is dropped).",
		}),
		memLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "memcached_latency_seconds",
			Help:    "Round-trip time of memcached operations, by node.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"node"}),
		locks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "session_locks_released_total",
			Help: "Session locks released by sessiongate: orphaned = left by a request whose backend died under it; stale = held unchanged past session.stale_lock_after with no request of the session in flight here; replayed = taken, for requests that had failed over, by a memcached node that resumed after a hang.",
		}, []string{"reason"}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "session_queue_wait_seconds",
			Help:    "Time requests of a session waited at the edge for one of its requests to finish (session.max_in_flight), however the wait ended.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		queueRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "session_queue_rejected_total",
			Help: "Requests answered 503 by the session queue: timeout = waited session.queue_timeout; full = session.max_queue or session.max_waiters reached.",
		}, []string{"reason"}),
		accessDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "access_log_dropped_total",
			Help: "Access log lines dropped because the log writer could not keep up (requests never wait for it).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "client_refused_total",
			Help: "Client connections and requests refused at the front door: rate = 429 over limits.requests_per_second; " +
				"connections = closed over limits.connections_per_client; proxy_untrusted = a connection from outside " +
				"proxy_protocol.trusted; proxy_header = a missing, malformed or late PROXY protocol header.",
		}, []string{"reason"}),
		outcomes: make(map[string]prometheus.Counter),
		held: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "session_held_total",
			Help: "Requests with a session that waited for a restarting memcached node (connection lost less than " +
				"memcached.restart_hold ago) so that it could be repaired before PHP read it.",
		}),
		holdTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "session_hold_seconds",
			Help:    "How long held requests waited for a restarting memcached node (at most memcached.restart_hold).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30},
		}),
	}
	reg.MustRegister(m.queueWait, m.queueRejected)
	m.queueRejected.WithLabelValues("timeout")
	m.queueRejected.WithLabelValues("full")
	reg.MustRegister(m.locks, m.accessDropped, m.refused)
	for _, r := range RefusalReasons() {
		m.refused.WithLabelValues(r)
	}
	m.locks.WithLabelValues("orphaned")
	m.locks.WithLabelValues("stale")
	m.locks.WithLabelValues("replayed")
	for _, o := range []string{OutcomeVerified, OutcomeRepaired, OutcomeUnknownStripped,
		OutcomeInvalidStripped, OutcomeStoreDown, OutcomeCached, OutcomeKilledStripped} {
		m.outcomes[o] = m.lookups.WithLabelValues(o)
	}
	m.backends.make = m.newBackend
	m.nodes.make = func(addr string) prometheus.Observer { return m.memLatency.WithLabelValues(addr) }

	reg.MustRegister(m.requests, m.duration, m.retries, m.lookups, m.repairs, m.renewals,
		m.kills, m.replays, m.memLatency, m.held, m.holdTime, newSourceCollector(m),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// newBackend resolves every series of one backend. Creating them all up front
// also exports zeros for them, so rate() works from the first request.
func (m *Metrics) newBackend(name string) *backendChildren {
	b := &backendChildren{
		duration: m.duration.WithLabelValues(name),
		retries:  m.retries.WithLabelValues(name),
	}
	for i, meth := range methods {
		for j, code := range codes {
			b.requests[i][j] = m.requests.WithLabelValues(name, meth, code)
		}
	}
	return b
}

// Request records one answered client request. backend is the configured
// name of the backend that answered (label values must come from config, never
// from clients); method is the request method (classes GET, HEAD, POST, PUT,
// DELETE, OPTIONS, PATCH, other); a status outside 100..599 counts as 5xx.
func (m *Metrics) Request(backend, method string, status int, d time.Duration) {
	b := m.backends.get(backend)
	b.requests[methodIndex(method)][codeIndex(status)].Inc()
	b.duration.Observe(d.Seconds())
}

// Retry records that an attempt on backend failed and was retried elsewhere.
func (m *Metrics) Retry(backend string) { m.backends.get(backend).retries.Inc() }

// Session records one session lookup outcome (one of the Outcome constants).
func (m *Metrics) Session(outcome string) {
	if c, ok := m.outcomes[outcome]; ok {
		c.Inc()
		return
	}
	m.lookups.WithLabelValues(outcome).Inc() // not a known outcome: slow path, still counted
}

// Repairs adds n session copies written during repair.
func (m *Metrics) Repairs(n int) { m.repairs.Add(float64(n)) }

// Renewal records one session TTL renewal.
func (m *Metrics) Renewal() { m.renewals.Inc() }

// Replay records one request sent to PHP again after PHP lost its session
// at a memcached fault.
func (m *Metrics) Replay() { m.replays.Inc() }

// Kill records one session deleted through the admin API.
func (m *Metrics) Kill() { m.kills.Inc() }

// LockReleased records one session lock released, by reason: "orphaned",
// "stale" or "replayed" (sessionstore.LockOrphaned and the others).
func (m *Metrics) LockReleased(reason string) { m.locks.WithLabelValues(reason).Inc() }

// Hold records one request held for d for a restarting memcached node.
func (m *Metrics) Hold(d time.Duration) {
	m.held.Inc()
	m.holdTime.Observe(d.Seconds())
}

// QueueWait records one request that waited d in the session queue.
func (m *Metrics) QueueWait(d time.Duration) { m.queueWait.Observe(d.Seconds()) }

// QueueRejected records one request the session queue answered with 503
// (reason "timeout" or "full").
func (m *Metrics) QueueRejected(reason string) { m.queueRejected.WithLabelValues(reason).Inc() }

// AccessLogDropped records one access log line dropped.
func (m *Metrics) AccessLogDropped() { m.accessDropped.Inc() }

// Reasons for ClientRefused.
const (
	RefusedRate           = "rate"
	RefusedConnections    = "connections"
	RefusedProxyUntrusted = "proxy_untrusted"
	RefusedProxyHeader    = "proxy_header"
)

// RefusalReasons lists the reason label values of client_refused_total.
func RefusalReasons() []string {
	return []string{RefusedRate, RefusedConnections, RefusedProxyUntrusted, RefusedProxyHeader}
}

// ClientRefused records one client connection or request refused at the
// front door for reason (one of RefusalReasons).
func (m *Metrics) ClientRefused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// MemcachedLatency records the duration of one operation on node addr.
func (m *Metrics) MemcachedLatency(addr string, d time.Duration) {
	m.nodes.get(addr).Observe(d.Seconds())
}

func methodIndex(method string) int {
	for i, v := range methods[:len(methods)-1] {
		if v == method {
			return i
		}
	}
	return len(methods) - 1
}

func codeIndex(status int) int {
	if status < 100 || status > 599 {
		return len(codes) - 1
	}
	return status/100 - 1
}

// children caches label children by name: lookups read an immutable map
// without locking; a miss copies the map with the new entry (misses happen
// once per backend or node name, so the copy cost is irrelevant).
type children[T any] struct {
	mu   sync.Mutex // serialises writers of m
	m    atomic.Pointer[map[string]T]
	make func(name string) T
}

func (c *children[T]) get(name string) T {
	if p := c.m.Load(); p != nil {
		if v, ok := (*p)[name]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[string]T
	if p := c.m.Load(); p != nil {
		old = *p
	}
	if v, ok := old[name]; ok {
		return v
	}
	next := make(map[string]T, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	v := c.make(name)
	next[name] = v
	c.m.Store(&next)
	return v
}
