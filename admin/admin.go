// Package admin owns sessiongate's admin listener: the embedded live
// dashboard, the open status and metrics endpoints, and the token-protected
// API that inspects and kills sessions, drains/enables backends and reloads
// the configuration.
//
// It depends on nothing else in sessiongate: the data and controls it needs
// are small interfaces declared here (Source, Sessions, BackendControl) with
// plain view structs, which cmd adapts to the real packages.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/phpsession"
)

//go:embed ui
var assets embed.FS

// Source supplies the status data shown by /api/status and the dashboard.
// It is called once per status request.
type Source interface {
	Backends() []BackendView
	Nodes() []NodeView
	Sessions() *SessionView // nil when sessiongate runs without a session layer
}

// FrontDoorSource is an optional extension of Source: what the front door
// (PROXY protocol, per-client limits) turned away.
type FrontDoorSource interface {
	FrontDoor() FrontDoorView
}

// FrontDoorView counts the connections and requests refused at the front
// door since start.
type FrontDoorView struct {
	RateLimited        uint64 `json:"rate_limited"`        // 429 over limits.requests_per_second
	ConnectionsRefused uint64 `json:"connections_refused"` // over limits.connections_per_client
	ProxyUntrusted     uint64 `json:"proxy_untrusted"`     // from outside proxy_protocol.trusted
	ProxyHeader        uint64 `json:"proxy_header"`        // PROXY header missing, malformed or late
	ClientsTracked     int    `json:"clients_tracked"`     // in the per-client limits table now
}

// CertificatesSource is an optional extension of Source: the certificates
// the TLS listener serves.
type CertificatesSource interface {
	Certificates() []CertificateView
}

// CertificateView is one served certificate: the name it is served for
// and when it expires.
type CertificateView struct {
	Name     string    `json:"name"`
	NotAfter time.Time `json:"not_after"`
}

// BackendView is one backend as /api/status shows it.
type BackendView struct {
	Name      string    `json:"name"`
	URL       string    `json:"url"`
	State     string    `json:"state"` // up, down, draining or maintenance
	InFlight  int64     `json:"in_flight"`
	Requests  uint64    `json:"requests"` // since start
	Errors    uint64    `json:"errors"`   // since start
	LastCheck time.Time `json:"last_check,omitzero"`
	LatencyMS float64   `json:"latency_ms"` // of the last health probe
	LastError string    `json:"last_error"`
	// Share is the fraction of its full share of new requests the backend
	// gets now: below 1 while it ramps up after coming back
	// (health.slow_start), when Warming is true.
	Share   float64 `json:"share"`
	Warming bool    `json:"warming"`
}

// NodeView is one memcached node as /api/status shows it.
type NodeView struct {
	Addr string `json:"addr"`
	// State is up; restarting (connection lost less than
	// memcached.restart_hold ago: requests with a session wait for it); or
	// down (requests do not wait for it).
	State     string  `json:"state"`
	LatencyMS float64 `json:"latency_ms"` // of the last stats
	UptimeS   int64   `json:"uptime_s"`
	Items     int64   `json:"items"`
	Evictions int64   `json:"evictions"`
	// ConnectionLosses counts up-to-down transitions: connection closed or
	// refused, or no answer within memcached.timeout. Not a restart by itself.
	ConnectionLosses int64 `json:"connection_losses"`
	// Restarts counts restarts: pid or uptime changed, or flushed. Each one
	// means the node's data is gone.
	Restarts    int64     `json:"restarts"`
	LastRestart time.Time `json:"last_restart,omitzero"`
	Bytes       int64     `json:"bytes"`
	LimitBytes  int64     `json:"limit_bytes"`
	LastError   string    `json:"last_error"` // why it was last lost; empty while up
}

// SessionView is the session layer's counters since start.
type SessionView struct {
	// Lookups counts session checks by outcome, keyed like the metrics
	// outcome label: verified, repaired, unknown_stripped, invalid_stripped,
	// store_down, cached. The dashboard shows keys ending in "_stripped" as
	// stripped (forged or expired) ids.
	Lookups  map[string]uint64 `json:"lookups"`
	Repairs  uint64            `json:"repairs"` // copies written onto nodes that had lost a session
	Renewals uint64            `json:"renewals"`
	Kills    uint64            `json:"kills"`
	Cached   uint64            `json:"cached"` // checks answered from the verification cache
	// Session locks released: left by a request whose backend died
	// (orphaned), held past session.stale_lock_after (stale), and taken for
	// nobody by a memcached node that resumed after a hang (replayed).
	LocksReleased uint64 `json:"locks_released"`
	StaleLocks    uint64 `json:"stale_locks"`
	ReplayedLocks uint64 `json:"replayed_locks"`
	Held          uint64 `json:"held"` // requests that waited for a restarting memcached node
	// Replays counts GET and HEAD requests sent to PHP again because PHP
	// lost their live session at a memcached fault (the answer dropped).
	Replays uint64 `json:"replays"`
	// The session queue (session.max_in_flight): sessions with requests
	// waiting at the edge now, those requests, and the requests it answered
	// 503 since start (waited session.queue_timeout, or the queue was full).
	QueueSessions int64  `json:"queue_sessions"`
	QueueWaiters  int64  `json:"queue_waiters"`
	QueueTimeouts uint64 `json:"queue_timeouts"`
	QueueFull     uint64 `json:"queue_full"`
}

// SessionEntry is what one memcached node holds for a session id.
type SessionEntry struct {
	Node      string `json:"node"`
	Reachable bool   `json:"reachable"`
	Present   bool   `json:"present"`
	Size      int    `json:"size"`
	Flags     uint32 `json:"flags"`
	TTL       int64  `json:"ttl"` // seconds left, -1 = never expires
	Locked    bool   `json:"locked"`
	Error     string `json:"error"`
}

// Sessions inspects and deletes sessions in the store.
type Sessions interface {
	ValidID(id string) bool // whether id is one PHP could have generated
	Inspect(ctx context.Context, id string) ([]SessionEntry, error)
	Kill(ctx context.Context, id string) error
}

// SessionReader reads a session's stored value for GET
// /api/sessions/{id}?decode=1; without it (on Options.Sessions) that answers 404.
type SessionReader interface {
	Read(ctx context.Context, id string) (st StoredSession, found bool, err error)
}

// StoredSession is a session's value as PHP's handler stored it on one node.
type StoredSession struct {
	Node  string
	Value []byte
	Flags uint32 // memcached client flags: 0, or 2 = zlib (pecl memcache)
	TTL   int64  // seconds left, -1 never expires
}

// BackendControl changes a backend's admin state. The only error expected is
// an unknown name, which the API answers with 404.
type BackendControl interface {
	Drain(name string) error
	Enable(name string) error
	Maintenance(name string) error
}

// ConfigError marks a Reload error caused by the new configuration itself
// (the running one stays in force): /api/reload answers it with 422 instead
// of 500.
type ConfigError struct{ Err error }

// Error returns the underlying error's text.
func (e *ConfigError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

// Options configure the admin handler. Only Source is required.
type Options struct {
	Token    string           // empty = token endpoints disabled (403 with a message)
	Source   Source           // status data (backends, nodes, session counters)
	Sessions Sessions         // nil when no session layer: session endpoints return 404
	Pool     Pool             // nil when no session layer: pool endpoints return 404
	Backends BackendControl   // nil: backend endpoints return 404
	Reload   func() error     // nil: /api/reload returns 404
	Metrics  http.Handler     // served at /metrics; nil: 404
	Logger   *slog.Logger     // nil discards
	Version  string           // shown in /api/status and the dashboard
	Now      func() time.Time // clock for /api/status; nil = time.Now
	// Serializer is PHP's session.serialize_handler ("" = php) and UserKey
	// the dotted path of the user id in the data ("" = none), for ?decode=1.
	Serializer string
	UserKey    string
	// Hosts are further names the listener answers to besides its own
	// address and loopback names; any other Host gets 421 (see hostGuard).
	Hosts []string
}

type handler struct {
	o      Options
	digest [sha256.Size]byte // of o.Token; compared instead of the token so its length doesn't leak
	log    *slog.Logger
}

// New returns the admin listener's handler.
func New(o Options) http.Handler {
	h := &handler{o: o, digest: sha256.Sum256([]byte(o.Token)), log: o.Logger}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.o.Now == nil {
		h.o.Now = time.Now
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", asset("ui/index.html"))
	mux.HandleFunc("GET /ui/app.js", asset("ui/app.js"))
	mux.HandleFunc("GET /ui/app.css", asset("ui/app.css"))
	mux.HandleFunc("GET /api/status", h.status)
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics)
	}
	mux.HandleFunc("POST /api/pool/scan", h.auth(h.scan))
	mux.HandleFunc("GET /api/sessions", h.auth(h.list))
	mux.HandleFunc("DELETE /api/sessions", h.auth(h.killMany))
	mux.HandleFunc("GET /api/users/{user}/sessions", h.auth(h.list))
	mux.HandleFunc("DELETE /api/users/{user}/sessions", h.auth(h.killMany))
	mux.HandleFunc("GET /api/sessions/{id}", h.auth(h.inspect))
	mux.HandleFunc("DELETE /api/sessions/{id}", h.auth(h.kill))
	mux.HandleFunc("POST /api/backends/{name}/{action}", h.auth(h.control))
	mux.HandleFunc("POST /api/reload", h.auth(h.reload))
	mux.HandleFunc("GET /debug/pprof/profile", h.auth(h.cpuProfile))
	mux.HandleFunc("GET /debug/pprof/{name}", h.auth(h.namedProfile))
	return h.hostGuard(secureHeaders(mux))
}

// secureHeaders forbids framing, inline script and any foreign origin; the
// dashboard needs nothing but its own files and /api.
func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "+
			"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

func asset(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, assets, name)
	}
}

type statusJSON struct {
	Backends []BackendView `json:"backends"`
	Nodes    []NodeView    `json:"nodes"`
	Sessions *SessionView  `json:"sessions"`
	// FrontDoor is present when the Source implements FrontDoorSource.
	FrontDoor *FrontDoorView `json:"front_door,omitempty"`
	// Certificates is present when the Source implements
	// CertificatesSource and the listener serves TLS.
	Certificates []CertificateView `json:"certificates,omitempty"`
	Pool         *PoolView         `json:"pool"` // null until a scan finished
	Time         time.Time         `json:"time"`
	Version      string            `json:"version"`
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	st := statusJSON{Time: h.o.Now(), Version: h.o.Version}
	if h.o.Source != nil {
		st.Backends, st.Nodes, st.Sessions = h.o.Source.Backends(), h.o.Source.Nodes(), h.o.Source.Sessions()
		if fd, ok := h.o.Source.(FrontDoorSource); ok {
			v := fd.FrontDoor()
			st.FrontDoor = &v
		}
		if p, ok := h.o.Source.(PoolSource); ok {
			st.Pool = p.Pool()
		}
		if c, ok := h.o.Source.(CertificatesSource); ok {
			st.Certificates = c.Certificates()
		}
	}
	// Empty lists, not null, so clients can iterate without checks.
	if st.Backends == nil {
		st.Backends = []BackendView{}
	}
	if st.Nodes == nil {
		st.Nodes = []NodeView{}
	}
	writeJSON(w, http.StatusOK, st)
}

// auth guards the token endpoints.
//
// CSRF: a browser cannot attach an Authorization header to a cross-site
// request without a CORS preflight, which this handler never grants, so the
// bearer token alone already stops forged requests. As a second fence,
// requests carrying an Origin header that differs from Host are refused
// (browsers send Origin on every cross-origin and on same-origin POST/DELETE).
func (h *handler) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.o.Token == "" {
			writeError(w, http.StatusForbidden, "admin API disabled: set admin.token in the configuration")
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !sameHost(o, r.Host) {
			h.log.Warn("admin: cross-origin request refused", "remote", r.RemoteAddr, "origin", o)
			writeError(w, http.StatusForbidden, "cross-origin request refused")
			return
		}
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		d := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(d[:], h.digest[:]) != 1 {
			// r.Pattern, not the path: the path may hold a session id.
			h.log.Warn("admin: authentication failed", "remote", r.RemoteAddr, "route", r.Pattern)
			w.Header().Set("WWW-Authenticate", `Bearer realm="sessiongate admin"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next(w, r)
	}
}

func sameHost(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

// sessions returns the session layer and the valid id from the path, or
// answers the request itself and returns ok=false.
func (h *handler) sessions(w http.ResponseWriter, r *http.Request) (s Sessions, id string, ok bool) {
	if h.o.Sessions == nil {
		writeError(w, http.StatusNotFound, "no session layer configured")
		return nil, "", false
	}
	id = r.PathValue("id")
	if !h.o.Sessions.ValidID(id) {
		writeError(w, http.StatusBadRequest, "not a valid session id")
		return nil, "", false
	}
	return h.o.Sessions, id, true
}

func (h *handler) inspect(w http.ResponseWriter, r *http.Request) {
	s, id, ok := h.sessions(w, r)
	if !ok {
		return
	}
	if d := r.URL.Query().Get("decode"); d != "" && d != "0" {
		h.decoded(w, r, s, id)
		return
	}
	entries, err := s.Inspect(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if entries == nil {
		entries = []SessionEntry{}
	}
	writeJSON(w, http.StatusOK, entries)
}

// decodedJSON is GET /api/sessions/{id}?decode=1's answer.
type decodedJSON struct {
	Node       string         `json:"node"`  // the copy read: the one with the most time left
	Bytes      int            `json:"bytes"` // as stored (compressed if flags is 2)
	Flags      uint32         `json:"flags"`
	TTL        int64          `json:"ttl"`
	Serializer string         `json:"serializer"`
	Data       map[string]any `json:"data"`               // see package phpsession for the shapes
	UserKey    string         `json:"user_key,omitempty"` // session.user_key
	User       *string        `json:"user,omitempty"`     // the scalar at UserKey, if there is one
}

// decoded answers ?decode=1: the session's data as JSON. Data PHP's
// serializer would not accept (or a zlib bomb) is 422, never a crash.
func (h *handler) decoded(w http.ResponseWriter, r *http.Request, s Sessions, id string) {
	rd, ok := s.(SessionReader)
	if !ok {
		writeError(w, http.StatusNotFound, "reading session data is not available")
		return
	}
	st, found, err := rd.Read(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if !found {
		writeError(w, http.StatusNotFound, "no node holds this session")
		return
	}
	ser := h.o.Serializer
	if ser == "" {
		ser = phpsession.PHP
	}
	out := decodedJSON{Node: st.Node, Bytes: len(st.Value), Flags: st.Flags, TTL: st.TTL, Serializer: ser, UserKey: h.o.UserKey}
	out.Data, err = phpsession.Decode(st.Value, st.Flags, ser)
	var body []byte
	if err == nil {
		if h.o.UserKey != "" {
			if u, ok := phpsession.Field(out.Data, h.o.UserKey); ok {
				out.User = &u
			}
		}
		body, err = json.Marshal(out)
	}
	if err != nil {
		h.log.Info("admin: session data not decodable", "sid", shortHash(id), "serializer", ser, "err", err)
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("session data is not valid %s session data: %v", ser, err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(body, '\n'))
}

func (h *handler) kill(w http.ResponseWriter, r *http.Request) {
	s, id, ok := h.sessions(w, r)
	if !ok {
		return
	}
	if err := s.Kill(r.Context(), id); err != nil {
		h.log.Warn("admin: session kill failed", "sid", shortHash(id), "err", err)
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	h.log.Info("admin: session killed", "sid", shortHash(id), "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) control(w http.ResponseWriter, r *http.Request) {
	if h.o.Backends == nil {
		writeError(w, http.StatusNotFound, "backend control not configured")
		return
	}
	name, action := r.PathValue("name"), r.PathValue("action")
	var do func(string) error
	switch action {
	case "drain":
		do = h.o.Backends.Drain
	case "enable":
		do = h.o.Backends.Enable
	case "maintenance":
		do = h.o.Backends.Maintenance
	default:
		writeError(w, http.StatusNotFound, "unknown action (drain, enable, maintenance)")
		return
	}
	if err := do(name); err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	h.log.Info("admin: backend state changed", "backend", name, "action", action, "remote", r.RemoteAddr)
	view := BackendView{Name: name}
	if h.o.Source != nil {
		for _, b := range h.o.Source.Backends() {
			if b.Name == name {
				view = b
				break
			}
		}
	}
	writeJSON(w, http.StatusOK, view)
}

func (h *handler) reload(w http.ResponseWriter, r *http.Request) {
	if h.o.Reload == nil {
		writeError(w, http.StatusNotFound, "reload not configured")
		return
	}
	if err := h.o.Reload(); err != nil {
		code := http.StatusInternalServerError
		if ce := (*ConfigError)(nil); errors.As(err, &ce) {
			code = http.StatusUnprocessableEntity
		}
		h.log.Warn("admin: reload failed", "err", err, "remote", r.RemoteAddr)
		writeError(w, code, err.Error())
		return
	}
	h.log.Info("admin: configuration reloaded", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
}

// writeJSON encodes v with encoding/json, which also escapes <, > and & so
// names from the configuration can never become markup.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// shortHash identifies a session id in logs without revealing it.
func shortHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:4])
}
