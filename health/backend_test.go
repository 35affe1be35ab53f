package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// switchServer is a loopback backend whose probe answer the test sets.
type switchServer struct {
	*httptest.Server
	status atomic.Int32
	hits   atomic.Int64
}

func newSwitchServer(t *testing.T, status int) *switchServer {
	t.Helper()
	s := &switchServer{}
	s.status.Store(int32(status))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		w.WriteHeader(int(s.status.Load()))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *switchServer) target(name string) Target {
	u, _ := url.Parse(s.URL)
	return Target{Name: name, URL: u}
}

func TestProbeStateRecord(t *testing.T) {
	tests := []struct {
		name       string
		start      probeState
		results    string // 'o' pass, 'x' fail
		rise, fall int
		wantUp     []bool // after each result
	}{
		{"fall after two failures", probeState{up: true}, "xx", 2, 2, []bool{true, false}},
		{"success resets failures", probeState{up: true}, "xoxox", 2, 2, []bool{true, true, true, true, true}},
		{"rise after two successes", probeState{}, "oo", 2, 2, []bool{false, true}},
		{"failure resets successes", probeState{}, "oxoxoo", 2, 2, []bool{false, false, false, false, false, true}},
		{"fall 1 is immediate", probeState{up: true}, "x", 2, 1, []bool{false}},
		{"rise 3", probeState{}, "ooo", 3, 2, []bool{false, false, true}},
		{"failures while down change nothing", probeState{}, "xxx", 2, 2, []bool{false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.start
			for i, r := range tt.results {
				was := s.up
				changed := s.record(r == 'o', tt.rise, tt.fall)
				if s.up != tt.wantUp[i] || changed != (s.up != was) {
					t.Fatalf("after result %d (%c): up=%v changed=%v, want up=%v", i, r, s.up, changed, tt.wantUp[i])
				}
			}
		})
	}
}

func TestBackendOptionsDefaults(t *testing.T) {
	tests := []struct {
		in       BackendOptions
		wantDown time.Duration
	}{
		{BackendOptions{}, 500 * time.Millisecond},
		{BackendOptions{Interval: 150 * time.Millisecond}, 100 * time.Millisecond},
		{BackendOptions{Interval: 50 * time.Millisecond}, 50 * time.Millisecond},
		{BackendOptions{Interval: time.Second, DownInterval: 3 * time.Second}, 3 * time.Second},
	}
	for _, tt := range tests {
		if got := tt.in.withDefaults().DownInterval; got != tt.wantDown {
			t.Errorf("DownInterval for %+v = %v, want %v", tt.in, got, tt.wantDown)
		}
	}
	o := BackendOptions{}.withDefaults()
	if o.Interval != time.Second || o.Timeout != 500*time.Millisecond || o.Rise != 2 || o.Fall != 2 ||
		o.PassiveFailures != 0 || o.PassiveWindow != 10*time.Second || o.PassiveCooldown != 10*time.Second {
		t.Errorf("defaults = %+v", o)
	}
}

func TestProbeExpectations(t *testing.T) {
	var gotHost atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost.Store(r.Host)
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte("status: OK\n"))
		case "/redirect":
			// Unreachable location: following it would fail the probe.
			http.Redirect(w, r, "http://127.0.0.1:1/login", http.StatusFound)
		case "/missing":
			http.NotFound(w, r)
		case "/error":
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte("OK"))
		default:
			t.Errorf("unexpected probe path %q", r.URL.Path)
		}
	}))
	t.Cleanup(srv.Close)
	base, _ := url.Parse(srv.URL + "/app/")
	c := NewBackendChecker(BackendOptions{}, nil, backendReporter{newRecorder[report]()}, nil, nil)

	tests := []struct {
		name    string
		o       BackendOptions
		wantErr string // "" = healthy
	}{
		{"2xx", BackendOptions{Path: "/ok"}, ""},
		{"3xx not followed", BackendOptions{Path: "/redirect"}, ""},
		{"4xx", BackendOptions{Path: "/missing"}, "status 404"},
		{"5xx", BackendOptions{Path: "/error"}, "status 500"},
		{"listed 404", BackendOptions{Path: "/missing", ExpectStatus: []int{404}}, ""},
		{"unlisted 200", BackendOptions{Path: "/ok", ExpectStatus: []int{204}}, "status 200"},
		{"body found", BackendOptions{Path: "/ok", ExpectBody: "OK"}, ""},
		{"body missing", BackendOptions{Path: "/ok", ExpectBody: "READY"}, `body lacks "READY"`},
		{"body ignored on bad status", BackendOptions{Path: "/error", ExpectBody: "OK"}, "status 500"},
		{"query kept", BackendOptions{Path: "/ok?full=1"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.probe(context.Background(), base, tt.o.withDefaults())
			if got := errString(err); got != tt.wantErr {
				t.Fatalf("probe = %q, want %q", got, tt.wantErr)
			}
		})
	}

	t.Run("host header", func(t *testing.T) {
		if err := c.probe(context.Background(), base, BackendOptions{Path: "/ok", Host: "php.internal"}); err != nil {
			t.Fatal(err)
		}
		if h := gotHost.Load(); h != "php.internal" {
			t.Fatalf("Host = %v, want php.internal", h)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		dead, _ := url.Parse("http://127.0.0.1:1/")
		if err := c.probe(context.Background(), dead, BackendOptions{Path: "/ok"}); err == nil {
			t.Fatal("probe of a closed port passed")
		}
	})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestBackendRiseFallIntervals drives one backend through down and up with a
// hand-stepped clock: thresholds, both intervals and one log per change.
func TestBackendRiseFallIntervals(t *testing.T) {
	srv := newSwitchServer(t, 200)
	clk := newStepClock()
	rep := backendReporter{newRecorder[report]()}
	logger, logs := newLogger()
	o := BackendOptions{Path: "/health", Interval: time.Second, DownInterval: 300 * time.Millisecond, Rise: 2, Fall: 3}
	c := NewBackendChecker(o, []Target{srv.target("php1")}, rep, nil, logger, WithClock(clk))
	runChecker(t, c.Run)

	clk.wait(t, time.Second) // probe 1 passed
	srv.status.Store(500)
	clk.fire()
	clk.wait(t, time.Second) // 1 failure: still up
	clk.fire()
	clk.wait(t, time.Second) // 2 failures: still up
	if st := c.Status()[0]; !st.Up || st.ConsecutiveFail != 2 || st.LastError != "status 500" {
		t.Fatalf("after 2 failures: %+v", st)
	}
	clk.fire()
	clk.wait(t, 300*time.Millisecond) // 3rd failure: down, probed faster
	clk.fire()
	clk.wait(t, 300*time.Millisecond)
	clk.fire()
	clk.wait(t, 300*time.Millisecond)
	srv.status.Store(200)
	clk.fire()
	clk.wait(t, 300*time.Millisecond) // 1 success: still down
	if st := c.Status()[0]; st.Up || st.ConsecutiveOK != 1 || st.LastError != "" {
		t.Fatalf("after 1 success: %+v", st)
	}
	clk.fire()
	clk.wait(t, time.Second) // 2 successes: up, normal interval
	clk.fire()
	clk.wait(t, time.Second)

	want := []report{{"php1", true}, {"php1", false}, {"php1", true}}
	if got := rep.all(); !slices.Equal(got, want) {
		t.Fatalf("reports = %v, want %v", got, want)
	}
	if d, u := logs.count("backend down"), logs.count("backend up"); d != 1 || u != 1 {
		t.Fatalf("logged down %d times and up %d times, want once each", d, u)
	}
	if hits := srv.hits.Load(); hits != 9 {
		t.Fatalf("server saw %d probes, want 9", hits)
	}
}

// TestBackendPassiveWindow: only N failures inside the window trip, older
// ones fall out, successes are ignored, and with active checks off the
// backend is back when the cooldown ends.
func TestBackendPassiveWindow(t *testing.T) {
	clk := newStepClock()
	rep := backendReporter{newRecorder[report]()}
	logger, logs := newLogger()
	u, _ := url.Parse("http://127.0.0.1:1/")
	o := BackendOptions{PassiveFailures: 3, PassiveWindow: 10 * time.Second, PassiveCooldown: 30 * time.Second}
	c := NewBackendChecker(o, []Target{{Name: "php1", URL: u}}, rep, nil, logger, WithClock(clk))
	runChecker(t, c.Run)
	rep.waitFor(t, "initial report", func(r []report) bool { return len(r) == 1 })

	c.Observe("php1", true)
	c.Observe("php1", true)
	for range 100 {
		c.Observe("php1", false)
	}
	clk.Advance(11 * time.Second) // the first two fall out of the window
	c.Observe("php1", true)
	c.Observe("php1", true)
	if st := c.Status()[0]; !st.Up {
		t.Fatalf("down after 2 failures within the window: %+v", st)
	}
	c.Observe("php1", true) // third within 10s
	c.Observe("php1", true) // already out: ignored
	c.Observe("nosuch", true)
	start := clk.Now()
	st := c.Status()[0]
	if st.Up || !st.PassiveDownUntil.Equal(start.Add(30*time.Second)) {
		t.Fatalf("after 3 failures within the window: %+v", st)
	}

	clk.wait(t, 30*time.Second) // the goroutine times the cooldown
	clk.fire()
	rep.waitFor(t, "back up", func(r []report) bool { return len(r) == 3 })
	want := []report{{"php1", true}, {"php1", false}, {"php1", true}}
	if got := rep.all(); !slices.Equal(got, want) {
		t.Fatalf("reports = %v, want %v", got, want)
	}
	if d, u := logs.count("backend down"), logs.count("backend up"); d != 1 || u != 1 {
		t.Fatalf("logged down %d times and up %d times, want once each", d, u)
	}
}

// TestBackendPassiveThenActive: during the cooldown nothing probes; after it
// the backend needs Rise probe successes.
func TestBackendPassiveThenActive(t *testing.T) {
	srv := newSwitchServer(t, 200)
	clk := newStepClock()
	rep := backendReporter{newRecorder[report]()}
	o := BackendOptions{Path: "/health", Interval: time.Second, DownInterval: 200 * time.Millisecond,
		PassiveFailures: 2, PassiveWindow: time.Second, PassiveCooldown: 5 * time.Second}
	c := NewBackendChecker(o, []Target{srv.target("php1")}, rep, nil, nil, WithClock(clk))
	runChecker(t, c.Run)

	clk.wait(t, time.Second) // probe 1 passed; this wait is never ended
	c.Observe("php1", true)
	c.Observe("php1", true)
	hits := srv.hits.Load()
	// The trip wakes the goroutine, which waits out the whole cooldown
	// instead of probing.
	clk.wait(t, 5*time.Second)
	if srv.hits.Load() != hits {
		t.Fatal("probed during the passive cooldown")
	}
	clk.fire()
	clk.wait(t, 200*time.Millisecond) // first success after cooldown: still down
	if c.Status()[0].Up {
		t.Fatal("up after one success, want Rise=2")
	}
	clk.fire()
	clk.wait(t, time.Second) // second success: up
	want := []report{{"php1", true}, {"php1", false}, {"php1", true}}
	if got := rep.all(); !slices.Equal(got, want) {
		t.Fatalf("reports = %v, want %v", got, want)
	}
	if got := srv.hits.Load(); got != hits+2 {
		t.Fatalf("probes after cooldown = %d, want 2", got-hits)
	}
}

// TestBackendUpdate: a new target is probed and reported, a removed one is
// neither, and options apply to targets that stay.
func TestBackendUpdate(t *testing.T) {
	a, b, cSrv := newSwitchServer(t, 200), newSwitchServer(t, 200), newSwitchServer(t, 500)
	rep := backendReporter{newRecorder[report]()}
	o := BackendOptions{Path: "/health", Interval: 10 * time.Millisecond, Fall: 1}
	c := NewBackendChecker(o, []Target{a.target("a"), b.target("b")}, rep, nil, nil)
	runChecker(t, c.Run)
	rep.waitFor(t, "initial reports", func(r []report) bool { return len(r) == 2 })

	c.Update(o, []Target{a.target("a"), cSrv.target("c")})
	bHits := b.hits.Load() // Update has stopped b's goroutine
	rep.waitFor(t, "c reported down", func(r []report) bool { return slices.Contains(r, report{"c", false}) })
	aHits := a.hits.Load()
	for deadline := time.Now().Add(waitLimit); a.hits.Load() < aHits+3; {
		if time.Now().After(deadline) {
			t.Fatal("a no longer probed")
		}
		time.Sleep(time.Millisecond) // polling a counter; bounded by the deadline
	}
	if got := b.hits.Load(); got != bHits {
		t.Fatalf("removed target probed %d more times", got-bHits)
	}
	var names []string
	for _, st := range c.Status() {
		names = append(names, st.Name)
	}
	if !slices.Equal(names, []string{"a", "c"}) {
		t.Fatalf("Status names = %v", names)
	}
	for _, r := range rep.all() {
		if r.name == "b" && !r.up {
			t.Fatal("removed target reported down")
		}
	}
}

// TestBackendRunCancelMidProbe: Run returns promptly when cancelled during a
// probe, and the aborted probe does not count as a failure.
func TestBackendRunCancelMidProbe(t *testing.T) {
	entered := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	rep := backendReporter{newRecorder[report]()}
	o := BackendOptions{Path: "/slow", Timeout: time.Minute, Fall: 1}
	c := NewBackendChecker(o, []Target{{Name: "php1", URL: u}, {Name: "php2", URL: u}}, rep, nil, nil)
	stop := runChecker(t, c.Run)
	for range 2 {
		select {
		case <-entered:
		case <-time.After(waitLimit):
			t.Fatal("probe never reached the backend")
		}
	}
	stop() // fails the test unless Run returns in time
	for _, r := range rep.all() {
		if !r.up {
			t.Fatalf("cancelled probe reported %v down", r.name)
		}
	}
	for _, st := range c.Status() {
		if !st.Up || st.ConsecutiveFail != 0 || st.LastError != "" {
			t.Fatalf("cancelled probe recorded: %+v", st)
		}
	}
}

// TestBackendRealSwitch uses the real clock and a loopback backend that
// turns from 200 to 500 and back.
func TestBackendRealSwitch(t *testing.T) {
	srv := newSwitchServer(t, 200)
	rep := backendReporter{newRecorder[report]()}
	logger, logs := newLogger()
	o := BackendOptions{Path: "/health.php", Interval: 20 * time.Millisecond, Timeout: time.Second}
	c := NewBackendChecker(o, []Target{srv.target("php1")}, rep, nil, logger)
	runChecker(t, c.Run)

	rep.waitFor(t, "initial report", func(r []report) bool { return len(r) == 1 })
	srv.status.Store(500)
	rep.waitFor(t, "down", func(r []report) bool { return slices.Contains(r, report{"php1", false}) })
	srv.status.Store(200)
	got := rep.waitFor(t, "up again", func(r []report) bool { return len(r) == 3 })
	if want := []report{{"php1", true}, {"php1", false}, {"php1", true}}; !slices.Equal(got, want) {
		t.Fatalf("reports = %v, want %v", got, want)
	}
	if d := logs.count("backend down"); d != 1 {
		t.Fatalf("logged down %d times", d)
	}
	if st := c.Status()[0]; st.LastLatency <= 0 || !strings.HasPrefix(st.URL, "http://127.0.0.1:") {
		t.Fatalf("status = %+v", st)
	}
}

// tickClock advances one second on every Now, so passive failures never
// fall within a short window and Observe always takes its full path.
type tickClock struct{ n atomic.Int64 }

func (c *tickClock) Now() time.Time                         { return time.Unix(c.n.Add(1), 0) }
func (c *tickClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func BenchmarkObserve(b *testing.B) {
	u, _ := url.Parse("http://127.0.0.1:1/")
	targets := []Target{{Name: "php1", URL: u}, {Name: "php2", URL: u}, {Name: "php3", URL: u}}
	o := BackendOptions{PassiveFailures: 5, PassiveWindow: time.Second}
	for _, failed := range []bool{false, true} {
		b.Run("failed="+strconv.FormatBool(failed), func(b *testing.B) {
			c := NewBackendChecker(o, targets, backendReporter{newRecorder[report]()}, nil, nil, WithClock(&tickClock{}))
			b.RunParallel(func(pb *testing.PB) {
				for i := 0; pb.Next(); i++ {
					c.Observe(targets[i%len(targets)].Name, failed)
				}
			})
		})
	}
}
