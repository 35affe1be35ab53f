package main

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sessiongate/sessiongate/admin"
	"github.com/sessiongate/sessiongate/balancer"
	"github.com/sessiongate/sessiongate/config"
	"github.com/sessiongate/sessiongate/health"
	"github.com/sessiongate/sessiongate/metrics"
	"github.com/sessiongate/sessiongate/sessionstore"
)

// adminHandler builds the admin listener's handler from the current
// config; reload rebuilds it so a changed token takes effect.
func (a *app) adminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*a.admin.Load()).ServeHTTP(w, r)
	})
}

// buildAdmin makes the admin handler for cfg; sessions says whether the
// session endpoints exist. The caller holds a.mu or owns a exclusively.
func (a *app) buildAdmin(cfg *config.Config, sessions bool) {
	o := admin.Options{
		Token:    cfg.Admin.Token,
		Source:   adminSource{a},
		Backends: backendControl{a.pool},
		Reload:   a.reloadFromAPI,
		Metrics:  promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}),
		Logger:   a.log,
		Version:  buildVersion(),
		Hosts:    cfg.Admin.Hosts,
	}
	if sessions {
		o.Sessions = sessionAdmin{a}
		o.Pool = poolAdmin{a}
		o.Serializer, o.UserKey = cfg.Session.Serializer, cfg.Session.UserKey
	}
	h := admin.New(o)
	a.admin.Store(&h)
}

func (a *app) reloadFromAPI() error {
	if err := a.reload(); err != nil {
		return &admin.ConfigError{Err: err}
	}
	return nil
}

// session returns the current session layer, or nil.
func (a *app) session() *sessionPart {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sess
}

// adminSource adapts the running pieces to the admin status views.
type adminSource struct{ a *app }

func (s adminSource) Backends() []admin.BackendView {
	checks := map[string]health.BackendStatus{}
	for _, st := range s.a.checker.Status() {
		checks[st.Name] = st
	}
	var out []admin.BackendView
	for _, b := range s.a.pool.Backends() {
		c := checks[b.Name]
		share := s.a.pool.Share(b)
		warming := share < 1 && b.State() == balancer.StateUp
		if !warming {
			share = 1
		}
		out = append(out, admin.BackendView{
			Share: share, Warming: warming,
			Name: b.Name, URL: b.URL.String(), State: b.State().String(),
			InFlight: b.InFlight(), Requests: b.Requests(), Errors: b.Errors(),
			LastCheck: c.LastCheck, LatencyMS: ms(c.LastLatency), LastError: c.LastError,
		})
	}
	return out
}

func (s adminSource) Nodes() []admin.NodeView {
	sp := s.a.session()
	if sp == nil {
		return nil
	}
	var out []admin.NodeView
	for _, n := range sp.store.Nodes() {
		out = append(out, admin.NodeView{
			Addr: n.Addr, State: n.State, LatencyMS: ms(n.Latency), UptimeS: int64(n.Uptime / time.Second),
			Items: n.Items, Evictions: n.Evictions, ConnectionLosses: int64(n.Losses), Restarts: int64(n.Restarts),
			LastRestart: n.LastRestart, Bytes: n.Bytes, LimitBytes: n.LimitBytes, LastError: n.LastError,
		})
	}
	return out
}

func (s adminSource) Sessions() *admin.SessionView {
	sp := s.a.session()
	if sp == nil {
		return nil
	}
	st := sp.store.Stats()
	v := &admin.SessionView{Lookups: map[string]uint64{}, Repairs: st.Repairs, Cached: st.Cached,
		Kills: st.Kills, Renewals: s.a.renewals.Load(), LocksReleased: st.LocksReleased, StaleLocks: st.StaleLocks, ReplayedLocks: st.ReplayedLocks,
		Held: st.Held, Replays: s.a.replays.Load(), QueueTimeouts: s.a.queueTimeouts.Load(), QueueFull: s.a.queueFull.Load()}
	v.QueueSessions, v.QueueWaiters = sp.store.Queued()
	for i, n := range st.Lookups {
		v.Lookups[sessionstore.Verdict(i).String()] = n
	}
	return v
}

// FrontDoor implements admin.FrontDoorSource.
func (s adminSource) FrontDoor() admin.FrontDoorView {
	n := s.a.refusedCount
	return admin.FrontDoorView{RateLimited: n(metrics.RefusedRate), ConnectionsRefused: n(metrics.RefusedConnections),
		ProxyUntrusted: n(metrics.RefusedProxyUntrusted), ProxyHeader: n(metrics.RefusedProxyHeader),
		ClientsTracked: s.a.limits.Tracked()}
}

// Certificates implements admin.CertificatesSource.
func (s adminSource) Certificates() []admin.CertificateView {
	c := s.a.served.Load()
	if c == nil {
		return nil
	}
	var out []admin.CertificateView
	for _, cs := range c.samples() {
		out = append(out, admin.CertificateView{Name: cs.Name, NotAfter: cs.NotAfter})
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// metricsSource adapts the running pieces to the scrape-time metrics.
type metricsSource struct{ a *app }

func (s metricsSource) Backends() []metrics.BackendSample {
	var out []metrics.BackendSample
	for _, b := range s.a.pool.Backends() {
		out = append(out, metrics.BackendSample{Name: b.Name, Up: b.State() == balancer.StateUp, InFlight: b.InFlight()})
	}
	return out
}

// Queue implements metrics.QueueSource.
func (s metricsSource) Queue() (sessions, waiters int64) {
	if sp := s.a.session(); sp != nil {
		return sp.store.Queued()
	}
	return 0, 0
}

// Certificates implements metrics.CertSource.
func (s metricsSource) Certificates() []metrics.CertSample {
	if c := s.a.served.Load(); c != nil {
		return c.samples()
	}
	return nil
}

func (s metricsSource) Nodes() []metrics.NodeSample {
	sp := s.a.session()
	if sp == nil {
		return nil
	}
	var out []metrics.NodeSample
	for _, n := range sp.store.Nodes() {
		out = append(out, metrics.NodeSample{Addr: n.Addr, Up: n.Up, Restarting: n.State == sessionstore.NodeRestarting,
			Losses: int64(n.Losses), Restarts: int64(n.Restarts), Evictions: n.Evictions, Items: n.Items})
	}
	return out
}

// backendControl maps the admin API's verbs onto balancer admin states.
type backendControl struct{ p *balancer.Pool }

func (c backendControl) Drain(name string) error { return c.p.SetAdmin(name, balancer.AdminDraining) }
func (c backendControl) Enable(name string) error {
	return c.p.SetAdmin(name, balancer.AdminEnabled)
}
func (c backendControl) Maintenance(name string) error {
	return c.p.SetAdmin(name, balancer.AdminMaintenance)
}

// sessionAdmin adapts the current store to the admin session endpoints.
type sessionAdmin struct{ a *app }

func (s sessionAdmin) ValidID(id string) bool { return sessionstore.ValidID(id) }

func (s sessionAdmin) Inspect(ctx context.Context, id string) ([]admin.SessionEntry, error) {
	sp := s.a.session()
	if sp == nil {
		return nil, errNoSessions
	}
	es, err := sp.store.Inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	out := make([]admin.SessionEntry, len(es))
	for i, e := range es {
		out[i] = admin.SessionEntry(e)
	}
	return out, nil
}

func (s sessionAdmin) Read(ctx context.Context, id string) (admin.StoredSession, bool, error) {
	sp := s.a.session()
	if sp == nil {
		return admin.StoredSession{}, false, errNoSessions
	}
	st, found, err := sp.store.Read(ctx, id)
	return admin.StoredSession(st), found, err
}

func (s sessionAdmin) Kill(ctx context.Context, id string) error {
	sp := s.a.session()
	if sp == nil {
		return errNoSessions
	}
	if err := sp.store.Kill(ctx, id); err != nil {
		return err
	}
	s.a.metrics.Kill()
	return nil
}
