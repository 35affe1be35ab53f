package admin

// This file serves the pool's sessions: the inventory (/api/status "pool",
// POST /api/pool/scan), listing and searching them (GET /api/sessions,
// GET /api/users/{id}/sessions) and killing many at once (DELETE
// /api/users/{id}/sessions, DELETE /api/sessions?all=yes).

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// PoolView is the latest scan of the memcached pool, /api/status's "pool".
type PoolView struct {
	Sessions int64 `json:"sessions"`  // distinct session data keys
	WithData int64 `json:"with_data"` // of which not empty placeholders
	// Active counts sessions last accessed within "1m", "5m" and "15m".
	Active     map[string]int64        `json:"active"`
	Incomplete int64                   `json:"incomplete"` // missing on some node (replicas: all)
	PerNode    map[string]PoolNodeView `json:"per_node"`
	ScannedAt  time.Time               `json:"scanned_at"`
	ScanSecs   float64                 `json:"scan_seconds"`
	// Sampled: past the exact-count bound; the pool-wide counts are
	// estimates (per-node ones stay exact).
	Sampled bool `json:"sampled"`
	// Sizes is the value size histogram: sessions of at most LE bytes
	// (LE -1: larger than every bound), not cumulative.
	Sizes []SizeBucket `json:"sizes"`
	// Largest are the largest sessions, by hashed id: /api/sessions with
	// min_bytes finds their ids.
	Largest []LargestView `json:"largest"`
	Resync  *ResyncView   `json:"resync,omitempty"`
}

// PoolNodeView is one node's part of the scan.
type PoolNodeView struct {
	Sessions int64  `json:"sessions"`
	WithData int64  `json:"with_data"`
	Locks    int64  `json:"locks"` // session lock keys
	Other    int64  `json:"other"` // other applications' keys, tombstones
	Error    string `json:"error,omitempty"`
}

// SizeBucket is one bucket of PoolView.Sizes.
type SizeBucket struct {
	LE    int   `json:"le"`
	Count int64 `json:"count"`
}

// LargestView is one of the largest sessions.
type LargestView struct {
	Session string `json:"session"` // hashed id
	Bytes   int    `json:"bytes"`
}

// ResyncView is the progress of copying sessions onto nodes that lack
// them (after a node restarted empty or joined).
type ResyncView struct {
	Running bool      `json:"running"`
	Node    string    `json:"node"` // the node being filled, or last filled
	Done    int64     `json:"done"` // sessions looked at
	Total   int64     `json:"total"`
	Copied  int64     `json:"copied"`
	Rate    float64   `json:"rate"` // sessions looked at per second
	Started time.Time `json:"started,omitzero"`
	Ended   time.Time `json:"ended,omitzero"`
	Error   string    `json:"error,omitempty"`
}

// PoolSource is an optional part of a Source: the pool's inventory for
// /api/status. Nil means no scan has finished yet.
type PoolSource interface {
	Pool() *PoolView
}

// SessionQuery selects sessions for GET /api/sessions.
type SessionQuery struct {
	ActiveWithin time.Duration // 0 = any
	MinBytes     int
	User         string // "" = any; needs session.user_key
	Limit        int
	Cursor       string // from the previous page's Next; "" = first page
}

// ListedSession is one session in a listing.
type ListedSession struct {
	ID         string    `json:"id"`
	Bytes      int       `json:"bytes"` // largest copy's value bytes
	TTL        int64     `json:"ttl"`   // seconds left (longest copy), -1 = never expires
	LastAccess time.Time `json:"last_access,omitzero"`
	Nodes      []string  `json:"nodes"` // nodes holding a copy
	Locked     bool      `json:"locked"`
}

// SessionPage is a page of a listing; Next is the cursor of the next page,
// empty on the last.
type SessionPage struct {
	Sessions []ListedSession `json:"sessions"`
	Next     string          `json:"next"`
}

// Pool scans, lists and searches the sessions in the pool.
type Pool interface {
	Scan(ctx context.Context) (*PoolView, error)
	List(ctx context.Context, q SessionQuery) (SessionPage, error)
	// Logout kills every session of user, or with user "" every session in
	// the pool, so that every instance sees it, telling each(id) of every
	// session killed; it returns how many.
	Logout(ctx context.Context, user string, each func(id string)) (int, error)
}

// ErrNoUserKey is what Pool.List returns for a User query without
// session.user_key: answered 400.
var ErrNoUserKey = errors.New("session.user_key is not set: sessions cannot be searched by user")

// List bounds.
const (
	// MaxListLimit caps limit= of a listing.
	MaxListLimit = 1000
	// logoutTime is how long a logout's response may take to write: a
	// pool-wide one kills sessions in batches at a few thousand a second,
	// longer than the listener's write timeout allows.
	logoutTime = 15 * time.Minute
)

func (h *handler) scan(w http.ResponseWriter, r *http.Request) {
	if h.o.Pool == nil {
		writeError(w, http.StatusNotFound, "no session layer configured")
		return
	}
	v, err := h.o.Pool.Scan(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// query parses the listing parameters.
func query(r *http.Request) (SessionQuery, error) {
	q := SessionQuery{Limit: 100, Cursor: r.URL.Query().Get("cursor"), User: r.URL.Query().Get("user")}
	if v := r.URL.Query().Get("active_within"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return q, errors.New("active_within: want a duration like 5m")
		}
		q.ActiveWithin = d
	}
	for name, p := range map[string]*int{"min_bytes": &q.MinBytes, "limit": &q.Limit} {
		if v := r.URL.Query().Get(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return q, errors.New(name + ": want a non-negative integer")
			}
			*p = n
		}
	}
	q.Limit = min(max(q.Limit, 1), MaxListLimit)
	return q, nil
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	if h.o.Pool == nil {
		writeError(w, http.StatusNotFound, "no session layer configured")
		return
	}
	q, err := query(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if id := r.PathValue("user"); id != "" {
		q.User = id
	}
	h.writePage(w, r, q)
}

func (h *handler) writePage(w http.ResponseWriter, r *http.Request, q SessionQuery) {
	page, err := h.o.Pool.List(r.Context(), q)
	switch {
	case errors.Is(err, ErrNoUserKey):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if page.Sessions == nil {
		page.Sessions = []ListedSession{}
	}
	writeJSON(w, http.StatusOK, page)
}

// killMany kills every session of user (or, with user "", every session
// in the pool) through Pool.Logout, so every instance sees it; each kill is
// logged with the id hashed.
func (h *handler) killMany(w http.ResponseWriter, r *http.Request) {
	if h.o.Pool == nil {
		writeError(w, http.StatusNotFound, "no session layer configured")
		return
	}
	user := r.PathValue("user")
	if user == "" && r.URL.Query().Get("all") != "yes" {
		writeError(w, http.StatusBadRequest, "to log every session out, say DELETE /api/sessions?all=yes")
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(logoutTime)) // best effort
	killed, err := h.o.Pool.Logout(r.Context(), user, func(id string) {
		h.log.Info("admin: session killed", "sid", shortHash(id), "remote", r.RemoteAddr, "user", user != "")
	})
	switch {
	case errors.Is(err, ErrNoUserKey):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		h.log.Warn("admin: logout stopped", "user", user != "", "killed", killed, "err", err, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error(), "killed": killed})
		return
	}
	h.log.Info("admin: sessions killed", "user", user != "", "all", user == "", "killed", killed, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]int{"killed": killed})
}
