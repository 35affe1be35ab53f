package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/sessiongate/sessiongate/accesslog"
)

// AccessLog receives one entry per finished request; it must not block.
// *accesslog.Logger implements it.
type AccessLog interface {
	Log(accesslog.Entry)
}

// accessEntry is one request's access log entry while it is served.
type accessEntry struct {
	e  accesslog.Entry
	cw *countingWriter // nil when w counts its bytes itself
}

// begin fills in what the request says about itself, before serve rewrites
// its headers, and returns the writer serve must use.
func (a *accessEntry) begin(p *Proxy, w http.ResponseWriter, r *http.Request, start time.Time, id string, trusted bool) http.ResponseWriter {
	a.e = accesslog.Entry{Start: start, Client: p.clientAddr(r, trusted), Method: r.Method, Host: r.Host,
		URI: r.RequestURI, Proto: r.Proto, RequestID: id}
	if v := r.Header["User-Agent"]; len(v) > 0 {
		a.e.UserAgent = v[0]
	}
	if v := r.Header["Referer"]; len(v) > 0 {
		a.e.Referer = v[0]
	}
	if r.TLS != nil {
		a.e.TLS = r.TLS.Version
	}
	if _, ok := w.(bytesWritten); ok {
		return w
	}
	a.cw = &countingWriter{ResponseWriter: w}
	return a.cw
}

// finish completes the entry with what serving the request found.
func (a *accessEntry) finish(w http.ResponseWriter, d time.Duration, status int, backend string, rec *record) accesslog.Entry {
	e := &a.e
	e.Duration, e.Status, e.Backend = d, status, backend
	e.Upstream, e.Retries, e.Session, e.SessionID = rec.upstream, rec.retries, rec.outcome, rec.sessionID
	if rec.body != nil {
		e.BytesIn = rec.body.n.Load()
	}
	if a.cw != nil {
		e.BytesOut = a.cw.n
	} else {
		e.BytesOut = w.(bytesWritten).BytesWritten()
	}
	return *e
}

// record is what serve learns about a request for the access log.
type record struct {
	upstream  time.Duration // the last attempt's wait for response headers; < 0: none
	retries   int
	outcome   string // the session layer's outcome
	sessionID string // the verified session id
	body      *trackedBody
}

// bytesWritten is implemented by h1's ResponseWriter; other writers are
// wrapped in a countingWriter.
type bytesWritten interface{ BytesWritten() int64 }

// countingWriter counts the body bytes written through it. Unwrap lets
// http.ResponseController reach the writer's Flush and Hijack.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// clientAddr is the client's address for the access log: the peer's, or,
// when the peer is a trusted proxy, the rightmost X-Forwarded-For entry that
// is not itself a trusted proxy (entries to its left are the client's
// claims). A malformed entry stops the walk at the last trusted hop.
// trusted is p.trusted(r.RemoteAddr), settled once per request.
func (p *Proxy) clientAddr(r *http.Request, trusted bool) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	if !trusted {
		return host
	}
	xff := r.Header["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		for v := xff[i]; v != ""; {
			var f string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				f, v = v[j+1:], v[:j]
			} else {
				f, v = v, ""
			}
			f = strings.TrimSpace(f)
			a, err := netip.ParseAddr(f)
			if err != nil {
				return host
			}
			if !p.trustedAddr(a) {
				return f
			}
			host = f
		}
	}
	return host
}
