// Package proxy owns the per-request path from browser to PHP backend: it
// checks the request's PHP session with the session layer, holds a session's
// requests beyond its in-flight bound at the edge (queue.go), picks a backend,
// forwards the request with cleaned and X-Forwarded-* headers, retries on
// another backend when that is safe, streams the response back (renewing the
// session cookie when due) and classifies failures into 502, 504, 499 and,
// for the client's own body, 408 and 413.
//
// The upstream client sits behind the Upstream interface so that the HTTP/1.1
// engine can change without touching the rest.
package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessiongate/sessiongate/balancer"
	"github.com/sessiongate/sessiongate/proxy/internal/syntax"
	"github.com/sessiongate/sessiongate/proxy/upstream"
)

// StatusClientClosed is logged (never sent) when the client went away
// before the response, following nginx's 499: its connection is closed
// without an answer.
const StatusClientClosed = 499

// Picker chooses a backend not in tried, or nil when none is available.
// *balancer.Pool implements it.
type Picker interface {
	Pick(tried []*balancer.Backend) *balancer.Backend
	// PickEnabled is the last resort when Pick finds nothing available:
	// an admin-enabled backend not in tried, whatever its health, or nil.
	PickEnabled(tried []*balancer.Backend) *balancer.Backend
}

// Upstream sends one request to a backend. *http.Transport implements it,
// and so does *upstream.Lean, the default (see Direct).
type Upstream interface {
	RoundTrip(*http.Request) (*http.Response, error)
}

// Observer is told what happened to each request. All methods must be
// cheap and safe for concurrent use.
type Observer interface {
	// Attempt reports one upstream try: failed means a connection error or a
	// 5xx answer (feeds passive health checks).
	Attempt(backend string, failed bool)
	// Request reports a finished client request; backend is "" when none
	// was reached.
	Request(backend, method string, status int, d time.Duration)
	// Retry reports that a request is being retried after backend failed.
	Retry(backend string)
	// Session reports the session layer's outcome for a request.
	Session(outcome string)
	// Renewal reports a re-issued session cookie.
	Renewal()
	// Replay reports a request sent to PHP again because PHP's answer lost
	// its live session at a memcached fault (see sessionLayer.lostAtPHP).
	Replay()
}

// Options configure a Proxy.
type Options struct {
	Pool      Picker
	Transport Upstream
	// Session enables the session layer; nil proxies without looking at
	// session cookies.
	Session *SessionOptions
	// TrustedProxies are the peers whose X-Forwarded-* headers are kept.
	TrustedProxies []netip.Prefix
	// Retries is how many other backends a failed request may try.
	Retries int
	// MaxBodyBytes bounds request bodies (413 beyond); 0 = unlimited.
	MaxBodyBytes int64
	Observer     Observer
	Logger       *slog.Logger
	// UnderscoresInHeaders forwards request header fields whose names hold
	// an underscore; by default they are dropped (see dropUnderscored).
	UnderscoresInHeaders bool
	// BodyBuffer, when set, reads each request body whole before a
	// backend is picked (see BodyBufferOptions); nil streams bodies.
	BodyBuffer *BodyBufferOptions
	// AccessLog, if set, gets one entry per finished request.
	AccessLog AccessLog
	// Limiter, if set, meters each client's requests: those it refuses
	// get 429 with Retry-After.
	Limiter Limiter
}

// Limiter decides whether client (the address the access log names: the
// peer's, or behind trusted proxies the one they forwarded for) may make a
// request now, and if not, how long until it may.
type Limiter interface {
	Allow(client netip.Addr) (bool, time.Duration)
}

// Proxy is an http.Handler that forwards requests to backends.
type Proxy struct {
	o       Options
	session *sessionLayer
	bodies  *bodyBuffers // nil: bodies stream
	bufs    sync.Pool
	ids     *idSource
}

// New builds a Proxy. Pool and Transport are required.
func New(o Options) *Proxy {
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{o: o, ids: newIDSource()}
	p.bufs.New = func() any { b := make([]byte, 32<<10); return &b }
	if o.Session != nil {
		p.session = newSessionLayer(o.Session, o.Observer, o.Logger)
	}
	if o.BodyBuffer != nil {
		p.bodies = newBodyBuffers(*o.BodyBuffer, &p.bufs, o.Logger)
	}
	return p
}

// ServeHTTP forwards r to a backend.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// Whether the peer is a trusted proxy decides the request id, the
	// logged client address and the X-Forwarded-* headers: settle it once.
	trusted := p.trusted(r.RemoteAddr)
	sc := new(scratch)
	id := p.requestID(w, r, trusted, &sc.id)
	var al accessEntry
	if p.o.AccessLog != nil {
		w = al.begin(p, w, r, start, id, trusted)
	}
	rec := record{upstream: -1}
	backend, status := p.serve(w, r, trusted, &rec, sc)
	d := time.Since(start)
	name := ""
	if backend != nil {
		name = backend.Name
	}
	p.o.Observer.Request(name, r.Method, status, d)
	if p.o.AccessLog != nil {
		p.o.AccessLog.Log(al.finish(w, d, status, name, &rec))
	}
	if status == StatusClientClosed {
		// Nobody to answer: close the connection rather than let the
		// server finish an empty 200 for a client that may still read
		// (one that half-closed after a truncated upload).
		panic(http.ErrAbortHandler)
	}
}

// scratch is what one request needs beyond its own objects, in a single
// allocation: the backends tried (Pick is an interface call, so escape
// analysis cannot keep them on the stack), the request id made for it, and
// the X-Forwarded-For and X-Forwarded-Host values. The header slices point
// into it, which keeps it alive as long as they are; nothing reuses it.
type scratch struct {
	tried [4]*balancer.Backend // room for the usual attempts
	id    idHeader
	fwd   [2]string
}

// serve does the work of ServeHTTP and returns the backend that answered
// (if any) and the status the client got. trusted says whether the peer is
// a trusted proxy; rec collects what the access log wants to know.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, trusted bool, rec *record, sc *scratch) (*balancer.Backend, int) {
	if r.ProtoMajor == 2 {
		// Two things net/http's HTTP/2 server lets through that its HTTP/1
		// one (and proxy/h1) refuses, and an HTTP/1.1 request to the backend
		// cannot carry as they came:
		switch {
		case strings.IndexByte(r.URL.RawQuery, ' ') >= 0:
			// A space in the :path's query (net/url keeps it; the path's
			// are escaped): the request line would read another target
			// and version.
			http.Error(w, "400 Bad Request: a space in the request target", http.StatusBadRequest)
			return nil, http.StatusBadRequest
		case !syntax.Host(r.Host):
			// An :authority (or Host) with bytes no host has — a space, a
			// slash, a quote — which PHP would take for the site's name
			// ($_SERVER['HTTP_HOST']) in the links it writes.
			http.Error(w, "400 Bad Request: invalid Host", http.StatusBadRequest)
			return nil, http.StatusBadRequest
		}
	}
	if r.ProtoMajor == 1 && (len(r.TransferEncoding) > 0 || r.ProtoMinor == 0 && r.ContentLength != 0) {
		// RFC 9112 6.1: after a request with both Transfer-Encoding and
		// Content-Length, or an HTTP/1.0 one with Transfer-Encoding, the
		// connection must be closed, or bytes hidden behind the body are
		// read as a request of their own. net/http's parser removes the
		// evidence before we see the request, so every chunked request,
		// and every HTTP/1.0 one with a body, closes it; browsers send
		// neither. An HTTP/1.0 request with Transfer-Encoding looks
		// bodiless here: h1 sees the field in the raw head and closes
		// (see h1's closeAfter); under net/http (server.engine: net/http)
		// every HTTP/1.0 request closes (see closeHTTP10).
		w.Header().Set("Connection", "close")
	}
	// Per-client rate (limits:), after the close decision above so that a
	// refused request with an ambiguous body still closes its connection.
	if p.o.Limiter != nil {
		if ip, err := netip.ParseAddr(p.clientAddr(r, trusted)); err == nil {
			if ok, wait := p.o.Limiter.Allow(ip); !ok {
				w.Header().Set("Retry-After", strconv.FormatInt(int64(max(1, (wait+time.Second-1)/time.Second)), 10))
				http.Error(w, "429 Too Many Requests: slow down and retry later.", http.StatusTooManyRequests)
				return nil, http.StatusTooManyRequests
			}
		}
	}
	if p.o.MaxBodyBytes > 0 {
		if r.ContentLength > p.o.MaxBodyBytes {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return nil, http.StatusRequestEntityTooLarge
		}
		// Only a body that may have bytes is wrapped, by the rule the
		// lean upstream path goes by: the limit's reader around
		// http.NoBody (or HTTP/2's empty Body) made every GET look as if
		// it had a body, and upstream.Lean left all of them to
		// http.Transport.
		if upstream.HasBody(r) {
			r.Body = http.MaxBytesReader(w, r.Body, p.o.MaxBodyBytes)
		}
	}
	// Body buffering hook (bodybuf.go): the whole body is read before a
	// backend is picked, so a slow client never holds a PHP worker.
	if p.bodies != nil {
		buffered, status := p.bodies.buffer(w, r)
		if status != 0 {
			return nil, status
		}
		defer buffered.release()
	}

	// Request trailers are read (they end the body) but never forwarded: a
	// trailer is a header field that arrives after the body, past the
	// session check and the header cleanup, and backends such as php -S
	// merge them into the headers (a Cookie trailer fixed PHP's session
	// id). RFC 9110 6.5.1 lets a proxy drop them. The servers fill the
	// map they gave r (or a new one) once the body ends, so dropping it
	// now keeps it out of the copy the upstream client sends.
	r.Trailer = nil
	upgrade := upgradeType(r.Header)
	prepareHeaders(r, trusted, p.o.UnderscoresInHeaders, &sc.fwd)
	if upgrade != "" {
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", upgrade)
	}

	var sess sessionState
	if p.session != nil {
		sess = p.session.check(r)
		defer p.session.end(&sess)
		rec.outcome, rec.sessionID = sess.outcome, sess.id
		// Queue hook (queue.go): wait here for a slot of the session.
		if status := p.session.admit(w, r, &sess); status != 0 {
			return nil, status
		}
	}

	var body *trackedBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &trackedBody{rc: r.Body}
		rec.body = body
	}
	var out *http.Request // r for the Upstream, made when first needed

	tried := sc.tried[:0]
	lastResort, replayed := false, false
	for attempt := 0; ; attempt++ {
		var b *balancer.Backend
		if !lastResort {
			b = p.o.Pool.Pick(tried)
			// Health checks took every backend out. They may be wrong —
			// typically every PHP worker is busy waiting for a hung memcached
			// node, so probes time out while requests would still be served,
			// slowly — and a 503 is a certain failure: try enabled backends.
			lastResort = b == nil && len(tried) == 0
		}
		if lastResort {
			b = p.o.Pool.PickEnabled(tried)
		}
		if b == nil {
			if len(tried) == 0 {
				writeNoBackend(w)
				return nil, http.StatusServiceUnavailable
			}
			if lastResort {
				// Health checks were right: nothing takes connections.
				writeNoBackend(w)
				return tried[len(tried)-1], http.StatusServiceUnavailable
			}
			return tried[len(tried)-1], p.fail(w, r, tried[len(tried)-1], errNoMoreBackends, nil)
		}
		tried = append(tried, b)

		b.Acquire()
		sent := time.Now()
		res, err := p.roundTrip(r, &out, body, b.URL)
		rec.upstream = time.Since(sent)
		// What the client did is not the backend's fault: a client that
		// hung up, or whose body could not be read (cut short, too slow for
		// read_timeout, over the size limit). Counting it would let anyone
		// take healthy backends out through passive checks with a few
		// truncated uploads (or a load test's closing connections).
		clientErr := body.clientErr()
		clientFault := clientErr != nil || r.Context().Err() != nil
		if err != nil {
			b.Release(!clientFault)
			if !clientFault {
				p.o.Observer.Attempt(b.Name, true)
			}
			if p.session != nil {
				p.session.backendFailed(r, &sess, err, body) // before any retry takes the lock
			}
			if attempt < p.o.Retries && !clientFault && retryable(err, r.Method, body) {
				p.o.Observer.Retry(b.Name)
				rec.retries++
				p.o.Logger.Warn("backend failed, retrying on another", "backend", b.Name, "err", err, "request_id", requestIDOf(r))
				continue
			}
			if lastResort && isDial(err) && !clientFault {
				writeNoBackend(w) // every backend down, and it shows: 503, not 502
				return b, http.StatusServiceUnavailable
			}
			return b, p.fail(w, r, b, err, clientErr)
		}
		failed := res.StatusCode >= 500 && !clientFault
		p.o.Observer.Attempt(b.Name, failed)
		// Once per request, and only for requests that may be sent twice
		// (bodiless GET and HEAD): PHP met a memcached fault inside the
		// request and lost the live session (a new id, or session_start
		// failed). Drop that answer and send the request again once the
		// session is checked (held for the node, repaired) as a new
		// request would be.
		if !replayed && body == nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
			upgrade == "" && p.session != nil && p.session.lostAtPHP(res.Header, &sess) && p.session.replay(r, &sess) {
			res.Body.Close()
			b.Release(failed)
			replayed, lastResort = true, false
			tried = tried[:0]
			rec.retries++
			continue
		}
		status := p.respond(w, r, res, &sess)
		b.Release(failed)
		return b, status
	}
}

var errNoMoreBackends = errors.New("proxy: every available backend failed")

// Direct is an Upstream that can send some requests as the server received
// them to a backend's base URL (upstream.Lean does, for the requests that
// make up most traffic): the copy of the request that RoundTrip needs
// allocates more than the rest of the forwarding does. roundTrip asks
// Takes first and uses RoundTripTo only when it says yes.
type Direct interface {
	Upstream
	// Takes reports whether RoundTripTo can send r to base.
	Takes(r *http.Request, base *url.URL) bool
	// RoundTripTo sends r, unmodified, to the backend at base as RoundTrip
	// would send r's copy with the URL upstream.TargetURL(base, r.URL).
	RoundTripTo(r *http.Request, base *url.URL) (*http.Response, error)
}

// roundTrip sends r to the backend at base, through a copy *out (made on
// first use and kept for retries) unless the Upstream takes r directly.
func (p *Proxy) roundTrip(r *http.Request, out **http.Request, body *trackedBody, base *url.URL) (*http.Response, error) {
	if d, ok := p.o.Transport.(Direct); ok && d.Takes(r, base) {
		return d.RoundTripTo(r, base)
	}
	if *out == nil {
		o := r.WithContext(r.Context())
		o.RequestURI = "" // a client request must not carry one
		o.Close = false
		if body != nil {
			o.Body = body
		}
		*out = o
	}
	(*out).URL = upstream.TargetURL(base, r.URL)
	return p.o.Transport.RoundTrip(*out)
}

// respond copies res to w, renewing and enforcing the session cookie.
func (p *Proxy) respond(w http.ResponseWriter, r *http.Request, res *http.Response, sess *sessionState) int {
	defer res.Body.Close()
	removeHopHeaders(res.Header)
	if p.session != nil {
		p.session.rewriteResponse(r.Context(), res.Header, sess)
		p.session.releaseEarly(r, res, sess) // queue.go: switches, streams
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		return p.switchProtocols(w, r, res)
	}
	h := w.Header()
	for k, vv := range res.Header {
		h[k] = vv
	}
	if len(res.Trailer) > 0 {
		announced := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			announced = append(announced, k)
		}
		h["Trailer"] = announced
	}
	w.WriteHeader(res.StatusCode)

	bp := p.bufs.Get().(*[]byte)
	err := copyBody(w, res.Body, *bp, flushImmediately(res))
	p.bufs.Put(bp)
	if err != nil {
		if r.Context().Err() != nil {
			p.o.Logger.Info("client gone during response", "status", StatusClientClosed, "path", r.URL.Path, "request_id", requestIDOf(r))
			return StatusClientClosed
		}
		// The status line is gone already; abort so the client sees a
		// truncated response rather than a complete-looking one.
		p.o.Logger.Warn("response body copy failed", "err", err, "path", r.URL.Path, "request_id", requestIDOf(r))
		panic(http.ErrAbortHandler)
	}
	for k, vv := range res.Trailer {
		for _, v := range vv {
			h.Add(http.TrailerPrefix+k, v)
		}
	}
	return res.StatusCode
}

// fail answers a request whose backend attempt failed and returns the
// status for metrics. clientErr is the error reading the request body, if
// any: then the client is at fault whatever the attempt's error says (the
// upstream client reports the body's error as its own), and gets 413 over
// the size limit, 408 when it was too slow (it is still there to read
// it), else 499. Otherwise: 499 when the client left, 504 on a backend
// timeout, else 502.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, b *balancer.Backend, err, clientErr error) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe) || errors.As(clientErr, &mbe):
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return http.StatusRequestEntityTooLarge
	case clientErr != nil && isTimeout(clientErr) && r.Context().Err() == nil:
		p.o.Logger.Info("client body too slow", "status", http.StatusRequestTimeout, "backend", b.Name, "path", r.URL.Path, "err", clientErr, "request_id", requestIDOf(r))
		w.Header().Set("Connection", "close")
		http.Error(w, "request timeout", http.StatusRequestTimeout)
		return http.StatusRequestTimeout
	case clientErr != nil || r.Context().Err() != nil || errors.Is(err, context.Canceled):
		p.o.Logger.Info("client gone", "status", StatusClientClosed, "backend", b.Name, "path", r.URL.Path, "request_id", requestIDOf(r))
		return StatusClientClosed
	case isTimeout(err):
		p.o.Logger.Error("backend timeout", "backend", b.Name, "err", err, "request_id", requestIDOf(r))
		http.Error(w, "gateway timeout", http.StatusGatewayTimeout)
		return http.StatusGatewayTimeout
	default:
		p.o.Logger.Error("backend error", "backend", b.Name, "err", err, "request_id", requestIDOf(r))
		http.Error(w, "bad gateway", http.StatusBadGateway)
		return http.StatusBadGateway
	}
}

func writeNoBackend(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	http.Error(w, "503 Service Unavailable: no backend is available right now, please retry shortly.", http.StatusServiceUnavailable)
}

func (p *Proxy) trusted(remoteAddr string) bool {
	if len(p.o.TrustedProxies) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	return p.trustedAddr(ap.Addr())
}

func (p *Proxy) trustedAddr(a netip.Addr) bool {
	a = a.Unmap()
	for _, pfx := range p.o.TrustedProxies {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// retryable reports whether a failed attempt may be sent to another
// backend: always when the request never left (dial failure) and its body
// was not touched; for idempotent methods also after other connection
// errors, as long as no body byte was consumed. Timeouts after the connect
// are never retried: the backend may still be working, and retrying
// multiplies the wait. A connect that timed out sent nothing (a backend's
// accept queue full, on a loaded machine: TestConnectTimeoutRetried).
func retryable(err error, method string, body *trackedBody) bool {
	if body != nil && body.read.Load() {
		return false
	}
	if isDial(err) {
		return true
	}
	if isTimeout(err) {
		return false
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// isDial reports whether err is a failure to connect: the request never left.
func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// trackedBody remembers whether the transport read any of the request
// body, which decides whether the request can be retried, and the first
// error reading it, which is the client's (see clientErr); Close is left
// to the server so that a retry can still read the untouched body.
type trackedBody struct {
	rc   io.ReadCloser
	read atomic.Bool // the transport reads from its own goroutine
	err  atomic.Pointer[error]
	n    atomic.Int64 // bytes read, for the access log
}

func (t *trackedBody) Read(b []byte) (int, error) {
	n, err := t.rc.Read(b)
	if n > 0 {
		t.read.Store(true)
		t.n.Add(int64(n))
	}
	if err != nil && err != io.EOF {
		e := err // its own variable: &err would move err to the heap on every Read
		t.err.CompareAndSwap(nil, &e)
	}
	return n, err
}

// clientErr returns the first error reading the body from the client (it
// was cut short, too slow, or over the limit), or nil; nil for no body.
// The upstream client reads the body before it reports how the attempt
// went, so the error is recorded by then.
func (t *trackedBody) clientErr() error {
	if t == nil {
		return nil
	}
	if e := t.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (t *trackedBody) Close() error { return nil }

type nopObserver struct{}

func (nopObserver) Attempt(string, bool)                       {}
func (nopObserver) Request(string, string, int, time.Duration) {}
func (nopObserver) Retry(string)                               {}
func (nopObserver) Session(string)                             {}
func (nopObserver) Renewal()                                   {}
func (nopObserver) Replay()                                    {}
