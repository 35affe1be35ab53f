package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net/http"
	"sync/atomic"
	"unsafe"
)

// maxRequestIDLen bounds a kept X-Request-ID.
const maxRequestIDLen = 128

// idSource makes request ids: a random 64-bit prefix drawn once (so that
// instances side by side, and this one after a reload, never repeat each
// other's ids) and a counter, in 32 hex digits (the size of a W3C trace
// id). No randomness is drawn per request.
type idSource struct {
	prefix [16]byte // hex
	n      atomic.Uint64
}

func newIDSource() *idSource {
	var r [8]byte
	rand.Read(r[:]) // never fails (crypto/rand doc)
	s := &idSource{}
	hex.Encode(s.prefix[:], r[:])
	return s
}

// idHeader is a request id and the header value slice that holds it,
// part of the request's scratch: the string points into b, which is never
// written after next returns (so the string is as immutable as any other).
type idHeader struct {
	v [1]string
	b [32]byte
}

// next writes a fresh id into h and returns it as a one-value header
// slice.
func (s *idSource) next(h *idHeader) []string {
	copy(h.b[:16], s.prefix[:])
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], s.n.Add(1))
	hex.Encode(h.b[16:], n[:])
	h.v[0] = unsafe.String(&h.b[0], len(h.b))
	return h.v[:]
}

// validRequestID reports whether an inbound X-Request-ID may be kept:
// 1-128 bytes of [A-Za-z0-9._:-], which is safe in any log line or header.
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// requestID settles r's X-Request-ID: one well-formed value from a trusted
// proxy is kept, anything else is replaced by a fresh id. PHP gets it as a
// request header and the client as a response header.
// trusted says whether the peer is a trusted proxy; a fresh id goes in h.
func (p *Proxy) requestID(w http.ResponseWriter, r *http.Request, trusted bool, h *idHeader) string {
	vals := r.Header["X-Request-Id"]
	if len(vals) != 1 || !validRequestID(vals[0]) || !trusted {
		vals = p.ids.next(h)
		r.Header["X-Request-Id"] = vals
	}
	// Shared with the request: neither side writes into it (see fixedValues).
	w.Header()["X-Request-Id"] = vals
	return vals[0]
}

// requestIDOf is r's id once ServeHTTP settled it, for log lines.
func requestIDOf(r *http.Request) string {
	if v := r.Header["X-Request-Id"]; len(v) > 0 {
		return v[0]
	}
	return ""
}
