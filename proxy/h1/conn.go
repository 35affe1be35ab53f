package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessiongate/sessiongate/internal/sockio"
	"github.com/sessiongate/sessiongate/proxy/internal/syntax"
)

// Connection states, for Shutdown.
const (
	stateNew int32 = iota
	stateActive
	stateIdle
	stateClosed
)

// watchAfter is how long a request may sit in the handler before its
// connection is watched for the client hanging up. Watching costs a
// goroutine and a read; almost every request through a proxy is done
// sooner, and one that takes longer can afford it.
const watchAfter = 100 * time.Millisecond

// maxDiscard is how much of a request body the handler left unread is
// read and thrown away to keep the connection, as net/http does.
const maxDiscard = 256 << 10

var zeroLength = []string{"0"}

// aLongTimeAgo is a deadline that makes a pending read return at once.
var aLongTimeAgo = time.Unix(1, 0)

// conn is one client connection.
type conn struct {
	srv    *Server
	rw     net.Conn
	since  time.Time
	state  atomic.Int32
	remote string
	tls    *tls.ConnectionState // every request's Request.TLS; nil: plain
	cr     connReader
	br     *bufio.Reader // nil while waiting for a request (see await)
	unpend func()        // c.cr.dropPending, made once
	bw     *bufio.Writer // only while a response is being written
	cancel context.CancelFunc
	// tmpl is a request with nothing but the request context set, the copy
	// readHead starts every request from. It also holds that context (no
	// field of its own: an idle connection's heap is budgeted).
	tmpl *http.Request
	res  response
	// werr is the first write error; after it the connection is done.
	werr error
	// afterPost: the last request was a POST (see next).
	afterPost bool
	// While parked: the socket, the idle timeout's end and the parker's
	// list (see parker).
	parkFD             int32
	parkUntil          time.Time
	parkPrev, parkNext *conn
	// hadTE is set by readRequest when the head it read had a
	// Transfer-Encoding field, which ReadRequest may delete (see closeAfter).
	hadTE bool

	// The watch: once a request has been in the handler for watchAfter, a
	// read on the connection notices the client closing it (and cancels
	// ctx) or keeps the byte it got for the next request.
	watch    *time.Timer
	wmu      sync.Mutex
	wcond    sync.Cond
	wstop    bool // the handler is done: do not start watching
	watching bool // a watch read is in progress
}

// connReader is what the bufio.Reader reads from: the connection, after
// any byte the watch read or bytes await read, limited while request
// headers are read.
type connReader struct {
	c       *conn
	remain  int64 // bytes left before the header limit; < 0: no limit
	hasByte bool
	b       [1]byte
	// pending is what await read before there was a bufio.Reader to read
	// into: the start of spare, a pooled buffer held until it is consumed.
	pending []byte
	spare   *[readBufSize]byte
	// capture, when not nil, collects what is read (see readRequest).
	capture *[]byte
}

func (r *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		if len(r.pending) == 0 {
			r.dropPending()
		}
		if r.capture != nil {
			*r.capture = append(*r.capture, p[:n]...)
		}
		return n, nil
	}
	if r.hasByte {
		p[0] = r.b[0]
		r.hasByte = false
		if r.capture != nil {
			*r.capture = append(*r.capture, p[0])
		}
		return 1, nil
	}
	if r.remain == 0 {
		return 0, errHeaderTooLarge
	}
	if r.remain > 0 && int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.c.rw.Read(p)
	if r.capture != nil {
		*r.capture = append(*r.capture, p[:n]...)
	}
	if r.remain > 0 {
		r.remain -= int64(n)
	}
	return n, err
}

// dropPending gives the spare buffer back to the pool.
func (r *connReader) dropPending() {
	if r.spare != nil {
		r.c.srv.spares.Put(r.spare)
		r.spare, r.pending = nil, nil
	}
}

var errHeaderTooLarge = errors.New("h1: request header too large")

// Write sends p to the client, remembering the first failure: the client
// is gone, which the handler learns from ctx as with net/http.
func (c *conn) Write(p []byte) (int, error) {
	if c.werr != nil {
		return 0, c.werr
	}
	n, err := c.rw.Write(p)
	if err != nil {
		c.werr = err
		c.cancel()
	}
	return n, err
}

func (c *conn) serve() {
	c.remote = c.rw.RemoteAddr().String()
	if tc, ok := c.rw.(*tls.Conn); ok && !c.handshake(tc) {
		return
	}
	c.cr = connReader{c: c, remain: -1}
	c.unpend = c.cr.dropPending
	c.wcond.L = &c.wmu
	c.run()
}

// run serves requests on c until it closes or is parked; a parked
// connection's next request gets it a new goroutine, in run again.
func (c *conn) run() {
	s := c.srv
	parked := false
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			s.logger().Error("handler panic", "remote", c.remote, "panic", fmt.Sprint(v), "stack", string(buf))
		} else if parked {
			return // the parker has c now
		}
		c.close()
	}()

	for {
		var ok bool
		if ok, parked = c.next(); !ok {
			return
		}
		req, orig, err := c.readRequest()
		if err != nil {
			c.refuse(err)
			return
		}
		c.afterPost = req.Method == http.MethodPost
		if !c.handle(req, orig) {
			return
		}
		if s.closing.Load() {
			return
		}
		c.res.idle()
		c.state.Store(stateIdle)
	}
}

// handshake does the TLS handshake, within the first request's header
// timeout from the accept, and reports whether to serve HTTP/1.x on the
// connection. When not, the connection is closed or, if its client chose
// a protocol of TLSNextProto, handed over; either way h1 is done with it.
func (c *conn) handshake(tc *tls.Conn) bool {
	s := c.srv
	if d := s.headerTimeout(); d > 0 {
		tc.SetDeadline(c.since.Add(d))
	}
	err := tc.Handshake()
	var proto string
	if err == nil {
		st := tc.ConnectionState()
		c.tls, proto = &st, st.NegotiatedProtocol
		if proto == "" || proto == "http/1.1" || proto == "http/1.0" {
			tc.SetWriteDeadline(time.Time{}) // next sets the read deadline
			return true
		}
	}
	c.state.Store(stateClosed)
	s.remove(c)
	if next := s.TLSNextProto[proto]; err == nil && next != nil {
		tc.SetDeadline(time.Time{})
		next(tc)
		return false
	}
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		// A plain-HTTP client, answered as net/http's server answers it.
		re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
	}
	if err != nil {
		s.logger().Debug("TLS handshake failed", "remote", c.remote, "err", err)
	}
	tc.Close()
	return false
}

// looksLikeHTTP reports whether the first five bytes of a connection that
// should have opened with a TLS record begin a plain HTTP request (as
// net/http's server tells).
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// next waits for the first bytes of the next request and reports whether
// to read it, or whether c was parked instead (then the goroutine must
// leave c alone).
func (c *conn) next() (ok, parked bool) {
	s := c.srv
	// A new connection gets no idle time: its first request is bounded by
	// the header timeout from the accept, as with net/http, or a crowd of
	// silent connections holds a goroutine and buffer each for the (much
	// longer) idle timeout.
	first := c.state.Load() == stateNew
	if first {
		c.readDeadline(c.since, s.headerTimeout())
	}
	if c.br == nil || c.br.Buffered() == 0 && !c.cr.hasByte {
		var err error
		if first {
			err = c.await()
		} else if parked, err = c.awaitIdle(); parked {
			return false, true
		}
		if err != nil {
			return false, false
		}
	}
	if !c.state.CompareAndSwap(stateIdle, stateActive) && !c.state.CompareAndSwap(stateNew, stateActive) {
		return false, false // Shutdown closed it
	}
	if c.tmpl == nil {
		var ctx context.Context
		ctx, c.cancel = context.WithCancel(context.Background())
		c.tmpl = new(http.Request).WithContext(ctx)
	}
	if !first {
		c.readDeadline(time.Now(), s.headerTimeout())
	}
	if c.afterPost {
		// RFC 9112 2.2 tolerance, as net/http: old clients send a CRLF
		// after a POST body.
		peek, _ := c.br.Peek(4)
		n := 0
		for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
			n++
		}
		c.br.Discard(n)
	}
	return true, false
}

// awaitIdle waits for the next request on a keep-alive connection until
// the idle timeout: for parkAfter on this goroutine, then parked (see
// parkAfter) if it can be.
func (c *conn) awaitIdle() (parked bool, err error) {
	s := c.srv
	now := time.Now()
	var until time.Time // the idle timeout's end; zero: none
	if d := s.idleTimeout(); d > 0 {
		until = now.Add(d)
	}
	wait := s.parkWait()
	if wait <= 0 || !c.canPark() || !until.IsZero() && until.Sub(now) <= wait {
		c.rw.SetReadDeadline(until)
		return false, c.await()
	}
	c.rw.SetReadDeadline(now.Add(wait))
	if err := c.await(); !errors.Is(err, os.ErrDeadlineExceeded) {
		return false, err
	}
	// Nothing came (the wait's deadline is the only one set, so nothing
	// was read either): park what is left of the connection. Its context
	// ends now, as at the end of a request with net/http's server, and a
	// new one is made when it wakes.
	c.releaseReader()
	if c.cancel != nil { // nil when it woke to no request and waited again
		c.cancel()
		c.cancel, c.tmpl = nil, nil
	}
	if c.watch != nil {
		c.watch.Stop()
		c.watch = nil
	}
	if !s.closing.Load() && s.park(c, until) {
		return true, nil
	}
	c.rw.SetReadDeadline(until)
	return false, c.await()
}

// await waits for the first bytes of the next request, buffered in c.br
// when it returns nil.
//
// Through sockio it holds no read buffer while it waits, because an idle
// keep-alive connection should cost little more than its socket: the
// bufio.Reader goes back to the pool, and one read into a pooled spare
// buffer either finds bytes, which c.br then reads first (a copy, not
// another system call), or finds none, and then the spare goes back to
// the pool too before the wait. Elsewhere (net.Conn's own I/O) the wait is
// a read into c.br.
func (c *conn) await() error {
	sc, raw := c.rw.(*sockio.Conn)
	if !raw {
		if c.br == nil {
			c.br = c.srv.reader(&c.cr)
		}
		_, err := c.br.Peek(1)
		return err
	}
	c.releaseReader()
	c.cr.spare = c.srv.spare()
	n, err := sc.ReadOrWait(c.cr.spare[:], c.unpend)
	if n > 0 {
		c.cr.pending = c.cr.spare[:n]
	} else {
		c.cr.dropPending()
		if err != nil {
			return err
		}
	}
	c.br = c.srv.reader(&c.cr)
	_, err = c.br.Peek(1)
	return err
}

// releaseReader gives c.br back to the pool.
func (c *conn) releaseReader() {
	if c.br != nil {
		c.br.Reset(nil)
		c.srv.readers.Put(c.br)
		c.br = nil
	}
}

// readDeadline sets the read deadline d after from; d <= 0 clears it.
func (c *conn) readDeadline(from time.Time, d time.Duration) {
	if d > 0 {
		c.rw.SetReadDeadline(from.Add(d))
	} else {
		c.rw.SetReadDeadline(time.Time{})
	}
}

// requestError is a refused request: the status h1 answers and why.
type requestError struct {
	code int
	text string
}

func (e *requestError) Error() string { return e.text }

func badRequest(text string) error { return &requestError{http.StatusBadRequest, text} }

// readRequest reads one request's line and headers with net/http's parser
// and applies net/http's server checks, plus h1's own. It returns the
// request for the handler and the one ReadRequest made, whose body writes
// trailers into it.
func (c *conn) readRequest() (req, orig *http.Request, err error) {
	if req, ok := readHead(c.br, c.tmpl); ok {
		// Bodiless, so no read deadline to set and no trailers to keep.
		if err := c.checkRequest(req); err != nil {
			return nil, nil, err
		}
		req.RemoteAddr = c.remote
		req.TLS = c.tls
		c.hadTE = false // readHead takes no head with Transfer-Encoding
		return req, req, nil
	}
	s := c.srv
	// Whether the head has a Transfer-Encoding field (see closeAfter): read
	// from the buffer when the whole head is there, as it nearly always
	// is; else from a copy of the bytes ReadRequest consumes.
	var captured []byte
	head, _, buffered := syntax.BufferedHead(c.br)
	if buffered {
		c.hadTE = hasTE(head)
	} else {
		pre, _ := c.br.Peek(c.br.Buffered())
		captured = append([]byte(nil), pre...)
		c.cr.capture = &captured
	}
	start := time.Now()
	// The limit counts bytes read from the socket, buffered ones included,
	// as net/http's does; the slack is the read buffer.
	c.cr.remain = s.maxHeaderBytes() + 4096 - int64(c.br.Buffered())
	if c.cr.remain <= 0 {
		c.cr.remain = 1
	}
	req, err = http.ReadRequest(c.br)
	tooLarge := c.cr.remain == 0
	c.cr.remain = -1
	if !buffered {
		c.cr.capture = nil
		c.hadTE = hasTE(captured[:max(0, len(captured)-c.br.Buffered())])
	}
	if err != nil {
		if tooLarge || errors.Is(err, errHeaderTooLarge) {
			return nil, nil, &requestError{http.StatusRequestHeaderFieldsTooLarge, "request header too large"}
		}
		if isNetError(err) {
			return nil, nil, err
		}
		if isUnsupportedTE(err) {
			return nil, nil, &requestError{http.StatusNotImplemented, "unsupported transfer encoding"}
		}
		return nil, nil, badRequest("malformed request")
	}
	if err := c.checkRequest(req); err != nil {
		return nil, nil, err
	}
	orig = req
	req = req.WithContext(c.tmpl.Context())
	req.RemoteAddr = c.remote
	req.TLS = c.tls
	if req.Body != http.NoBody {
		if d := s.ReadTimeout; d > 0 {
			c.rw.SetReadDeadline(start.Add(d))
		} else {
			c.rw.SetReadDeadline(time.Time{})
		}
	}
	return req, orig, nil
}

// hasTE reports whether a request head has a Transfer-Encoding field, as
// textproto reads its lines: ending at LF, a line that starts with space
// or tab continuing the one before.
func hasTE(head []byte) bool {
	_, rest, _ := bytes.Cut(head, []byte("\n")) // the request line
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		switch {
		case len(line) == 0 || string(line) == "\r":
			return false // the end of the head
		case line[0] == ' ' || line[0] == '\t':
			continue
		}
		if name, _, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(name, []byte("Transfer-Encoding")) {
			return true
		}
	}
	return false
}

// closeAfter reports whether the connection must close after req whatever
// the response says. RFC 9112 6.1: an HTTP/1.0 request with
// Transfer-Encoding has no reliable framing (an HTTP/1.0 recipient may
// not know chunked), so the server closes after it. net/http's parser
// ignores and deletes the field for HTTP/1.0, so its server, and h1 with
// it, used to keep such a connection and read the body's chunks as the
// next request: what a front end that does know chunked took for body
// bytes became a request of its own. This is where h1 deliberately
// differs from net/http's server (see the differential test).
func (c *conn) closeAfter(req *http.Request) bool {
	return req.ProtoMajor == 1 && req.ProtoMinor == 0 && c.hadTE
}

// checkRequest applies net/http's server checks to a request read, and
// h1's own.
func (c *conn) checkRequest(req *http.Request) error {
	if req.ProtoMajor != 1 {
		return &requestError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	if req.Method == http.MethodConnect {
		return &requestError{http.StatusMethodNotAllowed, "CONNECT is not served"}
	}
	// ReadRequest has moved the Host header to req.Host, or put the host
	// of an absolute-form target there and dropped the header unchecked.
	// Browsers send absolute-form only to forward proxies: refuse it
	// rather than forward a Host nobody checked.
	if req.RequestURI == "*" && req.Method != http.MethodOptions || req.RequestURI != "*" && !strings.HasPrefix(req.RequestURI, "/") {
		return badRequest("request target must be a path")
	}
	if req.ProtoAtLeast(1, 1) && req.Host == "" {
		return badRequest("missing required Host header")
	}
	return checkHeader(req)
}

// refuse answers a request that could not be read, as net/http does, and
// leaves the connection to be closed.
func (c *conn) refuse(err error) {
	var re *requestError
	if !errors.As(err, &re) {
		return // the client hung up or timed out: nobody to answer
	}
	c.rw.SetWriteDeadline(time.Now().Add(time.Second))
	text := http.StatusText(re.code)
	msg := fmt.Sprintf("%d %s", re.code, text)
	if re.code != http.StatusBadRequest && re.code != http.StatusRequestHeaderFieldsTooLarge {
		msg += ": " + re.text
	}
	fmt.Fprintf(c.rw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		re.code, text, len(msg), msg)
	if re.code == http.StatusRequestHeaderFieldsTooLarge {
		// The client may still be sending; closing now could reset the
		// connection before it reads the answer.
		if cw, ok := c.rw.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			c.rw.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			io.Copy(io.Discard, io.LimitReader(c.rw, 1<<20))
		}
	}
}

// handle runs the handler for req and finishes its response. It reports
// whether the connection can carry another request.
func (c *conn) handle(req, orig *http.Request) bool {
	s := c.srv
	w := &c.res
	w.reset(c, req, orig)
	if !w.expect() {
		return false
	}
	if req.RequestURI == "*" {
		// OPTIONS * asks about the server, as net/http answers it.
		w.header["Content-Length"] = zeroLength
		w.WriteHeader(http.StatusOK)
		return w.finish()
	}
	if s.WriteTimeout > 0 {
		c.rw.SetWriteDeadline(time.Now().Add(s.WriteTimeout))
	}
	watched := req.Body == http.NoBody && c.br.Buffered() == 0
	if watched {
		c.startWatch()
	}
	defer func() {
		if v := recover(); v != nil {
			if watched {
				c.stopWatch()
			}
			if !w.hijacked {
				w.abort()
			}
			panic(v)
		}
	}()
	s.Handler.ServeHTTP(w, req)
	if watched {
		c.stopWatch() // a no-op after Hijack, which stopped it
	}
	if w.hijacked {
		return false
	}
	// The write deadline stays: the next response sets its own.
	return w.finish() && c.werr == nil && c.tmpl.Context().Err() == nil
}

func (c *conn) startWatch() {
	c.wmu.Lock()
	c.wstop = false
	c.wmu.Unlock()
	if c.watch == nil {
		c.watch = time.AfterFunc(watchAfter, c.watchRead)
		return
	}
	c.watch.Reset(watchAfter)
}

// watchRead runs on the timer's goroutine: a one-byte read that ends when
// the client sends or hangs up, or when stopWatch makes it return.
func (c *conn) watchRead() {
	c.wmu.Lock()
	// A late timer from an earlier request may run now: the flags, not
	// the timer, say whether to watch.
	if c.wstop || c.watching {
		c.wmu.Unlock()
		return
	}
	c.watching = true
	// Under wmu: stopWatch ends the read with a deadline in the past, set
	// under wmu too, which must come after this one. Cleared after the
	// unlock, a stopWatch in between had its deadline undone: the read
	// then waited for the client, the handler in stopWatch for the read,
	// and the client for the response's end.
	c.rw.SetReadDeadline(time.Time{})
	c.wmu.Unlock()

	n, err := c.rw.Read(c.cr.b[:])

	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.watching = false
	c.wcond.Broadcast()
	if n == 1 {
		c.cr.hasByte = true // the next request has begun: keep its byte
		return
	}
	var ne net.Error
	if err != nil && !(c.wstop && errors.As(err, &ne) && ne.Timeout()) {
		c.cancel() // the client hung up
	}
}

// stopWatch ends the watch: the timer, or a watch read in progress.
func (c *conn) stopWatch() {
	c.watch.Stop()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wstop = true
	if c.watching {
		c.rw.SetReadDeadline(aLongTimeAgo)
		for c.watching {
			c.wcond.Wait()
		}
	}
}

func (c *conn) close() {
	if c.watch != nil {
		c.stopWatch()
	}
	c.state.Store(stateClosed)
	if c.cancel != nil {
		c.cancel()
	}
	if !c.res.hijacked {
		c.rw.Close()
		c.releaseReader()
		c.cr.dropPending()
	}
	c.srv.remove(c)
}

// isUnsupportedTE reports http.ReadRequest's refusal of a Transfer-Encoding
// other than one "chunked". net/http's unsupportedTEError is not exported,
// so its text is matched: "unsupported transfer encoding" or "too many
// transfer encodings". TestUnsupportedTEText pins it.
func isUnsupportedTE(err error) bool {
	return strings.Contains(err.Error(), "transfer encoding")
}

// isNetError reports a failure to read the connection itself (hang-up,
// timeout), which gets no answer. (Not any net.Error: a *url.Error from
// a malformed target is one too, and gets 400.)
func isNetError(err error) bool {
	var oe *net.OpError
	return err == io.EOF || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &oe)
}

// checkHeader applies net/http's server checks on header names and values.
func checkHeader(req *http.Request) error {
	if !syntax.Host(req.Host) {
		return badRequest("malformed Host header")
	}
	for k, vv := range req.Header {
		if !syntax.FieldName(k) {
			return badRequest("invalid header name")
		}
		for _, v := range vv {
			if !syntax.FieldValue(v) {
				return badRequest("invalid header value")
			}
		}
	}
	return nil
}
