package proxy

import (
	"net"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/sessiongate/sessiongate/proxy/internal/syntax"
)

// removeHopHeaders deletes hop-by-hop headers (RFC 9110 7.6.1), which
// are meaningful only for one connection, including any named in Connection.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for v != "" {
			var f string
			f, v, _ = strings.Cut(v, ",")
			if f = textproto.TrimString(f); f != "" {
				delFold(h, f)
			}
		}
	}
	for _, k := range [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		delete(h, k)
	}
}

// delFold deletes the fields named name in any case. Header.Del would
// canonicalize name first, an allocation for every response whose
// backend sends "Connection: keep-alive" (most do); the map is small.
func delFold(h http.Header, name string) {
	for k := range h {
		if strings.EqualFold(k, name) {
			delete(h, k)
		}
	}
}

// upgradeType returns the protocol a request asks to switch to, or "".
// An offer of h2c counts as none: a backend that switched to it would carry
// the client's later requests past the session check (h2c smuggling).
func upgradeType(h http.Header) string {
	for _, v := range h["Connection"] {
		if syntax.HasToken(v, "upgrade") {
			up := syntax.Get(h, "Upgrade")
			if syntax.HasToken(up, "h2c") {
				return ""
			}
			return up
		}
	}
	return ""
}

// prepareHeaders turns the inbound request's headers into the outbound
// ones, in place: hop-by-hop headers go first (so a client cannot use
// Connection to strip the headers we add next), then X-Forwarded-* are set.
// Inbound X-Forwarded-*, Forwarded and X-Real-IP are kept only from a
// trusted proxy; from anyone else they are dropped so that PHP never sees a
// client-chosen address. Names with an underscore are dropped unless
// underscores is set (see dropUnderscored). The values this request adds
// are kept in vals.
func prepareHeaders(r *http.Request, trusted, underscores bool, vals *[2]string) {
	h := r.Header
	removeHopHeaders(h)
	if !underscores {
		dropUnderscored(h)
	}
	if !trusted {
		delete(h, "X-Forwarded-For")
		delete(h, "X-Forwarded-Proto")
		delete(h, "X-Forwarded-Host")
		delete(h, "Forwarded")
		delete(h, "X-Real-Ip")
	}
	// The two values this request adds live in the request's scratch (see
	// scratch); the constant ones are shared by every request (see
	// fixedValues).
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := h["X-Forwarded-For"]; len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		vals[0] = ip
		h["X-Forwarded-For"] = vals[0:1:1]
	}
	if _, ok := h["X-Forwarded-Proto"]; !ok {
		if r.TLS != nil {
			h["X-Forwarded-Proto"] = protoHTTPS
		} else {
			h["X-Forwarded-Proto"] = protoHTTP
		}
	}
	if _, ok := h["X-Forwarded-Host"]; !ok && r.Host != "" {
		vals[1] = r.Host
		h["X-Forwarded-Host"] = vals[1:2:2]
	}
	// net/http's client adds "Go-http-client/1.1" when the header is absent;
	// an explicit empty value keeps the browser's choice (none).
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = noUserAgent
	}
}

// dropUnderscored deletes the fields whose names hold an underscore, as
// nginx does by default (underscores_in_headers off). CGI-style backends
// (PHP's $_SERVER, FastCGI params) turn both '-' and '_' into '_', so
// X-Forwarded_For arrives as HTTP_X_FORWARDED_FOR beside the value the
// proxy set, and which one PHP sees depends on order: the client's could
// win, past the cleanup of X-Forwarded-*, X-Real-IP and the rest.
func dropUnderscored(h http.Header) {
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 {
			delete(h, k)
		}
	}
}

// Header values that prepareHeaders puts in every request,
// shared rather than allocated each time. Nothing writes into a header's
// slice in place (Header.Set replaces it; Add appends to a full slice,
// which copies), so sharing them is safe; never modify them.
var (
	protoHTTP   = []string{"http"}
	protoHTTPS  = []string{"https"}
	noUserAgent = []string{""}
)
