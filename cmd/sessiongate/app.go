package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessiongate/sessiongate/accesslog"
	"github.com/sessiongate/sessiongate/acme"
	"github.com/sessiongate/sessiongate/balancer"
	"github.com/sessiongate/sessiongate/config"
	"github.com/sessiongate/sessiongate/health"
	"github.com/sessiongate/sessiongate/limits"
	"github.com/sessiongate/sessiongate/metrics"
	"github.com/sessiongate/sessiongate/proxy"
	"github.com/sessiongate/sessiongate/proxy/cookie"
	"github.com/sessiongate/sessiongate/proxy/upstream"
	"github.com/sessiongate/sessiongate/sessionstore"
)

// app holds the running pieces and swaps them on reload. Everything a
// request touches is reached through atomic pointers, so a reload never
// blocks or fails a request.
type app struct {
	path   string
	log    *slog.Logger
	lookup lookupFunc
	file   atomic.Pointer[config.Config] // as written in the file
	cfg    atomic.Pointer[config.Config] // effective: DNS names expanded to addresses

	reg     *prometheus.Registry
	metrics *metrics.Metrics
	pool    *balancer.Pool
	checker *health.BackendChecker
	handler atomic.Pointer[generation]
	admin   atomic.Pointer[http.Handler]
	// renewals counts re-issued session cookies for the status page.
	renewals atomic.Uint64
	// replays counts requests sent to PHP again (proxy Observer.Replay).
	replays atomic.Uint64
	// queueTimeouts and queueFull count the session queue's 503s for the
	// status page.
	queueTimeouts, queueFull atomic.Uint64
	// refused counts the front door's refusals for the status page, by
	// metrics.RefusalReasons index.
	refused [4]atomic.Uint64 // len(metrics.RefusalReasons())
	// limits holds the per-client limits; nil when none is set. Built
	// once: limits changes apply on restart.
	limits *limits.Limiter
	// access is the access log; nil when access_log is off. It is set up
	// once: access_log changes apply on restart.
	access *accesslog.Logger
	// served are the TLS listener's certificates, set by serve; nil
	// without tls.
	served atomic.Pointer[servedCerts]

	// mu serialises reloads and guards the fields below.
	mu        sync.Mutex
	transport *upstream.Lean
	sess      *sessionPart // nil in plain-balancer mode
	bg        context.Context
	wg        *sync.WaitGroup
}

// generation is the proxy built from one config and the session layer it
// uses; requests acquire it for their whole run.
type generation struct {
	proxy *proxy.Proxy
	sess  *sessionPart // nil in plain-balancer mode
}

// sessionPart is the session layer built from one session+memcached config.
type sessionPart struct {
	store  *sessionstore.Store // also the one owner of memcached liveness: status pages read its Nodes
	marker *cookie.Marker
	cancel context.CancelFunc // stops the store's watchers
	// refs counts the requests using the part, plus one held by the app
	// while the part is current. The last release stops the store, so a
	// reload stops the old store when its last in-flight request is done.
	refs    atomic.Int64
	stopped chan struct{} // closed when the store's watchers have returned
}

func newApp(path string, log *slog.Logger, lookup lookupFunc) (*app, error) {
	file, err := config.Load(path)
	if err != nil {
		var ps *config.Problems
		if errors.As(err, &ps) {
			return nil, &problemsError{text: ps.Error()}
		}
		return nil, err
	}
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	cfg, err := resolve(context.Background(), file, lookup)
	if err != nil {
		return nil, err
	}
	a := &app{path: path, log: log, lookup: lookup, reg: prometheus.NewRegistry()}
	a.metrics = metrics.New(a.reg)
	a.file.Store(file)
	a.cfg.Store(cfg)

	backends, err := buildBackends(cfg)
	if err != nil {
		return nil, err
	}
	if a.pool, err = balancer.NewPool(cfg.Balancer.Policy, backends, balancer.WithSlowStart(cfg.Health.SlowStart)); err != nil {
		return nil, err
	}
	// A nil client makes the checker use its own transport without
	// keep-alives, so every probe also proves the backend accepts connections.
	a.checker = health.NewBackendChecker(healthOptions(cfg), targets(a.pool), a.pool, nil, log)
	a.transport = newTransport(cfg, cfg.Server.Sockio)
	if cfg.Session != nil {
		if a.sess, err = newSessionPart(cfg, cfg.Server.Sockio, log, a.metrics); err != nil {
			return nil, err
		}
	}
	l := cfg.Limits
	a.limits = limits.New(limits.Options{Rate: l.RequestsPerSecond, Burst: l.Burst,
		Conns: l.ConnectionsPerClient, Exempt: prefixes(l.Exempt)})
	if a.access, err = newAccessLog(cfg.AccessLog, a.metrics, log); err != nil {
		return nil, err
	}
	a.metrics.SetSource(metricsSource{a})
	a.handler.Store(&generation{proxy: a.buildProxy(cfg), sess: a.sess})
	a.buildAdmin(cfg, a.sess != nil)
	return a, nil
}

// start launches the background work (health checks, memcached watchers)
// under ctx; wg tracks it.
func (a *app) start(ctx context.Context, wg *sync.WaitGroup) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.bg, a.wg = ctx, wg
	wg.Add(2)
	go func() { defer wg.Done(); a.checker.Run(ctx) }()
	go func() { defer wg.Done(); a.discover(ctx) }()
	if a.sess != nil {
		a.sess.start(ctx, wg)
	}
	if a.access != nil {
		// Ends after the front server's shutdown (serve cancels ctx then),
		// writing every line queued until then.
		wg.Add(1)
		go func() { defer wg.Done(); a.access.Run(ctx) }()
	}
}

// newAccessLog opens the access log c describes; nil when it is off.
func newAccessLog(c config.AccessLog, m *metrics.Metrics, log *slog.Logger) (*accesslog.Logger, error) {
	if c.Off {
		return nil, nil
	}
	f, err := accesslog.ParseFormat(c.Format)
	if err != nil {
		return nil, err
	}
	o := accesslog.Options{Format: f, Dropped: m.AccessLogDropped, Logger: log}
	if c.Path == "" {
		return accesslog.New(os.Stdout, o), nil
	}
	l, err := accesslog.Open(c.Path, o)
	if err != nil {
		return nil, fmt.Errorf("access_log.path: %w", err)
	}
	return l, nil
}

// reopenAccessLog starts a new access log file (SIGUSR1, after logrotate
// renamed the old one).
func (a *app) reopenAccessLog() {
	if a.access == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.access.Reopen(ctx); err != nil {
		a.log.Error("access log reopen failed", "err", err)
		return
	}
	a.log.Info("access log reopened", "path", a.cfg.Load().AccessLog.Path)
}

func (a *app) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.transport.CloseIdleConnections()
}

// ServeHTTP hands the request to the current proxy, holding its session
// layer until the request is done.
func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := a.acquire()
	if g.sess != nil {
		defer g.sess.release()
	}
	g.proxy.ServeHTTP(w, r)
}

// acquire returns the current generation with a reference on its session
// layer. A reload may retire the layer between the load and the increment:
// then the layer is no longer current and acquire tries again, so a request
// never uses a layer whose last reference is gone.
func (a *app) acquire() *generation {
	for {
		g := a.handler.Load()
		if g.sess == nil {
			return g
		}
		g.sess.refs.Add(1)
		if a.handler.Load().sess == g.sess {
			return g
		}
		g.sess.release()
	}
}

// frontServer is the client-facing server; certs, when not nil, provides
// its certificates (tls.acme).
func (a *app) frontServer(certs *acme.Manager) proxy.Server {
	cfg := a.cfg.Load()
	o := proxy.ServerOptions{
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout,
		ReadTimeout:       cfg.Server.ReadTimeout,
		WriteTimeout:      cfg.Server.WriteTimeout,
		IdleTimeout:       cfg.Server.IdleTimeout,
		MaxHeaderBytes:    cfg.Server.MaxHeaderBytes,
		Logger:            a.log,
		NetHTTP:           cfg.Server.Engine == "net/http",
		DisableRawIO:      !cfg.Server.Sockio,
	}
	switch {
	case certs != nil:
		o.TLS = certs.TLSConfig(tlsConfig())
	case cfg.TLS != nil:
		o.TLS, o.CertFile, o.KeyFile = tlsConfig(), cfg.TLS.Cert, cfg.TLS.Key
	}
	return proxy.NewServer(a, o)
}

// refuse counts a connection or request refused at the front door for
// reason, one of metrics.RefusalReasons.
func (a *app) refuse(reason string) {
	a.metrics.ClientRefused(reason)
	a.refused[slices.Index(metrics.RefusalReasons(), reason)].Add(1)
}

// refusedCount is how many refuse calls gave reason.
func (a *app) refusedCount(reason string) uint64 {
	return a.refused[slices.Index(metrics.RefusalReasons(), reason)].Load()
}

// rateLimiter is the per-client request rate, counting its refusals.
type rateLimiter struct{ a *app }

func (r rateLimiter) Allow(client netip.Addr) (bool, time.Duration) {
	ok, wait := r.a.limits.Allow(client)
	if !ok {
		r.a.refuse(metrics.RefusedRate)
	}
	return ok, wait
}

// prefixes parses validated CIDR lists.
func prefixes(list []string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range list {
		if p, err := config.ParsePrefix(s); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

func (a *app) buildProxy(cfg *config.Config) *proxy.Proxy {
	o := proxy.Options{
		Pool:           a.pool,
		Transport:      a.transport,
		TrustedProxies: prefixes(cfg.TrustedProxies),
		Retries:        cfg.Upstream.Retries,
		MaxBodyBytes:   cfg.Server.MaxBodyBytes,
		Observer:       observer{m: a.metrics, h: a.checker, renewals: &a.renewals, replays: &a.replays},
		Logger:         a.log,
	}
	if a.access != nil { // a nil *Logger in the interface would not be nil
		o.AccessLog = a.access
	}
	if cfg.Limits.RequestsPerSecond > 0 {
		o.Limiter = rateLimiter{a}
	}
	if b := cfg.Server.RequestBuffering; b.Enabled {
		o.BodyBuffer = &proxy.BodyBufferOptions{MemoryBytes: b.MemoryBytes, MemoryTotal: b.MemoryTotal,
			Dir: b.DiskDir, DiskBytes: b.DiskBytes, DiskTotal: b.DiskTotal}
		if err := o.BodyBuffer.CheckDir(); err != nil {
			a.log.Warn("request bodies over server.request_buffering.memory_bytes will get 503: no temp file can be made", "err", err)
		}
	}
	o.UnderscoresInHeaders = cfg.Server.UnderscoresInHeaders
	if a.sess != nil {
		s := cfg.Session
		o.Session = &proxy.SessionOptions{
			Store:          a.sess.store,
			Locks:          a.sess.store,
			Cookie:         s.Cookie,
			Strict:         s.Strict,
			CookieLifetime: s.CookieLifetime,
			RenewAfter:     s.RenewAfter,
			Renewals:       a.sess.marker,
			Secure:         s.Secure,
			HTTPOnly:       s.HTTPOnly,
			SameSite:       sameSite(s.SameSite),
			Path:           s.Path,
			Domain:         s.Domain,
			Queue: &proxy.QueueOptions{MaxInFlight: s.MaxInFlight, MaxQueue: s.MaxQueue,
				MaxWaiters: s.MaxWaiters, Timeout: s.QueueTimeout, BypassPaths: s.BypassPaths,
				ReleaseOnFirstBytePaths: s.ReleaseOnFirstBytePaths, Observer: queueObserver{a}},
		}
	}
	return proxy.New(o)
}

// newTransport is the upstream client for cfg.Upstream; sockio is
// server.sockio, which only a restart changes.
func newTransport(cfg *config.Config, sockio bool) *upstream.Lean {
	l := upstream.NewLean(upstream.TransportOptions{
		DialTimeout:     cfg.Upstream.DialTimeout,
		ResponseTimeout: cfg.Upstream.ResponseTimeout,
		MaxIdleConns:    cfg.Upstream.MaxIdleConns,
	})
	l.DisableRawIO = !sockio
	return l
}

// newSessionPart builds the session layer for cfg; sockio is server.sockio,
// which only a restart changes.
func newSessionPart(cfg *config.Config, sockio bool, log *slog.Logger, m *metrics.Metrics) (*sessionPart, error) {
	s, mc := cfg.Session, cfg.Memcached
	store, err := sessionstore.New(sessionstore.Options{
		Servers:     mc.Servers,
		Timeout:     mc.Timeout,
		Handler:     s.Handler,
		KeyPrefix:   s.KeyPrefix,
		Replicas:    int(mc.Replicas),
		Strict:      s.Strict,
		Lifetime:    s.Lifetime,
		VerifyTTL:   s.VerifyTTL,
		Logger:      log,
		Repaired:    m.Repairs,
		RestartHold: mc.RestartHold,
		Held:        m.Hold,
		Probed:      m.MemcachedLatency, // the watchers' periodic stats double as the latency measurement

		User:         userOf(s.Serializer, s.UserKey),
		ScanInterval: mc.ScanInterval,
		ResyncRate:   mc.ResyncRate,

		StaleLockAfter: s.StaleLockAfter,
		LockReleased:   m.LockReleased,
		DisableRawIO:   !sockio,
	})
	if err != nil {
		return nil, err
	}
	maxAge := s.CookieLifetime
	if maxAge <= 0 {
		maxAge = s.Lifetime
	}
	if len(s.SigningKeys) == 0 && s.CookieLifetime > 0 {
		log.Warn("session.signing_keys is empty: each instance signs renewal cookies with its own random key, so instances renew more often than renew_after; set shared keys")
	}
	marker, err := cookie.NewMarker(s.MarkerCookie, s.SigningKeys, maxAge)
	if err != nil {
		return nil, err
	}
	p := &sessionPart{store: store, marker: marker, stopped: make(chan struct{})}
	p.refs.Store(1) // the app's, until a reload retires the part
	return p, nil
}

func (p *sessionPart) start(ctx context.Context, wg *sync.WaitGroup) {
	ctx, p.cancel = context.WithCancel(ctx)
	wg.Add(1)
	go func() { defer wg.Done(); defer close(p.stopped); p.store.Run(ctx) }()
}

// release drops one reference; the last one stops the store's watchers.
func (p *sessionPart) release() {
	if p.refs.Add(-1) == 0 {
		p.cancel()
	}
}

func buildBackends(cfg *config.Config) ([]*balancer.Backend, error) {
	bs := make([]*balancer.Backend, 0, len(cfg.Backends))
	for _, b := range cfg.Backends {
		u, err := url.Parse(b.URL)
		if err != nil {
			return nil, fmt.Errorf("backend %s: %w", b.Name, err)
		}
		w := b.Weight
		if w == 0 {
			w = 1
		}
		bs = append(bs, balancer.NewBackend(b.Name, u, w))
	}
	return bs, nil
}

func targets(p *balancer.Pool) []health.Target {
	var ts []health.Target
	for _, b := range p.Backends() {
		ts = append(ts, health.Target{Name: b.Name, URL: b.URL})
	}
	return ts
}

func healthOptions(cfg *config.Config) health.BackendOptions {
	h := cfg.Health
	return health.BackendOptions{
		Path:            h.Path,
		Interval:        h.Interval,
		DownInterval:    h.DownInterval,
		Timeout:         h.Timeout,
		Rise:            h.Rise,
		Fall:            h.Fall,
		ExpectStatus:    h.ExpectStatus,
		ExpectBody:      h.ExpectBody,
		Host:            h.Host,
		PassiveFailures: h.Passive.Failures,
		PassiveWindow:   h.Passive.Window,
		PassiveCooldown: h.Passive.Cooldown,
	}
}

func sameSite(s string) http.SameSite {
	switch strings.ToLower(s) {
	case "lax":
		return http.SameSiteLaxMode
	case "strict":
		return http.SameSiteStrictMode
	case "none":
		return http.SameSiteNoneMode
	}
	return 0
}

// errNoSessions answers session admin calls when the session layer is off.
var errNoSessions = errors.New("sessiongate runs without a session layer")

// observer feeds proxy events to metrics and passive health checks.
type observer struct {
	m        *metrics.Metrics
	h        *health.BackendChecker
	renewals *atomic.Uint64
	replays  *atomic.Uint64
}

func (o observer) Attempt(backend string, failed bool) { o.h.Observe(backend, failed) }
func (o observer) Request(backend, method string, status int, d time.Duration) {
	o.m.Request(backend, method, status, d)
}
func (o observer) Retry(backend string)   { o.m.Retry(backend) }
func (o observer) Session(outcome string) { o.m.Session(outcome) }
func (o observer) Renewal()               { o.renewals.Add(1); o.m.Renewal() }
func (o observer) Replay()                { o.replays.Add(1); o.m.Replay() }

// queueObserver feeds the session queue's events to metrics and status.
type queueObserver struct{ a *app }

func (o queueObserver) QueueWait(d time.Duration) { o.a.metrics.QueueWait(d) }
func (o queueObserver) QueueRejected(reason string) {
	if reason == "timeout" {
		o.a.queueTimeouts.Add(1)
	} else {
		o.a.queueFull.Add(1)
	}
	o.a.metrics.QueueRejected(reason)
}
