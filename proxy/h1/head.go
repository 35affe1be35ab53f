package h1

import (
	"bufio"
	"bytes"
	"context"
	"net/http"

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
// memory, with every name and value in one string.
func readHead(br *bufio.Reader, ctx context.Context) (*http.Request, bool) {
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
	// NewRequestWithContext parses uri with url.Parse, which for a target
	// that requestLine accepts (a path, not "//", no '#') is exactly
	// ReadRequest's url.ParseRequestURI; it fails as that would.
	req, err := http.NewRequestWithContext(ctx, m, uri, nil)
	if err != nil {
		return nil, false
	}
	// Host goes to req.Host and not into the map, as ReadRequest leaves it.
	if host >= 0 {
		f := fields[host]
		req.Host = s[f.VS:f.VE]
		n = copy(fields[host:n], fields[host+1:n]) + host
	}
	if n > 8 {
		req.Header = make(http.Header, n) // sized once, not grown
	}
	syntax.FillHeader(req.Header, s, head, fields[:n], nil)
	syntax.FixPragma(req.Header)
	req.RequestURI = uri
	req.Close = closing
	req.Body = http.NoBody
	br.Discard(len(head) + 2)
	return req, true
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
