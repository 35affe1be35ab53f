package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

type fakeSource struct {
	backends []BackendSample
	nodes    []NodeSample
}

func (f fakeSource) Backends() []BackendSample { return f.backends }
func (f fakeSource) Nodes() []NodeSample       { return f.nodes }
func (f fakeSource) Queue() (int64, int64)     { return 2, 5 }
func (f fakeSource) Certificates() []CertSample {
	return []CertSample{{Name: "www.example.com", NotAfter: time.Unix(1800000000, 0)}}
}
func (f fakeSource) Pool() (PoolSample, bool) {
	return PoolSample{Scanned: true, Sessions: 9, WithData: 7, Incomplete: 1,
		Active:     map[string]int64{"1m": 2, "5m": 4, "15m": 6},
		PerNode:    map[string]int64{"127.0.0.1:11211": 9, "127.0.0.1:11212": 8},
		SizeBounds: []float64{0, 1024}, SizeCounts: []int64{2, 6, 1}, ScanSeconds: 0.25, ScannedAt: time.Unix(1800000000, 0),
		ResyncRunning: true, ResyncDone: 3, ResyncTotal: 9, ResyncCopied: 2}, true
}

var testSource = fakeSource{
	backends: []BackendSample{{Name: "lamp01", Up: true, InFlight: 3}, {Name: "lamp02"}},
	nodes: []NodeSample{{Addr: "127.0.0.1:11211", Up: true, Losses: 3, Restarts: 2, Evictions: 7, Items: 42},
		{Addr: "127.0.0.1:11212", Restarting: true, Losses: 1}},
}

// scrape runs the exposition path the lead wires (promhttp over the
// registry) and parses the text format back.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: status %d: %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return fams
}

// value returns the sample of family name whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("family %s missing", name)
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		return m
	}
	t.Fatalf("%s: no sample with labels %v", name, want)
	return nil
}

func TestFamiliesAndTypes(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	m.SetSource(testSource)
	m.Request("lamp01", "GET", 200, 30*time.Millisecond)
	m.Request("lamp01", "BREW", 503, time.Second)
	m.Request("lamp01", "POST", 0, time.Millisecond) // out of range counts as 5xx
	m.Retry("lamp02")
	for _, o := range []string{OutcomeVerified, OutcomeVerified, OutcomeUnknownStripped, "novel"} {
		m.Session(o)
	}
	m.Repairs(2)
	m.Renewal()
	m.Kill()
	m.Replay()
	m.MemcachedLatency("127.0.0.1:11211", 300*time.Microsecond)
	m.Hold(300 * time.Millisecond)
	m.Hold(time.Second)

	fams := scrape(t, reg)
	want := map[string]dto.MetricType{
		"sessiongate_requests_total":                           dto.MetricType_COUNTER,
		"sessiongate_request_duration_seconds":                 dto.MetricType_HISTOGRAM,
		"sessiongate_backend_up":                               dto.MetricType_GAUGE,
		"sessiongate_backend_in_flight_requests":               dto.MetricType_GAUGE,
		"sessiongate_retries_total":                            dto.MetricType_COUNTER,
		"sessiongate_session_lookups_total":                    dto.MetricType_COUNTER,
		"sessiongate_session_repairs_total":                    dto.MetricType_COUNTER,
		"sessiongate_session_renewals_total":                   dto.MetricType_COUNTER,
		"sessiongate_session_kills_total":                      dto.MetricType_COUNTER,
		"sessiongate_session_replays_total":                    dto.MetricType_COUNTER,
		"sessiongate_memcached_up":                             dto.MetricType_GAUGE,
		"sessiongate_memcached_latency_seconds":                dto.MetricType_HISTOGRAM,
		"sessiongate_memcached_restarts_total":                 dto.MetricType_COUNTER,
		"sessiongate_memcached_evictions_total":                dto.MetricType_COUNTER,
		"sessiongate_memcached_items":                          dto.MetricType_GAUGE,
		"sessiongate_memcached_connection_losses_total":        dto.MetricType_COUNTER,
		"sessiongate_memcached_nodes_restarting":               dto.MetricType_GAUGE,
		"sessiongate_session_held_total":                       dto.MetricType_COUNTER,
		"sessiongate_session_hold_seconds":                     dto.MetricType_HISTOGRAM,
		"sessiongate_pool_sessions":                            dto.MetricType_GAUGE,
		"sessiongate_pool_sessions_with_data":                  dto.MetricType_GAUGE,
		"sessiongate_pool_sessions_incomplete":                 dto.MetricType_GAUGE,
		"sessiongate_pool_sessions_active":                     dto.MetricType_GAUGE,
		"sessiongate_pool_node_sessions":                       dto.MetricType_GAUGE,
		"sessiongate_pool_session_size_bytes":                  dto.MetricType_HISTOGRAM,
		"sessiongate_pool_scan_duration_seconds":               dto.MetricType_GAUGE,
		"sessiongate_pool_scan_timestamp_seconds":              dto.MetricType_GAUGE,
		"sessiongate_pool_resync_running":                      dto.MetricType_GAUGE,
		"sessiongate_pool_resync_done_sessions":                dto.MetricType_GAUGE,
		"sessiongate_pool_resync_planned_sessions":             dto.MetricType_GAUGE,
		"sessiongate_pool_resync_copied_sessions":              dto.MetricType_GAUGE,
		"sessiongate_tls_certificate_expiry_timestamp_seconds": dto.MetricType_GAUGE,
		"go_goroutines":                                        dto.MetricType_GAUGE,
		"process_cpu_seconds_total":                            dto.MetricType_COUNTER,
	}
	for name, typ := range want {
		f := fams[name]
		if f == nil {
			t.Errorf("family %s missing", name)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("%s: type %v, want %v", name, f.GetType(), typ)
		}
	}

	counters := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"sessiongate_requests_total", map[string]string{"backend": "lamp01", "method": "GET", "code": "2xx"}, 1},
		{"sessiongate_requests_total", map[string]string{"backend": "lamp01", "method": "other", "code": "5xx"}, 1},
		{"sessiongate_requests_total", map[string]string{"backend": "lamp01", "method": "POST", "code": "5xx"}, 1},
		{"sessiongate_requests_total", map[string]string{"backend": "lamp01", "method": "PUT", "code": "4xx"}, 0},
		{"sessiongate_retries_total", map[string]string{"backend": "lamp02"}, 1},
		{"sessiongate_session_lookups_total", map[string]string{"outcome": "verified"}, 2},
		{"sessiongate_session_lookups_total", map[string]string{"outcome": "unknown_stripped"}, 1},
		{"sessiongate_session_lookups_total", map[string]string{"outcome": "store_down"}, 0},
		{"sessiongate_session_lookups_total", map[string]string{"outcome": "novel"}, 1},
		{"sessiongate_session_repairs_total", nil, 2},
		{"sessiongate_session_renewals_total", nil, 1},
		{"sessiongate_session_kills_total", nil, 1},
		{"sessiongate_session_replays_total", nil, 1},
		{"sessiongate_memcached_restarts_total", map[string]string{"node": "127.0.0.1:11211"}, 2},
		{"sessiongate_memcached_evictions_total", map[string]string{"node": "127.0.0.1:11211"}, 7},
		{"sessiongate_memcached_connection_losses_total", map[string]string{"node": "127.0.0.1:11211"}, 3},
		{"sessiongate_session_held_total", nil, 2},
	}
	for _, c := range counters {
		if got := value(t, fams, c.name, c.labels).GetCounter().GetValue(); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	gauges := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"sessiongate_backend_up", map[string]string{"backend": "lamp01"}, 1},
		{"sessiongate_backend_up", map[string]string{"backend": "lamp02"}, 0},
		{"sessiongate_backend_in_flight_requests", map[string]string{"backend": "lamp01"}, 3},
		{"sessiongate_memcached_up", map[string]string{"node": "127.0.0.1:11211"}, 1},
		{"sessiongate_memcached_items", map[string]string{"node": "127.0.0.1:11211"}, 42},
		{"sessiongate_memcached_up", map[string]string{"node": "127.0.0.1:11212"}, 0},
		{"sessiongate_memcached_nodes_restarting", nil, 1},
		{"sessiongate_pool_sessions", nil, 9},
		{"sessiongate_pool_sessions_active", map[string]string{"window": "5m"}, 4},
		{"sessiongate_pool_node_sessions", map[string]string{"node": "127.0.0.1:11212"}, 8},
		{"sessiongate_pool_resync_done_sessions", nil, 3},
		{"sessiongate_tls_certificate_expiry_timestamp_seconds", map[string]string{"name": "www.example.com"}, 1800000000},
	}
	for _, g := range gauges {
		if got := value(t, fams, g.name, g.labels).GetGauge().GetValue(); got != g.want {
			t.Errorf("%s%v = %v, want %v", g.name, g.labels, got, g.want)
		}
	}
	h := value(t, fams, "sessiongate_request_duration_seconds", map[string]string{"backend": "lamp01"}).GetHistogram()
	if h.GetSampleCount() != 3 || h.GetSampleSum() < 1.03 || h.GetSampleSum() > 1.04 {
		t.Errorf("request duration: count %d sum %v, want 3 and 1.031", h.GetSampleCount(), h.GetSampleSum())
	}
	h = value(t, fams, "sessiongate_memcached_latency_seconds", map[string]string{"node": "127.0.0.1:11211"}).GetHistogram()
	if h.GetSampleCount() != 1 {
		t.Errorf("memcached latency count %d, want 1", h.GetSampleCount())
	}
	h = value(t, fams, "sessiongate_session_hold_seconds", nil).GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() < 1.29 || h.GetSampleSum() > 1.31 {
		t.Errorf("hold time: count %d sum %v, want 2 and 1.3", h.GetSampleCount(), h.GetSampleSum())
	}
}

// TestLint applies the promlint rules `promtool check metrics` uses (what
// testutil.CollectAndLint runs) to everything New registers.
func TestLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	m.SetSource(testSource)
	m.Request("lamp01", "GET", 200, time.Millisecond)
	m.MemcachedLatency("127.0.0.1:11211", time.Millisecond)
	m.Hold(time.Millisecond)
	m.QueueWait(time.Millisecond)
	m.QueueRejected("timeout")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestNoSourceMeansNoStateFamilies(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	m.SetSource(testSource)
	m.SetSource(nil)
	fams := scrape(t, reg)
	for _, name := range []string{"sessiongate_backend_up", "sessiongate_memcached_items"} {
		if fams[name] != nil {
			t.Errorf("%s present without a source", name)
		}
	}
}

// TestInstancesAreIndependent proves there is no global collector: two
// Metrics on two registries neither collide nor share counts.
func TestInstancesAreIndependent(t *testing.T) {
	r1, r2 := prometheus.NewRegistry(), prometheus.NewRegistry()
	m1, _ := New(r1), New(r2)
	m1.Kill()
	if got := value(t, scrape(t, r2), "sessiongate_session_kills_total", nil).GetCounter().GetValue(); got != 0 {
		t.Fatalf("second registry sees %v kills, want 0", got)
	}
}

func TestConcurrentUseWithScrapes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.SetSource(testSource)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				b := fmt.Sprintf("b%d", (g+i)%8) // new names race with lookups of known ones
				m.Request(b, "GET", 200, time.Millisecond)
				m.Retry(b)
				m.MemcachedLatency(fmt.Sprintf("n%d", i%3), time.Microsecond)
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	var total float64
	fams := scrape(t, reg)
	for _, s := range fams["sessiongate_requests_total"].Metric {
		total += s.GetCounter().GetValue()
	}
	if total != 800 {
		t.Fatalf("requests_total sums to %v, want 800", total)
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	m := New(prometheus.NewRegistry())
	m.Request("lamp01", "GET", 200, time.Millisecond) // first use resolves the children
	m.MemcachedLatency("n1", time.Millisecond)
	allocs := testing.AllocsPerRun(100, func() {
		m.Request("lamp01", "POST", 302, time.Millisecond)
		m.Retry("lamp01")
		m.Session(OutcomeCached)
		m.MemcachedLatency("n1", time.Millisecond)
	})
	if allocs != 0 {
		t.Fatalf("hot path allocates %v times per call, want 0", allocs)
	}
}

func BenchmarkRequest(b *testing.B) {
	m := New(prometheus.NewRegistry())
	backends := []string{"lamp01", "lamp02", "lamp03"}
	for _, n := range backends {
		m.Request(n, "GET", 200, time.Millisecond)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Request(backends[i%3], "GET", 200, time.Millisecond)
			i++
		}
	})
}

func TestSessionQueue(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	m.SetSource(testSource)
	m.QueueWait(30 * time.Millisecond)
	m.QueueRejected("timeout")
	m.QueueRejected("timeout")
	fams := scrape(t, reg)
	if got := value(t, fams, "sessiongate_session_queue_wait_seconds", nil).GetHistogram().GetSampleCount(); got != 1 {
		t.Errorf("queue wait count %d, want 1", got)
	}
	if got := value(t, fams, "sessiongate_session_queue_rejected_total", map[string]string{"reason": "timeout"}).GetCounter().GetValue(); got != 2 {
		t.Errorf("timeouts %v, want 2", got)
	}
	if got := value(t, fams, "sessiongate_session_queue_rejected_total", map[string]string{"reason": "full"}).GetCounter().GetValue(); got != 0 {
		t.Errorf("full %v, want 0 (exported from the start)", got)
	}
	if got := value(t, fams, "sessiongate_session_queue_sessions", nil).GetGauge().GetValue(); got != 2 {
		t.Errorf("sessions with waiters %v, want 2", got)
	}
	if got := value(t, fams, "sessiongate_session_queue_waiters", nil).GetGauge().GetValue(); got != 5 {
		t.Errorf("queue depth %v, want 5", got)
	}
}
