package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BackendSample is one backend's state at scrape time.
type BackendSample struct {
	Name     string
	Up       bool  // available for new requests (healthy and not drained/in maintenance)
	InFlight int64 // requests currently being served by it
}

// NodeSample is one memcached node's state at scrape time.
type NodeSample struct {
	Addr       string
	Up         bool
	Restarting bool  // connection lost less than memcached.restart_hold ago: requests with a session wait for it
	Losses     int64 // up-to-down transitions seen since sessiongate started (connection lost, refused or unanswered)
	Restarts   int64 // restarts seen since sessiongate started: pid or uptime changed, or flushed (data gone)
	Evictions  int64 // the node's own evictions counter
	Items      int64 // curr_items
}

// Source supplies the values that are read, not counted, by sessiongate. It is
// called on every scrape, from the scraping goroutine.
type Source interface {
	Backends() []BackendSample
	Nodes() []NodeSample
}

// QueueSource is an optional part of a Source: the session queue's state
// at scrape time. Without it those families are absent.
type QueueSource interface {
	// Queue returns the sessions with requests waiting, and those requests.
	Queue() (sessions, waiters int64)
}

// CertSample is one certificate the TLS listener serves, at scrape time.
type CertSample struct {
	// Name is the name it is served for: the tls.acme domain, or for
	// tls.cert the first name the certificate is for.
	Name     string
	NotAfter time.Time
}

// CertSource is an optional part of a Source: the certificates served.
// Without it (or with none) the certificate family is absent.
type CertSource interface {
	Certificates() []CertSample
}

// sourceBox lets an interface value live behind an atomic.Pointer.
type sourceBox struct{ Source }

// SetSource sets (or, with nil, removes) where scrape-time values come from.
// Until it is called those families are simply absent.
func (m *Metrics) SetSource(s Source) {
	if s == nil {
		m.source.Store(nil)
		return
	}
	m.source.Store(&sourceBox{s})
}

// sourceCollector turns the Source's samples into const metrics at scrape time.
type sourceCollector struct {
	m                                              *Metrics
	backendUp, backendInFlight                     *prometheus.Desc
	nodeUp, nodeRestarts, nodeEvictions, nodeItems *prometheus.Desc
	nodeLosses, nodesRestarting                    *prometheus.Desc
	queueSessions, queueWaiters                    *prometheus.Desc
	certExpiry                                     *prometheus.Desc
	pool                                           poolDescs
}

func newSourceCollector(m *Metrics) *sourceCollector {
	desc := func(name, help, label string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_"+name, help, []string{label}, nil)
	}
	return &sourceCollector{
		m:    m,
		pool: newPoolDescs(),
		backendUp: desc("backend_up",
			"Whether the backend takes new requests (1) or not (0: down, draining or in maintenance).", "backend"),
		backendInFlight: desc("backend_in_flight_requests", "Requests currently in flight to the backend.", "backend"),
		nodeUp: desc("memcached_up",
			"Whether the memcached node answers (1) or not (0: restarting or down).", "node"),
		nodeRestarts: desc("memcached_restarts_total",
			"Restarts of the memcached node seen by sessiongate: its pid or uptime changed, or it was flushed. "+
				"Each one means the node's data is gone.", "node"),
		nodeLosses: desc("memcached_connection_losses_total",
			"Times sessiongate lost the memcached node: its connection closed or was refused, or it did not answer "+
				"within memcached.timeout. Not a restart by itself: a pause or a network blip keeps the data.", "node"),
		nodesRestarting: prometheus.NewDesc(namespace+"_memcached_nodes_restarting",
			"Memcached nodes that lost their connection less than memcached.restart_hold ago: requests with a "+
				"session wait for them.", nil, nil),
		nodeEvictions: desc("memcached_evictions_total",
			"Items the memcached node evicted to make room, as it reports them.", "node"),
		nodeItems: desc("memcached_items", "Items currently stored on the memcached node.", "node"),
		queueSessions: prometheus.NewDesc(namespace+"_session_queue_sessions",
			"Sessions with requests waiting at the edge now.", nil, nil),
		queueWaiters: prometheus.NewDesc(namespace+"_session_queue_waiters",
			"Requests waiting at the edge for their session now (queue depth, all sessions).", nil, nil),
		certExpiry: desc("tls_certificate_expiry_timestamp_seconds",
			"When the certificate the TLS listener serves for the name expires (its NotAfter, Unix time): "+
				"tls.cert's as loaded at start, tls.acme's as obtained or renewed.", "name"),
	}
}

// Describe implements prometheus.Collector.
func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.backendUp, c.backendInFlight,
		c.nodeUp, c.nodeRestarts, c.nodeEvictions, c.nodeItems, c.nodeLosses, c.nodesRestarting,
		c.queueSessions, c.queueWaiters, c.certExpiry} {
		ch <- d
	}
	c.pool.describe(ch)
}

// Collect implements prometheus.Collector.
func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	box := c.m.source.Load()
	if box == nil {
		return
	}
	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue
	for _, b := range box.Backends() {
		ch <- prometheus.MustNewConstMetric(c.backendUp, gauge, b01(b.Up), b.Name)
		ch <- prometheus.MustNewConstMetric(c.backendInFlight, gauge, float64(b.InFlight), b.Name)
	}
	restarting := 0
	for _, n := range box.Nodes() {
		if n.Restarting {
			restarting++
		}
		ch <- prometheus.MustNewConstMetric(c.nodeUp, gauge, b01(n.Up), n.Addr)
		ch <- prometheus.MustNewConstMetric(c.nodeLosses, counter, float64(n.Losses), n.Addr)
		ch <- prometheus.MustNewConstMetric(c.nodeRestarts, counter, float64(n.Restarts), n.Addr)
		ch <- prometheus.MustNewConstMetric(c.nodeEvictions, counter, float64(n.Evictions), n.Addr)
		ch <- prometheus.MustNewConstMetric(c.nodeItems, gauge, float64(n.Items), n.Addr)
	}
	ch <- prometheus.MustNewConstMetric(c.nodesRestarting, gauge, float64(restarting))
	if q, ok := box.Source.(QueueSource); ok {
		sessions, waiters := q.Queue()
		ch <- prometheus.MustNewConstMetric(c.queueSessions, gauge, float64(sessions))
		ch <- prometheus.MustNewConstMetric(c.queueWaiters, gauge, float64(waiters))
	}
	if p, ok := box.Source.(PoolSource); ok {
		c.pool.collect(ch, p)
	}
	if cs, ok := box.Source.(CertSource); ok {
		for _, s := range cs.Certificates() {
			ch <- prometheus.MustNewConstMetric(c.certExpiry, gauge, float64(s.NotAfter.Unix()), s.Name)
		}
	}
}

func b01(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// PoolSample is the latest scan of the memcached pool and the resync's
// progress, at scrape time.
type PoolSample struct {
	Scanned    bool // a scan finished: the scan families are present
	Sessions   int64
	WithData   int64
	Incomplete int64
	Active     map[string]int64 // by window: "1m", "5m", "15m"
	PerNode    map[string]int64 // sessions on each node scanned
	// SizeBounds are the upper bounds of SizeCounts' buckets (bytes), the
	// last count being past every bound; counts are not cumulative.
	SizeBounds  []float64
	SizeCounts  []int64
	ScanSeconds float64
	ScannedAt   time.Time

	ResyncRunning                         bool
	ResyncDone, ResyncTotal, ResyncCopied int64
}

// PoolSource is an optional part of a Source: the pool's inventory and
// resync. Without it (or with ok false) those families are absent.
type PoolSource interface {
	Pool() (p PoolSample, ok bool)
}

// poolDescs are the pool families.
type poolDescs struct {
	sessions, withData, incomplete, active, perNode, sizes, scanSeconds, scannedAt *prometheus.Desc
	resyncRunning, resyncDone, resyncTotal, resyncCopied                           *prometheus.Desc
}

func newPoolDescs() poolDescs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_"+name, help, labels, nil)
	}
	return poolDescs{
		sessions: d("pool_sessions", "Sessions in the memcached pool at the last scan: distinct session data keys "+
			"(lock keys and other applications' keys are not sessions)."),
		withData:      d("pool_sessions_with_data", "Sessions in the pool holding data (the rest are empty placeholders), at the last scan."),
		incomplete:    d("pool_sessions_incomplete", "Sessions missing on some scanned node (replicas: all), at the last scan."),
		active:        d("pool_sessions_active", "Sessions last accessed within the window, at the last scan.", "window"),
		perNode:       d("pool_node_sessions", "Session data keys on the node at the last scan.", "node"),
		sizes:         d("pool_session_size_bytes", "Sessions by the value size of their largest copy, at the last scan."),
		scanSeconds:   d("pool_scan_duration_seconds", "How long the last scan of the pool took."),
		scannedAt:     d("pool_scan_timestamp_seconds", "When the last scan of the pool finished (Unix time)."),
		resyncRunning: d("pool_resync_running", "Whether a resync is copying sessions onto a node that lacks them (1) or not (0)."),
		resyncDone:    d("pool_resync_done_sessions", "Sessions the current or last resync has looked at."),
		resyncTotal:   d("pool_resync_planned_sessions", "Sessions the current or last resync has to look at."),
		resyncCopied:  d("pool_resync_copied_sessions", "Sessions the current or last resync copied onto the node."),
	}
}

func (p poolDescs) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{p.sessions, p.withData, p.incomplete, p.active, p.perNode, p.sizes,
		p.scanSeconds, p.scannedAt, p.resyncRunning, p.resyncDone, p.resyncTotal, p.resyncCopied} {
		ch <- d
	}
}

func (p poolDescs) collect(ch chan<- prometheus.Metric, src PoolSource) {
	s, ok := src.Pool()
	if !ok {
		return
	}
	g := prometheus.GaugeValue
	ch <- prometheus.MustNewConstMetric(p.resyncRunning, g, b01(s.ResyncRunning))
	ch <- prometheus.MustNewConstMetric(p.resyncDone, g, float64(s.ResyncDone))
	ch <- prometheus.MustNewConstMetric(p.resyncTotal, g, float64(s.ResyncTotal))
	ch <- prometheus.MustNewConstMetric(p.resyncCopied, g, float64(s.ResyncCopied))
	if !s.Scanned {
		return
	}
	ch <- prometheus.MustNewConstMetric(p.sessions, g, float64(s.Sessions))
	ch <- prometheus.MustNewConstMetric(p.withData, g, float64(s.WithData))
	ch <- prometheus.MustNewConstMetric(p.incomplete, g, float64(s.Incomplete))
	for w, n := range s.Active {
		ch <- prometheus.MustNewConstMetric(p.active, g, float64(n), w)
	}
	for node, n := range s.PerNode {
		ch <- prometheus.MustNewConstMetric(p.perNode, g, float64(n), node)
	}
	buckets := make(map[float64]uint64, len(s.SizeBounds))
	var count uint64
	for i, c := range s.SizeCounts {
		count += uint64(c)
		if i < len(s.SizeBounds) {
			buckets[s.SizeBounds[i]] = count
		}
	}
	// The sum of sizes is not known, only their buckets: 0 says so less
	// wrongly than an invented figure (rate(sum)/rate(count) is meaningless here anyway).
	ch <- prometheus.MustNewConstHistogram(p.sizes, count, 0, buckets)
	ch <- prometheus.MustNewConstMetric(p.scanSeconds, g, s.ScanSeconds)
	ch <- prometheus.MustNewConstMetric(p.scannedAt, g, float64(s.ScannedAt.UnixNano())/1e9)
}
