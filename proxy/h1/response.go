package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
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
	wrote     bool // the final status is set
	committed bool // the status line and headers are in the write buffer
	done      bool // the handler returned
	hijacked  bool
	chunked   bool
	close     bool  // close the connection after this response
	clen      int64 // Content-Length sent, or -1
	written   int64
	pend      []byte

	// From the request before the handler could change it.
	head        bool
	keepAlive10 bool // HTTP/1.0 with Connection: keep-alive
	cont        bool // a 100 Continue is owed before the body is read
}

// reset readies w for req. orig is the request http.ReadRequest returned,
// of which req is a copy with the connection's context: its body fills
// orig's Trailer.
func (w *response) reset(c *conn, req, orig *http.Request) {
	h := w.header
	if h == nil {
		h = make(http.Header)
	} else {
		clear(h)
	}
	*w = response{c: c, req: req, header: h, clen: -1,
		head:  req.Method == http.MethodHead,
		close: req.Close || c.srv.closing.Load(),
	}
	if req.ProtoMajor == 1 && req.ProtoMinor == 0 {
		w.keepAlive10 = hasToken(req.Header.Get("Connection"), "keep-alive")
	}
	if req.Body != http.NoBody {
		w.body = &body{w: w, rc: req.Body, trailer: orig}
		req.Body = w.body
	}
}

// expect handles an Expect header as net/http does: 100-continue is sent
// when the handler first reads the body; any other expectation gets 417.
func (w *response) expect() bool {
	ex := w.req.Header.Get("Expect")
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
// (other than 101) go out at once; the final one when the body starts.
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
	if cl := w.header.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err == nil && n >= 0 {
			w.clen = n
		} else {
			w.header.Del("Content-Length")
		}
	}
}

func (w *response) informational(code int) {
	bw := w.writer()
	writeStatus(bw, w.req.ProtoMinor, code)
	writeHeaders(bw, w.header, nil)
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
		var hex [16]byte
		bw.Write(strconv.AppendInt(hex[:0], int64(len(p)), 16))
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
		w.releaseWriter()
	}
	w.hijacked = true
	c.rw.SetDeadline(time.Time{})
	c.srv.remove(c)
	return c.rw, bufio.NewReadWriter(c.br, bufio.NewWriter(c.rw)), nil
}

// commit writes the status line and headers into the write buffer,
// deciding the framing as net/http does, then the held-back body.
func (w *response) commit() error {
	w.committed = true
	c, h := w.c, w.header
	allowed := bodyAllowed(w.status)
	if !allowed {
		if w.status == http.StatusNotModified {
			delete(h, "Content-Type")
		}
		delete(h, "Content-Length")
		delete(h, "Transfer-Encoding")
		w.clen = -1
	}
	te := h.Get("Transfer-Encoding")
	trailers := len(h["Trailer"]) > 0
	if w.done && w.clen == -1 && te == "" && allowed && !trailers && (!w.head || len(w.pend) > 0) {
		w.clen = int64(len(w.pend))
		h.Set("Content-Length", strconv.Itoa(len(w.pend)))
	}
	if w.keepAlive10 && !w.close && (w.head || w.clen != -1 || !allowed) {
		if _, ok := h["Connection"]; !ok {
			h.Set("Connection", "keep-alive")
		}
	} else if w.req.ProtoMinor == 0 {
		w.close = true
	}
	if hasToken(h.Get("Connection"), "close") {
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
		delete(h, "Transfer-Encoding")
	case w.clen != -1:
		if te != "" && te != "identity" {
			delete(h, "Content-Length") // as net/http: the handler's TE wins
			w.clen = -1
			w.chunked = true
		}
		delete(h, "Transfer-Encoding")
	case w.req.ProtoMinor >= 1 && te == "identity":
		w.close = true
		delete(h, "Transfer-Encoding")
	case w.req.ProtoMinor >= 1:
		w.chunked = true
		delete(h, "Transfer-Encoding")
	default:
		w.close = true
		delete(h, "Transfer-Encoding")
	}
	if w.chunked {
		delete(h, "Content-Length")
		h["Transfer-Encoding"] = chunkedValue
	}
	if w.close && w.status != http.StatusSwitchingProtocols && !hasToken(h.Get("Connection"), "close") {
		delete(h, "Connection")
		if w.req.ProtoMinor >= 1 {
			h["Connection"] = closeValue
		}
	}

	bw := w.writer()
	writeStatus(bw, w.req.ProtoMinor, w.status)
	var date []byte
	if _, ok := h["Date"]; !ok {
		date = c.srv.date(time.Now())
	}
	writeHeaders(bw, h, date)
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

var (
	chunkedValue = []string{"chunked"}
	closeValue   = []string{"close"}
)

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
	for _, declared := range h["Trailer"] {
		for k := range strings.SplitSeq(declared, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			for _, v := range h[k] {
				writeField(bw, k, v)
			}
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
	var b [16]byte
	if minor == 0 {
		bw.WriteString("HTTP/1.0 ")
	} else {
		bw.WriteString("HTTP/1.1 ")
	}
	bw.Write(strconv.AppendInt(b[:0], int64(code), 10))
	bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text)
	} else {
		bw.WriteString("status code ")
		bw.Write(strconv.AppendInt(b[:0], int64(code), 10))
	}
	bw.WriteString("\r\n")
}

// writeHeaders writes h, leaving out trailers and names net/http would
// refuse, with line breaks in values turned into spaces as net/http does.
func writeHeaders(bw *bufio.Writer, h http.Header, date []byte) {
	declared := h["Trailer"]
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || !validFieldName(k) || declared != nil && isDeclared(declared, k) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
	bw.Write(date)
}

// isDeclared reports whether the Trailer header values announce name: its
// value is sent after the body, not before it.
func isDeclared(trailer []string, name string) bool {
	for _, v := range trailer {
		for k := range strings.SplitSeq(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(k)) == name {
				return true
			}
		}
	}
	return false
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

// hasToken reports whether the comma-separated list v holds token,
// ignoring case.
func hasToken(v, token string) bool {
	for t := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
}

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
