package h1

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"strings"

	"github.com/sessiongate/sessiongate/proxy/internal/syntax"
)

// readHead is http.ReadRequest, then WithContext(ctx), for the request
// nearly every browser sends: HTTP/1.1, its whole head already buffered,
// an origin-form target ("/..."), no body (no Content-Length or
// Transfer-Encoding), one Host at most, no Trailer. For anything else it
// returns ok false having consumed nothing, and the caller uses
// http.ReadRequest: unusual requests keep the standard library's
// handling, errors included. What it accepts, it parses as ReadRequest
// does (TestReadHeadMatchesReadRequest and FuzzReadHead hold the two to
// the same request and leftover bytes).
//
// Why: ReadRequest was the largest user-space cost of the server per
// request (a general line reader, a string per header value, and a second
// request for the context); this is two passes over bytes already in
// memory, with every name and value in one string, and the request, its
// URL and its header values in one allocation (see headReq).
//
// tmpl is a request with nothing set but its context (see conn.tmpl),
// which the request made is given: http.Request has no other way to set
// it than WithContext, a second request.
func readHead(br *bufio.Reader, tmpl *http.Request) (*http.Request, bool) {
	head, first, ok := syntax.BufferedHead(br) // the request line is head[:first]
	if !ok {
		return nil, false
	}
	method, target, ok := requestLine(head[:first])
	if !ok {
		return nil, false
	}

	// Validate every line and find the framing fields before building
	// anything, so that a head that falls back costs no allocation.
	var fields [syntax.MaxFields]syntax.Field
	n, ok := syntax.SplitFields(head, first+2, fields[:])
	if !ok {
		return nil, false
	}
	closing, hosts, host := false, 0, -1
	for i, f := range fields[:n] {
		k := f.Name(head)
		switch {
		case bytes.EqualFold(k, []byte("Host")):
			hosts, host = hosts+1, i
		case bytes.EqualFold(k, []byte("Content-Length")), bytes.EqualFold(k, []byte("Transfer-Encoding")),
			bytes.EqualFold(k, []byte("Trailer")):
			return nil, false
		case bytes.EqualFold(k, []byte("Connection")):
			closing = closing || syntax.HasToken(f.Value(head), "close")
		}
	}
	if hosts > 1 {
		return nil, false // ReadRequest's error to give
	}

	// Build. One string holds the whole head, as in textproto.
	s := string(head)
	// The request line's parts, as substrings of s.
	m := s[:len(method)]
	uri := s[len(method)+1 : len(method)+1+len(target)]
	x := new(headReq)
	x.req = *tmpl
	req := &x.req
	req.Method = m
	req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/1.1", 1, 1
	if simpleTarget(uri, &x.url) {
		req.URL = &x.url
	} else {
		// url.Parse, for a target that requestLine accepts (a path, not
		// "//", no '#'), is exactly ReadRequest's url.ParseRequestURI; it
		// fails as that would.
		u, err := url.Parse(uri)
		if err != nil {
			return nil, false
		}
		req.URL = u
	}
	// Host goes to req.Host and not into the map, as ReadRequest leaves it.
	if host >= 0 {
		f := fields[host]
		req.Host = s[f.VS:f.VE]
		n = copy(fields[host:n], fields[host+1:n]) + host
	}
	if n > 8 {
		req.Header = make(http.Header, n) // sized once, not grown
	} else {
		req.Header = make(http.Header)
	}
	syntax.FillHeader(req.Header, s, head, fields[:n], x.vals[:])
	syntax.FixPragma(req.Header)
	req.RequestURI = uri
	req.Close = closing
	req.Body = http.NoBody
	br.Discard(len(head) + 2)
	return req, true
}

// headReq is what readHead builds, in one allocation: the request, its
// URL (when simpleTarget parsed it) and the backing array of its single
// header values (room for what most browsers send; more get their own).
// Nothing reuses it: a handler may keep the request.
type headReq struct {
	req  http.Request
	url  url.URL
	vals [12]string
}

// simpleTarget sets *u to url.Parse(target) when target is an origin-form
// path of bytes that url.Parse takes as they are (letters, digits and
// -._~$&+,/:;=@: nothing to unescape, and Path's own escaping gives the
// same bytes back, so RawPath stays empty) with an optional non-empty
// query free of control bytes; it reports false, leaving u alone, for
// anything else (percent-escapes, a bare "?", other bytes), which url.Parse
// handles.
func simpleTarget(target string, u *url.URL) bool {
	path, query, _ := strings.Cut(target, "?")
	if len(path) == 0 || path[0] != '/' || len(query) == 0 && len(path) < len(target) {
		return false
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("-._~$&+,/:;=@", c) >= 0) {
			return false
		}
	}
	for i := 0; i < len(query); i++ {
		if c := query[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	*u = url.URL{Path: path, RawQuery: query}
	return true
}

// requestLine splits "METHOD /target HTTP/1.1" and accepts it when
// ReadRequest would read it the same way and h1 would serve it: a token
// method other than CONNECT and PRI (which h1 refuses or net/http treats
// specially), and an origin-form target without a fragment.
func requestLine(line []byte) (method, target []byte, ok bool) {
	method, rest, ok1 := bytes.Cut(line, []byte(" "))
	target, proto, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || string(proto) != "HTTP/1.1" || !syntax.FieldName(method) ||
		string(method) == http.MethodConnect || string(method) == "PRI" {
		return nil, nil, false
	}
	if len(target) == 0 || target[0] != '/' || len(target) > 1 && target[1] == '/' || bytes.IndexByte(target, '#') >= 0 {
		return nil, nil, false
	}
	return method, target, true
}
