package proxy

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sessiongate/sessiongate/proxy/cookie"
	"github.com/sessiongate/sessiongate/sessionstore"
)

// Sessions is what the proxy needs from the session store.
// *sessionstore.Store implements it.
type Sessions interface {
	Check(ctx context.Context, id string) sessionstore.Result
	Touch(ctx context.Context, id string) error
}

// Locks is told which requests of verified sessions are in flight, and which
// of them lost their backend mid-request, so that the session lock such a
// request left behind can be released. *sessionstore.Store implements it.
type Locks interface {
	Begin(id string)
	End(id string)
	// Orphaned is called between Begin and End of a request whose Check
	// found the lock free and whose backend then failed under it.
	Orphaned(id string) int
}

// Faults tells whether a memcached node failed, restarted or came back
// since an epoch read before a Check. *sessionstore.Store implements it;
// a Store that does not turns replays off (see lostAtPHP).
type Faults interface {
	Epoch() uint64
	FaultSince(epoch uint64) bool
	// Recheck is Check for a request already in flight (between Begin
	// and End) that is to be sent again.
	Recheck(ctx context.Context, id string) sessionstore.Result
	// Unsettled tells whether a lock a returned node may hold for nobody
	// was still waiting for its release when the session's request went
	// to PHP.
	Unsettled(id string) bool
}

// Renewals signs and reads the bookkeeping cookie that tells every instance
// when a session's cookie was last renewed. *cookie.Marker implements it.
type Renewals interface {
	Name() string
	Encode(id string, renewedAt time.Time) (string, error)
	RenewedAt(value, id string) (time.Time, bool)
}

// SessionOptions configure the session layer of the proxy.
type SessionOptions struct {
	Store Sessions
	// Locks, if set, releases the session lock of a request whose backend
	// died under it (nil leaves it to PHP's lock expiry).
	Locks  Locks
	Cookie string // session cookie name, e.g. PHPSESSID
	// Strict removes unknown and malformed ids before PHP sees them.
	Strict bool
	// CookieLifetime > 0 re-issues the cookie with this Max-Age at most once
	// per RenewAfter, and renews the store TTL with it.
	CookieLifetime time.Duration
	RenewAfter     time.Duration
	Renewals       Renewals // required when CookieLifetime > 0
	// Cookie attributes, also enforced on the session cookie PHP sets.
	Secure   bool
	HTTPOnly bool
	SameSite http.SameSite // 0 leaves PHP's choice
	Path     string        // "" leaves PHP's choice
	Domain   string        // "" leaves PHP's choice
	Now      func() time.Time
	// Queue, if set, makes a session's requests beyond its MaxInFlight wait
	// here rather than in PHP (queue.go); Locks must then implement Slots.
	Queue *QueueOptions
}

// maxSessionCookies bounds how many same-named cookies one request may make
// us look at; the rest are dropped with the others.
const maxSessionCookies = 8

type sessionLayer struct {
	o      SessionOptions
	obs    Observer
	log    *slog.Logger
	queue  *queue // nil: requests never wait here (queue.go)
	faults Faults // nil: answers are never replayed (lostAtPHP)
	// sawStarted: some answer since this layer began carried
	// phpSessionExpires (lostAtPHP trusts its absence only then).
	sawStarted atomic.Bool
}

// sessionState is what the request side learned for the response side.
type sessionState struct {
	id      string // a verified id; "" when the request has no live session
	empty   bool   // and the session holds no data
	epoch   uint64 // Faults.Epoch read before the id was checked
	renew   bool   // the cookie is due for renewal
	locked  bool   // the session lock was held when the request was checked
	tracked bool   // Locks.Begin was called: Locks.End must follow
	slot    bool   // and through the queue: Slots.Release instead (queue.go)
	outcome string // as told to Observer.Session, for the access log
	reqID   string // the request's X-Request-ID, for log lines
}

func newSessionLayer(o *SessionOptions, obs Observer, log *slog.Logger) *sessionLayer {
	l := &sessionLayer{o: *o, obs: obs, log: log}
	l.faults, _ = o.Store.(Faults)
	if l.o.Now == nil {
		l.o.Now = time.Now
	}
	l.queue = newQueue(o.Queue, o.Locks)
	return l
}

// check verifies the request's session before PHP sees it and rewrites the
// Cookie header: an unknown or malformed id is removed in strict mode, and
// of several session cookies only the one that was checked is forwarded
// (the first valid one, which is also the one PHP would pick).
func (l *sessionLayer) check(r *http.Request) sessionState {
	var vals [maxSessionCookies]string
	n := findCookies(r.Header["Cookie"], l.o.Cookie, vals[:])
	var markerName, marker string
	if l.o.CookieLifetime > 0 {
		markerName = l.o.Renewals.Name()
		var mv [1]string
		if findCookies(r.Header["Cookie"], markerName, mv[:]) > 0 {
			marker = mv[0]
		}
	}
	// forward rewrites the Cookie header so that PHP gets only the session
	// cookie valued keep ("" = none) and never our marker; a request with
	// one session cookie to keep and no marker is left as sent.
	forward := func(keep string) {
		if keep == "" && n > 0 || n > 1 || marker != "" {
			keepOnly(r.Header, l.o.Cookie, keep, markerName)
		}
	}
	if n == 0 {
		forward("")
		return sessionState{}
	}
	raw, id := "", ""
	for _, v := range vals[:min(n, maxSessionCookies)] {
		if d, ok := cookie.DecodeID(v); ok {
			raw, id = v, d
			break
		}
	}

	res := sessionstore.Result{Verdict: sessionstore.Invalid}
	var epoch uint64
	if id != "" {
		if l.faults != nil {
			epoch = l.faults.Epoch()
		}
		res = l.o.Store.Check(r.Context(), id)
	}
	switch res.Verdict {
	case sessionstore.Killed:
		// Killed through some instance: PHP must never see the id again,
		// whatever Strict says, so that it makes a fresh one.
		l.obs.Session("killed_stripped")
		forward("")
		return sessionState{outcome: "killed_stripped"}
	case sessionstore.Invalid, sessionstore.Unknown:
		if l.o.Strict {
			o := res.Verdict.String() + "_stripped"
			l.obs.Session(o)
			forward("")
			return sessionState{outcome: o}
		}
		// Not strict: PHP gets the first session cookie as sent (the one it
		// would pick).
		l.obs.Session(res.Verdict.String())
		forward(cmp.Or(raw, vals[0]))
		return sessionState{outcome: res.Verdict.String()}
	case sessionstore.StoreDown, sessionstore.Adopted:
		// Fail open, or not strict: PHP sees the session cookie as sent,
		// and only that one of several.
		l.obs.Session(res.Verdict.String())
		forward(raw)
		return sessionState{outcome: res.Verdict.String()}
	}

	outcome := res.Verdict.String()
	if res.Cached {
		outcome = "cached"
	}
	l.obs.Session(outcome)
	forward(raw)
	st := sessionState{id: id, empty: res.Empty, epoch: epoch, locked: res.Locked, outcome: outcome, reqID: requestIDOf(r)}
	if l.o.Locks != nil && l.queue == nil { // else admit begins it
		l.o.Locks.Begin(id)
		st.tracked = true
	}
	if l.o.CookieLifetime > 0 {
		last, ok := l.o.Renewals.RenewedAt(marker, id)
		st.renew = !ok || l.o.Now().Sub(last) >= l.o.RenewAfter
	}
	return st
}

// end is called when the request st belongs to is over (or, for the queue,
// no longer holds the session: releaseEarly). Calling it again does nothing.
func (l *sessionLayer) end(st *sessionState) {
	switch {
	case st.slot:
		st.tracked, st.slot = false, false
		l.queue.slots.Release(st.id)
	case st.tracked:
		st.tracked = false
		l.o.Locks.End(st.id)
	}
}

// backendFailed is called after an attempt of st's request failed with err.
// If PHP died under the request holding the session lock, the lock is
// released (Locks.Orphaned guards against removing anyone else's). Only a
// request that found the lock free can have taken it; a waiter never did.
func (l *sessionLayer) backendFailed(r *http.Request, st *sessionState, err error, body *trackedBody) {
	if st.tracked && !st.locked && backendDied(r, err, body) {
		l.o.Locks.Orphaned(st.id)
	}
}

// backendDied reports whether a failed attempt means the PHP request died:
// the backend connection broke after the request was sent. Not when the
// client left or its body failed (PHP keeps running and releases the lock
// itself), not when the backend was never reached, and not on a timeout
// (PHP may still be working; session.stale_lock_after covers a hung one).
func backendDied(r *http.Request, err error, body *trackedBody) bool {
	var mbe *http.MaxBytesError
	switch {
	case r.Context().Err() != nil, errors.Is(err, context.Canceled), errors.As(err, &mbe),
		body.clientErr() != nil, isDial(err), isTimeout(err):
		return false
	}
	return true
}

// lostAtPHP reports whether PHP lost st's live session inside the request
// while a memcached node failed, restarted or came back under it: let
// through before sessiongate saw the fault, PHP met the node itself
// (pecl memcached's session_start fails on a dead primary, and strict mode
// replaces an id it could not validate). The session is still in the
// pool; only this answer lost it. PHP's answer shows it as a session
// cookie with another id, or as the lack of what session_start sends with
// PHP's default cache limiters (nocache, private): Expires in 1981
// (phpSessionExpires). That sign counts only once this layer has seen it
// on some answer: a site with session.cache_limiter public or none never
// sends it. A new id without a fault is PHP's own
// (session_regenerate_id) and stands. Nor is a fault the only cause the
// edge can fix: a lock a resumed node took for nobody, which the session's
// Check could not release in time (a loaded machine), makes session_start
// fail as well (no new id: the id is known); the re-check releases it
// (Store.Unsettled, Recheck).
func (l *sessionLayer) lostAtPHP(h http.Header, st *sessionState) bool {
	if l.faults == nil {
		return false
	}
	started := len(h["Expires"]) == 1 && h["Expires"][0] == phpSessionExpires
	if started && !l.sawStarted.Load() {
		l.sawStarted.Store(true)
	}
	if st.id == "" || st.empty {
		return false
	}
	failed := !started && l.sawStarted.Load()
	if failed && l.faults.Unsettled(st.id) {
		return true
	}
	return (failed || l.setsOtherID(h, st.id)) && l.faults.FaultSince(st.epoch)
}

// setsOtherID reports whether h sets the session cookie to a valid id
// other than id (a deletion does not count).
func (l *sessionLayer) setsOtherID(h http.Header, id string) bool {
	for _, line := range h["Set-Cookie"] {
		if cookieName(line) != l.o.Cookie {
			continue
		}
		c, err := http.ParseSetCookie(line)
		if err != nil || c.MaxAge < 0 {
			continue
		}
		if set, ok := cookie.DecodeID(c.Value); ok && set != id {
			return true
		}
	}
	return false
}

// phpSessionExpires is the Expires header PHP's session_start sends with
// session.cache_limiter nocache (the default) or private.
const phpSessionExpires = "Thu, 19 Nov 1981 08:52:00 GMT"

// replay is called after lostAtPHP, before the answer is dropped: it checks
// st's session again as a new request would be checked (held while the
// node restarts, repaired on it) and reports whether the request should go
// to PHP once more: only if the session is still live and holds data.
// Otherwise the answer PHP gave stands.
func (l *sessionLayer) replay(r *http.Request, st *sessionState) bool {
	st.epoch = l.faults.Epoch()
	res := l.faults.Recheck(r.Context(), st.id)
	if res.Verdict != sessionstore.Verified && res.Verdict != sessionstore.Repaired || res.Empty {
		return false
	}
	st.locked = res.Locked
	l.obs.Replay()
	l.log.Warn("PHP lost a live session at a memcached fault; sending the request again",
		"session", sessionstore.ShortID(st.id), "request_id", st.reqID)
	return true
}

// rewriteResponse enforces the configured attributes on a session cookie
// PHP sets and, when due, renews the session: store TTL on every replica
// first, then the cookie, so that both expire together. A response that
// carries a session cookie, PHP's or the renewal, is kept out of shared
// caches (see keepPrivate).
func (l *sessionLayer) rewriteResponse(ctx context.Context, h http.Header, st *sessionState) {
	if l.rewriteCookies(ctx, h, st) {
		keepPrivate(h)
	}
}

// rewriteCookies does rewriteResponse's work on the Set-Cookie lines and
// reports whether the response sets the session cookie.
func (l *sessionLayer) rewriteCookies(ctx context.Context, h http.Header, st *sessionState) bool {
	sets := false
	for i, line := range h["Set-Cookie"] {
		if cookieName(line) != l.o.Cookie {
			continue
		}
		// PHP set (or deleted) the session cookie itself: it wins, and our
		// renewal would only repeat or contradict it.
		st.renew = false
		sets = true
		c, err := http.ParseSetCookie(line)
		if err != nil {
			continue
		}
		l.applyAttributes(c)
		if s := c.String(); s != "" {
			h["Set-Cookie"][i] = s
		}
	}
	if !st.renew {
		return sets
	}
	if err := l.o.Store.Touch(ctx, st.id); err != nil {
		l.log.Warn("session renewal: store touch failed; cookie not renewed", "session", sessionstore.ShortID(st.id), "err", err, "request_id", st.reqID)
		return false
	}
	now := l.o.Now()
	c := &http.Cookie{
		Name:    l.o.Cookie,
		Value:   url.QueryEscape(st.id), // as PHP does: "," travels as %2C
		MaxAge:  int(l.o.CookieLifetime / time.Second),
		Expires: now.Add(l.o.CookieLifetime),
		Path:    "/",
	}
	l.applyAttributes(c)
	h.Add("Set-Cookie", c.String())
	if v, err := l.o.Renewals.Encode(st.id, now); err == nil {
		m := &http.Cookie{Name: l.o.Renewals.Name(), Value: v, MaxAge: c.MaxAge, Expires: c.Expires,
			Path: "/", HttpOnly: true, Secure: l.o.Secure, SameSite: http.SameSiteLaxMode}
		h.Add("Set-Cookie", m.String())
	}
	l.obs.Renewal()
	return true
}

// keepPrivate makes a response that sets a session cookie uncacheable for
// shared caches: unless Cache-Control already says private or no-store, it
// gets private, and loses public and s-maxage; max-age and the rest stay,
// so the browser's own cache works as before. Why not skip the renewal on
// such a response instead: a shared cache may store any response that
// says neither private nor no-store (with no Cache-Control at all, by
// heuristic freshness, RFC 9111 4.2.2), and Set-Cookie does not stop it,
// so it would hand one user's session (the renewal's, or the fresh id PHP
// sets on a page with session.cache_limiter=public) to everyone it serves
// the page; while skipping would let cookie and store TTL drift apart on
// sites whose pages say public. Marking the page private is what PHP's
// own session cache limiters (nocache, private) do. Cache-Control aimed at
// CDNs alone (CDN-Cache-Control, RFC 9213; Surrogate-Control) overrides
// Cache-Control there, so it goes whatever Cache-Control says.
func keepPrivate(h http.Header) {
	delete(h, "Cdn-Cache-Control")
	delete(h, "Surrogate-Control")
	cc := h["Cache-Control"]
	kept := make([]string, 0, 4)
	for _, v := range cc {
		for d := range strings.SplitSeq(v, ",") {
			d = textproto.TrimString(d)
			name, _, _ := strings.Cut(d, "=")
			switch strings.ToLower(textproto.TrimString(name)) {
			case "":
				continue
			case "no-store":
				return
			case "private":
				if name == d { // unqualified: the whole response
					return
				}
			case "public", "s-maxage":
				continue
			}
			kept = append(kept, d)
		}
	}
	h["Cache-Control"] = []string{strings.Join(append(kept, "private"), ", ")}
}

func (l *sessionLayer) applyAttributes(c *http.Cookie) {
	c.Secure = c.Secure || l.o.Secure
	c.HttpOnly = c.HttpOnly || l.o.HTTPOnly
	if l.o.SameSite != 0 {
		c.SameSite = l.o.SameSite
	}
	if l.o.Path != "" {
		c.Path = l.o.Path
	}
	if l.o.Domain != "" {
		c.Domain = l.o.Domain
	}
}

// findCookies stores the values of cookies called name, in order, into out
// and returns how many there were (which may exceed len(out)). It scans the
// raw headers instead of using Request.Cookies to avoid parsing every
// cookie on every request.
func findCookies(lines []string, name string, out []string) int {
	n := 0
	for _, line := range lines {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = textproto.TrimString(part)
			k, v, ok := strings.Cut(part, "=")
			if !ok || k != name {
				continue
			}
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if n < len(out) {
				out[n] = v
			}
			n++
		}
	}
	return n
}

// keepOnly rewrites the Cookie header so that, of the cookies called name,
// only one with value keep remains ("" removes them all), and cookies called
// drop are removed. Other cookies are kept as sent.
func keepOnly(h http.Header, name, keep, drop string) {
	lines := h["Cookie"]
	var b strings.Builder
	kept := false
	for _, line := range lines {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = textproto.TrimString(part)
			if part == "" {
				continue
			}
			k, v, _ := strings.Cut(part, "=")
			if k == drop && drop != "" {
				continue
			}
			if k == name {
				if keep == "" || kept || v != keep {
					continue
				}
				kept = true
			}
			if b.Len() > 0 {
				b.WriteString("; ")
			}
			b.WriteString(part)
		}
	}
	if b.Len() == 0 {
		delete(h, "Cookie")
		return
	}
	h["Cookie"] = []string{b.String()}
}

// cookieName returns the name of a Set-Cookie line.
func cookieName(line string) string {
	k, _, _ := strings.Cut(line, "=")
	return textproto.TrimString(k)
}
