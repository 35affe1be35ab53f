// Package upstream owns the proxy's HTTP/1.1 client to its backends: Lean,
// which sends the requests that make up most of a PHP site's traffic over
// its own keep-alive connections, and the net/http Transport it hands the
// rest to (NewTransport).
//
// It also owns every connection's fate. A backend's bytes are trusted only
// as far as the framing of the response they belong to: a connection is
// reused only when its last response ended exactly where its framing said
// and nothing followed it (bytes after a body, or a body where none may be,
// as after HEAD, 204 and 304, close it), and an idle connection is checked
// for bytes or an EOF that came while it waited before the next request is
// written on it. Otherwise one user's request would be answered with what
// the backend sent after another's response, as net/http's Transport
// refuses too ("Unsolicited response received on idle HTTP channel"). The
// limits Transport sets on a backend's answers hold here as well: the
// bytes of a response head (interim 1xx heads included), the number of
// interim responses, and the time a connection stays idle.
package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/sessiongate/sessiongate/internal/sockio"
)

// DefaultMaxHeaderBytes bounds a response's head (with the interim heads
// before it) when TransportOptions leave MaxHeaderBytes 0. nginx refuses
// heads beyond its 4 or 8 KiB proxy_buffer_size; PHP's, even with many
// cookies, stay far below this.
const DefaultMaxHeaderBytes = 64 << 10

// maxInterim is how many 1xx interim responses (103 Early Hints, 100
// Continue) may precede the final one: a backend sends one or two, and a
// flood is refused before it fills the head's byte bound with small heads.
const maxInterim = 5

var (
	errHeadTooLarge   = errors.New("upstream: response head exceeds the byte limit")
	errTooManyInterim = errors.New("upstream: too many 1xx interim responses")
)

// Lean is the default upstream. Requests that make up nearly all of a PHP
// site's traffic — idempotent methods without a body, plain http, no
// Upgrade — go over its own HTTP/1.1 connections: the request is written
// and the response read on the calling goroutine, with none of
// http.Transport's per-connection goroutines and channel hand-offs (which
// measured as the largest part of the proxy's CPU per request). Everything
// else (bodies, upgrades, https backends) goes to Fallback, a full
// http.Transport, so that Expect: 100-continue, request-body streaming
// against early responses and protocol switches keep the standard
// library's proven handling.
type Lean struct {
	Fallback        http.RoundTripper
	DialTimeout     time.Duration
	ResponseTimeout time.Duration // until response headers; 0 = none
	MaxIdle         int           // idle connections kept per backend
	// IdleTimeout closes a connection that stayed idle this long, reused
	// or not; 0 keeps it until it is reused or found closed.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the bytes read for a response head, interim
	// heads included; 0 is DefaultMaxHeaderBytes.
	MaxHeaderBytes int64
	// DisableRawIO reads and writes backend connections through net.Conn
	// instead of internal/sockio's direct socket calls, and checks
	// an idle connection with a read that fails at once instead of a raw
	// peek at its socket.
	DisableRawIO bool
	// GatherWrites yields before each request is written, so that the
	// writes of the requests ready to run go out together: NewLean sets it
	// when one P runs the process (see sockio.OneP).
	GatherWrites bool

	// dial replaces the net.Dialer in tests.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu   sync.Mutex           // guards idle
	idle map[string][]*upConn // by host:port, most recently used last
}

// NewLean returns a Lean upstream with a Transport fallback built from o.
func NewLean(o TransportOptions) *Lean {
	return &Lean{
		Fallback:        NewTransport(o),
		DialTimeout:     o.DialTimeout,
		ResponseTimeout: o.ResponseTimeout,
		MaxIdle:         o.MaxIdleConns,
		IdleTimeout:     idleTimeout,
		MaxHeaderBytes:  o.MaxHeaderBytes,
		GatherWrites:    sockio.OneP(),
	}
}

// upConn is one keep-alive connection to a backend.
type upConn struct {
	l    *Lean
	host string
	nc   net.Conn
	raw  syscall.RawConn // nc's socket, for the idle check; nil without one
	br   *bufio.Reader
	wbuf []byte // the request being sent
	// abort cuts the exchange short when the client leaves.
	abort func()
	read  int64 // response bytes read, to tell "closed while idle" from a real failure
	// limit is how many more bytes Read may return: the head's bound while
	// a head is read, unbounded for the body.
	limit int64
	// timer closes the connection once it has been idle for IdleTimeout.
	timer *time.Timer

	// The idle check's state, in the connection so that it allocates nothing.
	peekBuf  [1]byte
	readable bool
	peekStep func(fd uintptr) bool
}

func (c *upConn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.nc.Read(p)
	c.read += int64(n)
	c.limit -= int64(n)
	return n, err
}

// Eligible reports whether req can take the lean path to a backend reached
// by scheme.
func Eligible(req *http.Request, scheme string) bool {
	if scheme != "http" || HasBody(req) {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodDelete:
	default:
		return false
	}
	_, upgrade := req.Header["Upgrade"]
	return !upgrade
}

// HasBody reports whether req may have a body to send. net/http's HTTP/2
// server gives every request a Body, also when the client ended the stream
// with its headers; a ContentLength of 0 then means an empty body (the
// server holds the stream to its content-length), so such a GET takes the
// lean path as it does over HTTP/1.1 (it went through http.Transport, a
// third of the HTTP/2 row's CPU).
func HasBody(req *http.Request) bool {
	if req.ContentLength > 0 {
		return true
	}
	if req.Body == nil || req.Body == http.NoBody {
		return false
	}
	return req.ProtoMajor != 2 || req.ContentLength != 0
}

// RoundTrip sends req and returns the response with headers read; the
// body streams from the connection, which returns to the pool once the
// body has been read to its end and closed.
func (l *Lean) RoundTrip(req *http.Request) (*http.Response, error) {
	if !Eligible(req, req.URL.Scheme) {
		return l.Fallback.RoundTrip(req)
	}
	return l.roundTrip(req, req.URL.Host, nil)
}

// Takes reports whether RoundTripTo can send r to the backend at base.
func (l *Lean) Takes(r *http.Request, base *url.URL) bool {
	return Eligible(r, base.Scheme)
}

// RoundTripTo is RoundTrip for r as the server received it, sent to the
// backend at base: the same request line and headers as RoundTrip of r's
// copy with the URL TargetURL(base, r.URL), without making the copy.
func (l *Lean) RoundTripTo(r *http.Request, base *url.URL) (*http.Response, error) {
	return l.roundTrip(r, base.Host, base)
}

// roundTrip sends req to host; base is nil when req.URL names the backend
// (see appendRequest).
func (l *Lean) roundTrip(req *http.Request, host string, base *url.URL) (*http.Response, error) {
	ctx := req.Context()
	// One retry, only when a reused connection turns out to have been
	// closed by the backend (nothing came back): the request is idempotent
	// and bodiless, so sending it again is safe.
	for attempt := 0; ; attempt++ {
		c, reused, err := l.get(ctx, host)
		if err != nil {
			return nil, err
		}
		res, err := l.exchange(ctx, c, req, host, base)
		if err == nil {
			return res, nil
		}
		c.nc.Close()
		if reused && c.read == 0 && attempt == 0 && ctx.Err() == nil {
			continue
		}
		return nil, err
	}
}

func (l *Lean) exchange(ctx context.Context, c *upConn, req *http.Request, host string, base *url.URL) (*http.Response, error) {
	if l.ResponseTimeout > 0 {
		c.nc.SetDeadline(time.Now().Add(l.ResponseTimeout))
	}
	// A client that goes away aborts the exchange at once. Registered after
	// the deadline above, which would otherwise replace the abort's past one.
	stop := context.AfterFunc(ctx, c.abort)
	if err := c.send(req, host, base); err != nil {
		stop()
		return nil, err
	}
	x := &leanRes{body: upBody{l: l, c: c, stop: stop}}
	ub := &x.body
	var res *http.Response
	var err error
	// Every head, interim ones included, counts against one bound, as in
	// http.Transport.
	c.limit = l.MaxHeaderBytes
	if c.limit <= 0 {
		c.limit = DefaultMaxHeaderBytes
	}
	for interim := 0; ; interim++ {
		if interim > maxInterim {
			err = errTooManyInterim
			break
		}
		// Wait for the first bytes; an error here is ReadResponse's to
		// report, as it always did.
		c.br.Peek(1)
		if r, ok := readHead(c.br, req, x); ok {
			res = r
			break
		}
		res, err = http.ReadResponse(c.br, req)
		// 1xx informational answers (e.g. 103 Early Hints) precede the
		// real one; 101 never comes here (no Upgrade on this path).
		if err != nil || res.StatusCode >= 200 || res.StatusCode < 100 {
			break
		}
	}
	if err != nil {
		stop()
		if c.limit <= 0 && err != errTooManyInterim {
			err = errHeadTooLarge // whatever the parser made of the cut
		}
		return nil, err
	}
	c.limit = math.MaxInt64
	// The body has no deadline of its own (a long download is fine); only
	// the client leaving still cuts it.
	c.nc.SetDeadline(time.Time{})
	if ctx.Err() != nil {
		c.nc.SetDeadline(time.Unix(1, 0))
	}
	// A final status below 200 (ReadResponse takes "+04" for 4) frames
	// nothing reliably: the connection is not reused, as in http.Transport.
	ub.body, ub.reusable = res.Body, !res.Close && res.StatusCode >= 200
	res.Body = ub
	return res, nil
}

// send writes req and, where it can, waits until the response begins, so
// that the first read finds it (see sockio.Conn.WriteThenWait). The wait
// would end at once on bytes that were there before the write — which
// would then be read as this request's response — so it is taken only on
// a connection that is new or passed the idle check (see get) with
// nothing buffered.
//
// With GatherWrites it yields first (see sockio.OneP).
func (c *upConn) send(req *http.Request, host string, base *url.URL) error {
	c.wbuf = appendRequest(c.wbuf[:0], req, host, base)
	if c.l.GatherWrites {
		runtime.Gosched()
	}
	var err error
	if sc, ok := c.nc.(*sockio.Conn); ok && c.br.Buffered() == 0 {
		_, err = sc.WriteThenWait(c.wbuf)
	} else {
		_, err = c.nc.Write(c.wbuf)
	}
	return err
}

// appendRequest appends req as an HTTP/1.1 request without a body for
// host: to req.URL's path and query when base is nil, else to r.URL's
// joined to the backend base (see appendTarget). The header values come
// from the client-facing server's parser (free of CR/LF) or from the proxy
// itself.
func appendRequest(b []byte, req *http.Request, host string, base *url.URL) []byte {
	b = append(b, req.Method...)
	b = append(b, ' ')
	if base == nil {
		b = append(b, req.URL.RequestURI()...)
	} else {
		b = appendTarget(b, base, req.URL)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	if req.Host != "" {
		b = append(b, req.Host...)
	} else {
		b = append(b, host...)
	}
	b = append(b, "\r\n"...)
	for k, vv := range req.Header {
		if k == "Host" {
			continue
		}
		for _, v := range vv {
			if v == "" && k == "User-Agent" {
				continue // the proxy's way of saying "send none"
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	return append(b, "\r\n"...)
}

// appendTarget appends TargetURL(base, in).RequestURI() without building
// the URL (nor, without a query, the string) when base has no path of its
// own, as backends of a PHP farm do not.
func appendTarget(b []byte, base, in *url.URL) []byte {
	if base.Path != "" && base.Path != "/" {
		return append(b, TargetURL(base, in).RequestURI()...)
	}
	// RequestURI of a URL with only Path, RawPath and RawQuery set.
	p := in.EscapedPath()
	if p == "" {
		p = "/"
	}
	b = append(b, p...)
	if in.RawQuery != "" {
		b = append(b, '?')
		b = append(b, in.RawQuery...)
	}
	return b
}

// TargetURL joins a backend's base URL with the request's path and query.
func TargetURL(base, in *url.URL) *url.URL {
	u := &url.URL{Scheme: base.Scheme, Host: base.Host, Path: in.Path, RawPath: in.RawPath, RawQuery: in.RawQuery}
	if base.Path != "" && base.Path != "/" {
		u.Path = singleJoin(base.Path, in.Path)
		if in.RawPath != "" {
			u.RawPath = singleJoin(base.EscapedPath(), in.RawPath)
		}
	}
	return u
}

func singleJoin(a, b string) string {
	aslash, bslash := len(a) > 0 && a[len(a)-1] == '/', len(b) > 0 && b[0] == '/'
	switch {
	case aslash && bslash:
		return a + b[1:]
	case !aslash && !bslash:
		return a + "/" + b
	}
	return a + b
}

// get returns an idle connection to host that passed the idle check, or
// dials a new one.
func (l *Lean) get(ctx context.Context, host string) (*upConn, bool, error) {
	l.mu.Lock()
	for {
		list := l.idle[host]
		if len(list) == 0 {
			break
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		l.idle[host] = list[:len(list)-1]
		l.mu.Unlock()
		if c.timer != nil {
			// A timer already firing finds c gone from the list and leaves it.
			c.timer.Stop()
		}
		if c.stale() {
			c.nc.Close()
			l.mu.Lock()
			continue
		}
		c.read = 0
		return c, true, nil
	}
	l.mu.Unlock()

	var nc net.Conn
	var err error
	if l.dial != nil {
		nc, err = l.dial(ctx, "tcp", host)
	} else {
		d := net.Dialer{Timeout: l.DialTimeout, KeepAlive: 30 * time.Second}
		nc, err = d.DialContext(ctx, "tcp", host)
	}
	if err != nil {
		return nil, false, err
	}
	c := &upConn{l: l, host: host, nc: nc}
	if !l.DisableRawIO {
		c.nc = sockio.Wrap(nc)
	}
	if sc, ok := c.nc.(syscall.Conn); ok && canPeek && !l.DisableRawIO {
		c.raw, _ = sc.SyscallConn()
	}
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.abort = func() { nc.SetDeadline(time.Unix(1, 0)) }
	c.peekStep = c.peek
	return c, false, nil
}

// stale reports whether the idle connection c became readable while it
// waited: bytes the backend sent after the last response (which the next
// request would take for its answer), or its end. Either way it must not
// be used. One non-blocking peek at the socket, so cheap enough for every
// reuse.
func (c *upConn) stale() bool {
	if c.br.Buffered() > 0 {
		return true
	}
	if c.raw == nil {
		// No socket to peek at: a read that must fail at once.
		c.nc.SetReadDeadline(time.Unix(1, 0))
		_, err := c.br.Peek(1)
		c.nc.SetReadDeadline(time.Time{})
		var ne net.Error
		return !errors.As(err, &ne) || !ne.Timeout()
	}
	c.readable = true
	if err := c.raw.Read(c.peekStep); err != nil {
		return true
	}
	return c.readable
}

// peek is stale's RawConn callback: it never asks to wait.
func (c *upConn) peek(fd uintptr) bool {
	c.readable = readable(fd, c.peekBuf[:])
	return true
}

// put returns c to the idle pool, or closes it when the pool is full.
func (l *Lean) put(c *upConn) {
	l.mu.Lock()
	if len(l.idle[c.host]) < l.MaxIdle {
		if l.idle == nil {
			l.idle = map[string][]*upConn{}
		}
		l.idle[c.host] = append(l.idle[c.host], c)
		if l.IdleTimeout > 0 {
			if c.timer == nil {
				c.timer = time.AfterFunc(l.IdleTimeout, c.expire)
			} else {
				c.timer.Reset(l.IdleTimeout)
			}
		}
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	c.nc.Close()
}

// expire closes c if it is still idle: IdleTimeout has passed since put.
func (c *upConn) expire() {
	l := c.l
	l.mu.Lock()
	list := l.idle[c.host]
	i := slices.Index(list, c)
	if i < 0 {
		l.mu.Unlock()
		return // taken meanwhile, or closed by CloseIdleConnections
	}
	if list = slices.Delete(list, i, i+1); len(list) == 0 {
		delete(l.idle, c.host) // backends come and go (DNS discovery)
	} else {
		l.idle[c.host] = list
	}
	l.mu.Unlock()
	c.nc.Close()
}

// CloseIdleConnections closes every idle connection, here and in Fallback.
func (l *Lean) CloseIdleConnections() {
	l.mu.Lock()
	idle := l.idle
	l.idle = nil
	l.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			if c.timer != nil {
				c.timer.Stop()
			}
			c.nc.Close()
		}
	}
	if f, ok := l.Fallback.(interface{ CloseIdleConnections() }); ok {
		f.CloseIdleConnections()
	}
}

// leanRes is what one exchange builds, in one allocation: the response
// (when readHead parsed its head), its body, and the backing array of its
// single header values (room for what PHP and nginx send; a response with
// more fields gets its own). Nothing reuses it: the proxy may hold the
// response, and the header slices it copies, after the body is closed.
type leanRes struct {
	res  http.Response
	body upBody
	vals [8]string
}

// upBody is a response body that hands its connection back to the pool
// when read to the end, and closes it when abandoned early.
type upBody struct {
	l        *Lean
	c        *upConn
	body     io.ReadCloser
	cl       clBody // the body, when readHead parsed the head
	stop     func() bool
	reusable bool
	eof      bool
	done     bool
}

func (b *upBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof = true
	}
	return n, err
}

// Close pools the connection only when the response ended where its
// framing said (the body read to its end, no Connection: close) and no
// byte beyond it has been read: bytes after a body, or where the status
// or method says there is no body (HEAD, 204, 304), close it. Bytes that
// come later are get's idle check's to find.
func (b *upBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	// stop reports false when the client's cancellation already fired and
	// poisoned the deadline: the connection must not be reused then.
	cancelled := !b.stop()
	if b.eof && b.reusable && !cancelled && b.c.br.Buffered() == 0 {
		b.l.put(b.c)
		return nil
	}
	return b.c.nc.Close()
}
