package h1

import (
	"bufio"
	"io"
	"iter"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sessiongate/sessiongate/proxy/internal/syntax"
)

// pendMax is how much body h1 holds back, before the headers go out, to
// send a Content-Length instead of chunks when the handler finishes first
// (net/http holds 2 KiB for the same reason).
const pendMax = 2 << 10

// response is the http.ResponseWriter of one request. Each conn reuses
// one; nothing of it may be kept after the handler returns.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header
	body   *body // nil when the request has none

	status    int
	wrote     bool // the status line and the handler's headers are in the write buffer
	committed bool // so are the framing headers: the body may follow
	done      bool // the handler returned
	hijacked  bool
	chunked   bool
	close     bool  // close the connection after this response
	clen      int64 // Content-Length sent, or -1
	written   int64
	pend      []byte

	// The handler's framing headers as they were at WriteHeader; commit
	// writes them, or what replaces them.
	te        string
	connHdr   []string
	connClose bool
	trailers  bool

	// From the request before the handler could change it.
	head        bool
	keepAlive10 bool // HTTP/1.0 with Connection: keep-alive
	wantsClose  bool
	cont        bool // a 100 Continue is owed before the body is read
}

// reset readies w for req. orig is the request http.ReadRequest returned,
// of which req is a copy with the connection's context: its body fills
// orig's Trailer.
func (w *response) reset(c *conn, req, orig *http.Request) {
	h := w.header
	if h == nil {
		h = c.srv.header()
	} else {
		clear(h)
	}
	*w = response{c: c, req: req, header: h, clen: -1,
		head: req.Method == http.MethodHead,
	}
	// As net/http's server decides: close on req.Close or a "close" token
	// in the first Connection header, unless an HTTP/1.0 client asked to
	// keep the connection and the response allows it (see commit).
	conn := syntax.Get(req.Header, "Connection")
	w.close = c.srv.closing.Load() || c.closeAfter(req)
	w.wantsClose = req.Close || hasToken(conn, "close")
	w.keepAlive10 = req.ProtoMinor == 0 && hasToken(conn, "keep-alive") && !w.close
	if req.Body != http.NoBody {
		w.body = &body{w: w, rc: req.Body, trailer: orig}
		req.Body = w.body
	}
}

// idle forgets the request answered and what the handler left in the
// response, so that an idle connection keeps none of it alive. The header
// map goes back to the server's pool, emptied (it has grown to fit a
// response: a few hundred bytes).
func (w *response) idle() {
	if w.header != nil {
		clear(w.header)
		w.c.srv.headers.Put(w.header)
	}
	*w = response{}
}

// expect handles an Expect header as net/http does: 100-continue is sent
// when the handler first reads the body; any other expectation gets 417.
func (w *response) expect() bool {
	ex := syntax.Get(w.req.Header, "Expect")
	if ex == "" {
		return true
	}
	if hasToken(ex, "100-continue") {
		w.cont = w.req.ProtoAtLeast(1, 1) && w.req.ContentLength != 0
		return true
	}
	w.c.Write([]byte("HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
	return false
}

// Header implements http.ResponseWriter.
func (w *response) Header() http.Header { return w.header }

// WriteHeader implements http.ResponseWriter. Informational statuses
// (other than 101) go out at once. For the final one, the status line and
// headers go into the write buffer now, so that later changes to the
// header map have no effect, as with net/http; the framing headers
// (Content-Length, Transfer-Encoding, Connection) follow when the body
// starts.
func (w *response) WriteHeader(code int) {
	if w.hijacked || w.wrote {
		return
	}
	if code < 100 || code > 999 {
		panic("h1: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.informational(code)
		return
	}
	w.wrote = true
	w.status = code
	h := w.header
	if !bodyAllowed(code) {
		if code == http.StatusNotModified {
			delete(h, "Content-Type")
		}
		delete(h, "Content-Length")
		delete(h, "Transfer-Encoding")
	}
	if cl := syntax.Get(h, "Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err == nil && n >= 0 {
			w.clen = n
		}
	}
	w.te = syntax.Get(h, "Transfer-Encoding")
	w.connHdr = h["Connection"]
	w.connClose = hasToken(syntax.Get(h, "Connection"), "close")
	w.trailers = len(h["Trailer"]) > 0

	bw := w.writer()
	writeStatus(bw, w.req.ProtoMinor, code)
	var date []byte
	if _, ok := h["Date"]; !ok {
		date = w.c.srv.date(time.Now())
	}
	writeHeaders(bw, h, date, false)
}

func (w *response) informational(code int) {
	bw := w.writer()
	writeStatus(bw, w.req.ProtoMinor, code)
	writeHeaders(bw, w.header, nil, true)
	bw.WriteString("\r\n")
	bw.Flush()
	if code == http.StatusContinue {
		w.cont = false
	}
}

// Write implements http.ResponseWriter.
func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.clen != -1 && w.written > w.clen {
		return 0, http.ErrContentLength
	}
	if !w.committed {
		if w.clen == -1 && len(w.pend)+len(p) <= pendMax {
			w.pend = append(w.pend, p...)
			return len(p), nil
		}
		if err := w.commit(); err != nil {
			return 0, err
		}
	}
	return w.writeBody(p)
}

func (w *response) writeBody(p []byte) (int, error) {
	if w.head {
		return len(p), nil
	}
	bw := w.c.bw
	if w.chunked {
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16))
		bw.WriteString("\r\n")
		n, err := bw.Write(p)
		bw.WriteString("\r\n")
		return n, err
	}
	return bw.Write(p)
}

// FlushError sends what the handler wrote so far; http.ResponseController
// uses it.
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		if err := w.commit(); err != nil {
			return err
		}
	}
	return w.c.bw.Flush()
}

// Flush implements http.Flusher.
func (w *response) Flush() { w.FlushError() }

// SetReadDeadline and SetWriteDeadline serve http.ResponseController.
func (w *response) SetReadDeadline(t time.Time) error  { return w.c.rw.SetReadDeadline(t) }
func (w *response) SetWriteDeadline(t time.Time) error { return w.c.rw.SetWriteDeadline(t) }

// Hijack implements http.Hijacker: the connection is the handler's from
// now on, and h1 forgets it.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	c := w.c
	if c.watch != nil {
		c.stopWatch()
	}
	if w.committed {
		if err := c.bw.Flush(); err != nil {
			return nil, nil, err
		}
	}
	w.releaseWriter() // a header block never ended is dropped, as net/http does
	w.hijacked = true
	c.rw.SetDeadline(time.Time{})
	c.srv.remove(c)
	return c.rw, bufio.NewReadWriter(c.br, bufio.NewWriter(c.rw)), nil
}

// commit ends the header block with the framing headers, decided as
// net/http decides them, then writes the held-back body.
func (w *response) commit() error {
	w.committed = true
	allowed := bodyAllowed(w.status)
	if w.done && w.clen == -1 && w.te == "" && allowed && !w.trailers && (!w.head || len(w.pend) > 0) {
		w.clen = int64(len(w.pend))
	}
	// As net/http: a Transfer-Encoding other than identity voids the
	// handler's Content-Length as a framing header, though it still bounds
	// what the handler may write and whether the connection is reused.
	lengthFramed := w.clen != -1 && (w.te == "" || w.te == "identity")
	keepAlive := false // say keep-alive to an HTTP/1.0 client
	if w.keepAlive10 && (w.head || lengthFramed || !allowed) {
		keepAlive = w.connHdr == nil
	} else if w.req.ProtoMinor == 0 || w.wantsClose {
		w.close = true
	}
	if w.connClose {
		w.close = true
	}
	if w.body != nil && !w.close && !w.body.drain() {
		w.close = true // more body than is worth reading: do not parse it as a request
	}
	if w.cont {
		// The body was never asked for: the client may or may not send
		// it, so the next bytes cannot be trusted to be a request.
		w.close = true
	}
	switch {
	case w.head || !allowed || w.status == http.StatusNoContent:
	case lengthFramed:
	case w.req.ProtoMinor >= 1 && w.te == "identity":
		w.close = true
	case w.req.ProtoMinor >= 1:
		w.chunked = true
	default:
		w.close = true
	}

	bw := w.c.bw
	if lengthFramed && allowed {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), w.clen, 10))
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	switch {
	case w.close && w.status != http.StatusSwitchingProtocols && !w.connClose:
		if w.req.ProtoMinor >= 1 {
			bw.WriteString("Connection: close\r\n")
		}
	case keepAlive:
		bw.WriteString("Connection: keep-alive\r\n")
	default:
		for _, v := range w.connHdr {
			writeField(bw, "Connection", v)
		}
	}
	_, err := bw.WriteString("\r\n")
	if len(w.pend) > 0 {
		p := w.pend
		w.pend = w.pend[:0]
		if _, err := w.writeBody(p); err != nil {
			return err
		}
	}
	return err
}

// finish completes the response after the handler returned and reports
// whether the connection can carry another request.
func (w *response) finish() bool {
	w.done = true
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit()
	}
	bw := w.c.bw
	if w.chunked && !w.head {
		bw.WriteString("0\r\n")
		w.writeTrailers(bw)
		bw.WriteString("\r\n")
	}
	if w.c.srv.GatherWrites && bw.Buffered() > 0 {
		runtime.Gosched() // see Server.GatherWrites
	}
	err := bw.Flush()
	w.releaseWriter()
	if w.clen != -1 && !w.head && bodyAllowed(w.status) && w.written != w.clen {
		w.close = true // the handler wrote less than it announced
	}
	if w.body != nil && !w.body.finish() {
		w.close = true
	}
	w.pend = nil // an idle connection holds no buffer
	return err == nil && !w.close
}

func (w *response) writeTrailers(bw *bufio.Writer) {
	h := w.header
	for k := range declared(h["Trailer"]) {
		for _, v := range h[k] {
			writeField(bw, k, v)
		}
	}
	for k, vv := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			for _, v := range vv {
				writeField(bw, name, v)
			}
		}
	}
}

// abort drops a response the handler panicked in.
func (w *response) abort() {
	w.close = true
	if w.c.bw != nil {
		w.c.bw.Reset(nil)
		w.releaseWriter()
	}
	if w.body != nil {
		w.body.finish()
	}
}

func (w *response) writer() *bufio.Writer {
	if w.c.bw == nil {
		w.c.bw = w.c.srv.writer(w.c)
	}
	return w.c.bw
}

func (w *response) releaseWriter() {
	if bw := w.c.bw; bw != nil {
		w.c.bw = nil
		bw.Reset(nil)
		w.c.srv.writers.Put(bw)
	}
}

// writeStatus writes the status line in the request's HTTP/1.x version,
// as net/http does.
func writeStatus(bw *bufio.Writer, minor, code int) {
	if minor == 0 {
		bw.WriteString("HTTP/1.0 ")
	} else {
		bw.WriteString("HTTP/1.1 ")
	}
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
	bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text)
	} else {
		bw.WriteString("status code ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
	}
	bw.WriteString("\r\n")
}

// writeHeaders writes h as net/http does: without the framing headers
// (commit writes them; an interim 1xx response has none, so it keeps
// Connection) and names net/http would refuse (the "Trailer:" prefixed
// ones among them), with line breaks in values turned into spaces. A
// declared trailer's value set before the header goes out is written here
// too, as net/http writes it; it is written again after the body.
func writeHeaders(bw *bufio.Writer, h http.Header, date []byte, interim bool) {
	for k, vv := range h {
		switch k {
		case "Content-Length", "Transfer-Encoding":
			continue
		case "Connection":
			if !interim {
				continue
			}
		}
		if !syntax.FieldName(k) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
	bw.Write(date)
}

// declared yields the canonical names the Trailer header values announce.
func declared(trailer []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range trailer {
			for k := range strings.SplitSeq(v, ",") {
				if !yield(http.CanonicalHeaderKey(strings.TrimSpace(k))) {
					return
				}
			}
		}
	}
}

func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	for i := 0; i < len(v); i++ {
		b := v[i]
		if b == '\r' || b == '\n' {
			b = ' '
		}
		bw.WriteByte(b)
	}
	bw.WriteString("\r\n")
}

func bodyAllowed(status int) bool {
	return !(status >= 100 && status <= 199 || status == http.StatusNoContent || status == http.StatusNotModified)
}

// hasToken reports whether v holds token, ignoring case, between
// boundaries of space, tab or comma: net/http's reading of Connection and
// Expect, which h1 must share (reading them differently would make h1
// keep a connection net/http closes).
func hasToken(v, token string) bool {
	for i := 0; i+len(token) <= len(v); i++ {
		if (i == 0 || isBoundary(v[i-1])) &&
			(i+len(token) == len(v) || isBoundary(v[i+len(token)])) &&
			strings.EqualFold(v[i:i+len(token)], token) {
			return true
		}
	}
	return false
}

func isBoundary(b byte) bool { return b == ' ' || b == ',' || b == '\t' }

// body is a request body as the handler sees it. It sends the owed 100
// Continue, notes whether the body was read to its end, and is closed by
// h1 (not the handler) once the response is done, so that a read from a
// goroutine the handler left behind cannot touch the next request.
type body struct {
	w       *response
	mu      sync.Mutex
	rc      io.ReadCloser
	trailer *http.Request // where rc puts the trailer
	eof     bool
	closed  bool
	err     error
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.err != nil {
		return 0, b.err
	}
	if w := b.w; w.cont {
		w.cont = false
		if !w.committed {
			w.c.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
		}
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
		if r := b.w.req; r.Trailer == nil {
			r.Trailer = b.trailer.Trailer // undeclared trailers
		}
	} else if err != nil {
		b.err = err
	}
	return n, err
}

// Close is a no-op: h1 decides what happens to an unread body.
func (b *body) Close() error { return nil }

// drain reads and drops up to maxDiscard of what the handler left unread
// and reports whether the body is now read to its end.
func (b *body) drain() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.eof {
		return true
	}
	if b.err != nil || b.closed || b.w.cont {
		return false
	}
	n, err := io.CopyN(io.Discard, b.rc, maxDiscard+1)
	if err == io.EOF && n <= maxDiscard {
		b.eof = true
	}
	return b.eof
}

// finish closes the body for good and reports whether it was read to its
// end (so the connection is still in step with the client).
func (b *body) finish() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if !b.eof {
		return false // Close would read all the rest
	}
	return b.rc.Close() == nil
}

// BytesWritten is how many body bytes the handler has written so far
// (the access log's bytes out).
func (w *response) BytesWritten() int64 { return w.written }
