package metrics

import "github.com/prometheus/client_golang/prometheus"

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
}

func newSourceCollector(m *Metrics) *sourceCollector {
	desc := func(name, help, label string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_"+name, help, []string{label}, nil)
	}
	return &sourceCollector{
		m: m,
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
	}
}

// Describe implements prometheus.Collector.
func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.backendUp, c.backendInFlight,
		c.nodeUp, c.nodeRestarts, c.nodeEvictions, c.nodeItems, c.nodeLosses, c.nodesRestarting,
		c.queueSessions, c.queueWaiters} {
		ch <- d
	}
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
}

func b01(v bool) float64 {
	if v {
		return 1
	}
	return 0
}
