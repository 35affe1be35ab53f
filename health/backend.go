package health

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults applied by BackendOptions when a field is zero.
const (
	DefaultInterval        = time.Second
	DefaultTimeout         = 500 * time.Millisecond
	DefaultRise            = 2
	DefaultFall            = 2
	DefaultPassiveFailures = 5 // for config; 0 in BackendOptions disables passive checks
	DefaultPassiveWindow   = 10 * time.Second
	DefaultPassiveCooldown = 10 * time.Second

	minDownInterval = 100 * time.Millisecond
	maxProbeBody    = 64 << 10 // bytes of a probe response searched for ExpectBody
)

// Reporter receives backend health changes (balancer.Pool implements it).
// Each target's state is reported once when its goroutine starts, since the
// reporter may start from a different one, and then on every change.
type Reporter interface {
	SetHealthy(name string, up bool)
}

// BackendOptions configures backend checks. Zero fields take the defaults
// named on each field.
type BackendOptions struct {
	Path         string        // probe path and optional query, e.g. "/health.php"; "" disables active checks
	Interval     time.Duration // between probes while up; default 1s
	DownInterval time.Duration // between probes while down; default Interval/2, at least 100ms, at most Interval
	Timeout      time.Duration // per probe; default 500ms
	Rise, Fall   int           // consecutive successes to go up / failures to go down; default 2 / 2
	ExpectStatus []int         // healthy status codes; empty means any 2xx or 3xx
	ExpectBody   string        // substring required in the first 64 KiB of the body; "" means any body
	Host         string        // Host header for probes; "" means the target's host

	// Passive checks: PassiveFailures failures (connection errors or 5xx)
	// within PassiveWindow take a backend out for PassiveCooldown. 0
	// failures disables them; the windows default to 10s each.
	PassiveFailures                int
	PassiveWindow, PassiveCooldown time.Duration
}

func (o BackendOptions) withDefaults() BackendOptions {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.DownInterval <= 0 {
		o.DownInterval = min(o.Interval, max(o.Interval/2, minDownInterval))
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Rise <= 0 {
		o.Rise = DefaultRise
	}
	if o.Fall <= 0 {
		o.Fall = DefaultFall
	}
	if o.PassiveWindow <= 0 {
		o.PassiveWindow = DefaultPassiveWindow
	}
	if o.PassiveCooldown <= 0 {
		o.PassiveCooldown = DefaultPassiveCooldown
	}
	o.ExpectStatus = slices.Clone(o.ExpectStatus)
	return o
}

// Target is one backend to check.
type Target struct {
	Name string
	URL  *url.URL
}

// BackendStatus is the observed state of one backend.
type BackendStatus struct {
	Name             string
	URL              string
	Up               bool
	LastCheck        time.Time     // end of the last probe; zero before the first
	LastLatency      time.Duration // duration of the last probe
	LastError        string        // why the last probe failed; "" if it passed
	ConsecutiveOK    int
	ConsecutiveFail  int
	PassiveDownUntil time.Time // end of the latest passive cooldown; zero if never taken out
}

// BackendChecker decides whether backends are up from active probes and
// passive observations, and tells a Reporter when that changes.
type BackendChecker struct {
	client *http.Client
	r      Reporter
	log    *slog.Logger
	clock  Clock

	mu     sync.Mutex // guards opts, byName, list, loops and every *backend's fields
	opts   BackendOptions
	byName map[string]*backend
	list   []*backend // in target order, for Status
	loops  loops
}

// backend is the state of one target; fields are guarded by BackendChecker.mu.
type backend struct {
	name string
	url  *url.URL
	wake chan struct{} // buffered(1): re-evaluate now (options changed, passive trip)

	probeState
	lastCheck    time.Time
	lastLatency  time.Duration
	lastErr      string
	failures     []time.Time // ring of the latest passive failure times
	nextFailure  int         // ring index the next failure is written to
	passiveUntil time.Time
}

// probeState is the active rise/fall state machine.
type probeState struct {
	up       bool
	ok, fail int // consecutive successes / failures
}

// record applies one probe result and reports whether up changed.
func (s *probeState) record(ok bool, rise, fall int) bool {
	if ok {
		s.ok, s.fail = s.ok+1, 0
		if !s.up && s.ok >= rise {
			s.up = true
			return true
		}
		return false
	}
	s.ok, s.fail = 0, s.fail+1
	if s.up && s.fail >= fall {
		s.up = false
		return true
	}
	return false
}

// NewBackendChecker returns a checker for targets, all initially up. A nil
// client means a dedicated one without keep-alives, so every probe also tests
// that the backend accepts connections. Probes never follow redirects: a 3xx
// is an answer. A nil logger discards logs.
func NewBackendChecker(o BackendOptions, targets []Target, r Reporter, client *http.Client, logger *slog.Logger, opts ...Option) *BackendChecker {
	if client == nil {
		client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	}
	cc := *client
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &BackendChecker{client: &cc, r: r, log: logger, clock: buildOptions(opts).clock}
	c.Update(o, targets)
	return c
}

// Run probes every target in its own goroutine until ctx ends, and returns
// once all of them have. Targets added by Update while Run is active get
// their goroutine at once. Run must not be called concurrently with itself.
func (c *BackendChecker) Run(ctx context.Context) {
	c.loops.run(ctx, &c.mu, func() {
		for _, b := range c.list {
			c.startLocked(b)
		}
	})
}

func (c *BackendChecker) startLocked(b *backend) {
	c.loops.start(b.name, func(ctx context.Context) { c.loop(ctx, b) })
}

// Update replaces the options and targets. Targets are matched by name; one
// whose URL changed is treated as new. New targets start up; removed ones
// stop being probed and reported before Update returns.
func (c *BackendChecker) Update(o BackendOptions, targets []Target) {
	c.mu.Lock()
	c.opts = o.withDefaults()
	byName := make(map[string]*backend, len(targets))
	list := make([]*backend, 0, len(targets))
	var added []*backend
	for _, t := range targets {
		if byName[t.Name] != nil {
			continue // names are unique; config validation reports duplicates
		}
		b := c.byName[t.Name]
		if b == nil || b.url.String() != t.URL.String() {
			b = &backend{name: t.Name, url: t.URL, wake: make(chan struct{}, 1), probeState: probeState{up: true}}
			added = append(added, b)
		}
		byName[t.Name] = b
		list = append(list, b)
	}
	var stopped []<-chan struct{}
	for name, b := range c.byName {
		if byName[name] != b {
			if done := c.loops.stop(name); done != nil {
				stopped = append(stopped, done)
			}
		}
	}
	c.byName, c.list = byName, list
	// Start only after stopping: a target whose URL changed keeps its name,
	// which is also its goroutine's key.
	for _, b := range list {
		if slices.Contains(added, b) {
			c.startLocked(b)
		} else {
			wakeUp(b) // apply the new intervals and Path now
		}
	}
	c.mu.Unlock()
	waitAll(stopped)
}

func wakeUp(b *backend) {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Observe records the outcome of one proxied attempt; failed means a
// connection error or a 5xx status. It is cheap when failed is false.
func (c *BackendChecker) Observe(name string, failed bool) {
	if !failed {
		return // passive checks count failures only
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.opts
	b := c.byName[name]
	if b == nil || o.PassiveFailures <= 0 || !b.up {
		return // failures of a backend already out say nothing new
	}
	now := c.clock.Now()
	if len(b.failures) != o.PassiveFailures {
		b.failures, b.nextFailure = make([]time.Time, o.PassiveFailures), 0
	}
	b.failures[b.nextFailure] = now
	b.nextFailure = (b.nextFailure + 1) % len(b.failures)
	// The slot written next holds the oldest of the last N failures; the
	// backend trips when that one is recent enough (zero means not yet N).
	oldest := b.failures[b.nextFailure]
	if oldest.IsZero() || now.Sub(oldest) > o.PassiveWindow {
		return
	}
	clear(b.failures)
	b.passiveUntil = now.Add(o.PassiveCooldown)
	b.up, b.ok = false, 0
	c.log.Warn("backend down", "backend", b.name, "url", b.url.String(),
		"reason", fmt.Sprintf("passive: %d failures within %s", o.PassiveFailures, o.PassiveWindow),
		"until", b.passiveUntil)
	c.r.SetHealthy(b.name, false)
	wakeUp(b) // with active checks off, its goroutine must time the cooldown
}

// loop checks one backend until ctx ends.
func (c *BackendChecker) loop(ctx context.Context, b *backend) {
	c.mu.Lock()
	c.r.SetHealthy(b.name, b.up) // the reporter may not share our initial state
	c.mu.Unlock()
	for {
		var timer <-chan time.Time
		if d := c.check(ctx, b); d > 0 {
			timer = c.clock.After(d)
		}
		select {
		case <-ctx.Done():
			return
		case <-timer:
		case <-b.wake:
		}
	}
}

// check probes b if due and returns how long to wait before the next check;
// 0 means until woken.
func (c *BackendChecker) check(ctx context.Context, b *backend) time.Duration {
	c.mu.Lock()
	o := c.opts
	now := c.clock.Now()
	if now.Before(b.passiveUntil) {
		c.mu.Unlock()
		return b.passiveUntil.Sub(now)
	}
	if o.Path == "" {
		if !b.up {
			reason := "passive cooldown over"
			if b.passiveUntil.IsZero() {
				reason = "active checks disabled" // by Update, while down
			}
			b.up = true
			c.log.Info("backend up", "backend", b.name, "url", b.url.String(), "reason", reason)
			c.r.SetHealthy(b.name, true)
		}
		c.mu.Unlock()
		return 0
	}
	c.mu.Unlock()

	pctx, cancel := context.WithTimeout(ctx, o.Timeout)
	err := c.probe(pctx, b.url, o)
	cancel()
	end := c.clock.Now()

	c.mu.Lock()
	defer c.mu.Unlock()
	if ctx.Err() != nil {
		return 0 // shutdown or removal is not a failure
	}
	b.lastCheck, b.lastLatency, b.lastErr = end, end.Sub(now), ""
	if err != nil {
		b.lastErr = err.Error()
	}
	if end.Before(b.passiveUntil) {
		return b.passiveUntil.Sub(end) // tripped while probing; the result predates it
	}
	if b.record(err == nil, o.Rise, o.Fall) {
		if b.up {
			c.log.Info("backend up", "backend", b.name, "url", b.url.String(), "reason", fmt.Sprintf("%d consecutive probes passed", b.ok))
		} else {
			c.log.Warn("backend down", "backend", b.name, "url", b.url.String(), "reason", b.lastErr)
		}
		// Logged before reported, so whoever sees the change (a test, the
		// dashboard) finds the reason already in the log.
		c.r.SetHealthy(b.name, b.up)
	}
	if b.up {
		return o.Interval
	}
	return o.DownInterval
}

// probe sends one GET to o.Path on base and returns why it is unhealthy, or nil.
func (c *BackendChecker) probe(ctx context.Context, base *url.URL, o BackendOptions) error {
	ref, err := url.Parse(o.Path)
	if err != nil {
		return fmt.Errorf("bad probe path: %v", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.ResolveReference(ref).String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "sessiongate-health")
	if o.Host != "" {
		req.Host = o.Host
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if ok := slices.Contains(o.ExpectStatus, resp.StatusCode) ||
		len(o.ExpectStatus) == 0 && resp.StatusCode >= 200 && resp.StatusCode < 400; !ok {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if o.ExpectBody == "" {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	if err != nil {
		return fmt.Errorf("reading body: %v", err)
	}
	if !strings.Contains(string(body), o.ExpectBody) {
		return fmt.Errorf("body lacks %q", o.ExpectBody)
	}
	return nil
}

// Status returns the observed state of every backend, in target order.
func (c *BackendChecker) Status() []BackendStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]BackendStatus, 0, len(c.list))
	for _, b := range c.list {
		out = append(out, BackendStatus{
			Name: b.name, URL: b.url.String(), Up: b.up,
			LastCheck: b.lastCheck, LastLatency: b.lastLatency, LastError: b.lastErr,
			ConsecutiveOK: b.ok, ConsecutiveFail: b.fail, PassiveDownUntil: b.passiveUntil,
		})
	}
	return out
}
