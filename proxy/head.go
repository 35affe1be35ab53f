package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"

	"github.com/sessiongate/sessiongate/proxy/internal/syntax"
)

// readHead is http.ReadResponse for the response nearly every backend
// sends: HTTP/1.1, its whole head already buffered, a final status other
// than 204 and 304, one Content-Length, no Transfer-Encoding or Trailer,
// to a request other than HEAD. For anything else it returns ok false
// having consumed nothing, and the caller uses http.ReadResponse: unusual
// responses keep the standard library's handling. What it accepts, it
// parses as ReadResponse does (TestReadHeadMatchesReadResponse and
// FuzzReadHead hold the two to the same result).
//
// Why: ReadResponse was the largest user-space cost per proxied request
// (a general line reader and 13 allocations); this is two passes over
// bytes already in memory, with every value in one string.
//
// The body reads through body, which the caller owns (see upBody).
func readHead(br *bufio.Reader, req *http.Request, body *clBody) (*http.Response, bool) {
	if req.Method == http.MethodHead {
		return nil, false
	}
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, false // not all here yet, or not CRLF-delimited
	}
	head := buf[:end+2] // every line with its CRLF

	first := lineEnd(head, 0) // the status line is head[:first]
	if first < 0 {
		return nil, false
	}
	status, ok := statusLine(head[:first])
	if !ok {
		return nil, false
	}
	code := int(status[0]-'0')*100 + int(status[1]-'0')*10 + int(status[2]-'0')
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil, false
	}

	// First pass: validate each line, note where its parts are, and find
	// the framing fields, so that a head that falls back costs no
	// allocation. Heads of more lines than fit take the general path.
	var fields [maxHeadFields]struct{ start, colon, vs, ve int }
	n, closing := 0, false
	var clv []byte
	for i := first + 2; i < len(head); n++ {
		e := lineEnd(head, i)
		if e < 0 || n == len(fields) {
			return nil, false
		}
		line := head[i:e]
		colon, vs, ve, ok := field(line)
		if !ok {
			return nil, false
		}
		fields[n] = struct{ start, colon, vs, ve int }{i, colon, i + vs, i + ve}
		i = e + 2
		k, v := line[:colon], line[vs:ve]
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if clv != nil {
				return nil, false // several: ReadResponse's rules for those
			}
			clv = v
		case bytes.EqualFold(k, []byte("Transfer-Encoding")), bytes.EqualFold(k, []byte("Trailer")):
			return nil, false
		case bytes.EqualFold(k, []byte("Connection")):
			closing = closing || hasCloseToken(v)
		}
	}
	length, ok := contentLength(clv)
	if !ok {
		return nil, false
	}

	// Second pass: build. One string holds every value, as in textproto.
	s := string(head)
	vals := make([]string, n)
	h := make(http.Header, n)
	for _, f := range fields[:n] {
		key := canonicalKey(head[f.start : f.start+f.colon])
		v := s[f.vs:f.ve]
		if old, seen := h[key]; seen {
			h[key] = append(old, v)
			continue
		}
		one := vals[:1:1]
		vals = vals[1:]
		one[0] = v
		h[key] = one
	}
	if closing {
		delete(h, "Connection") // as ReadResponse does
	}
	// As ReadResponse does (RFC 7234 5.4).
	if pv, ok := h["Pragma"]; ok && pv[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}

	res := &http.Response{
		Status:        s[len("HTTP/1.1 "):first],
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		ContentLength: length,
		Close:         closing,
		Request:       req,
		Body:          http.NoBody,
	}
	br.Discard(end + 4)
	if length > 0 {
		*body = clBody{br: br, n: length}
		res.Body = body
	}
	return res, true
}

// lineEnd returns where the line starting at i ends, at its CRLF; -1 for
// a bare LF, which textproto would also take as a line end (the fast path
// leaves such heads to it).
func lineEnd(head []byte, i int) int {
	e := i + bytes.IndexByte(head[i:], '\n')
	if e <= i || head[e-1] != '\r' {
		return -1
	}
	return e - 1
}

// statusLine accepts "HTTP/1.1 NNN" with an optional " reason" of visible
// bytes, spaces and tabs, and returns the three digits.
func statusLine(line []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(line, []byte("HTTP/1.1 "))
	if !ok || len(rest) < 3 {
		return nil, false
	}
	for _, b := range rest[:3] {
		if b < '0' || b > '9' {
			return nil, false
		}
	}
	if len(rest) > 3 && (rest[3] != ' ' || !syntax.FieldValue(rest[4:])) {
		return nil, false
	}
	return rest[:3], true
}

// maxHeadFields is the most header lines readHead takes.
const maxHeadFields = 32

// field splits a header line as textproto does (a line with no leading
// space, trimmed of trailing spaces and tabs, name up to the first colon,
// value without leading spaces and tabs) and reports whether net/http
// would take it without complaint. The name is line[:colon], the value
// line[vs:ve].
func field(line []byte) (colon, vs, ve int, ok bool) {
	colon = bytes.IndexByte(line, ':')
	if colon <= 0 || !syntax.FieldName(line[:colon]) {
		return 0, 0, 0, false // also no leading space: that would be a continuation
	}
	ve = len(line)
	for ve > colon+1 && (line[ve-1] == ' ' || line[ve-1] == '\t') {
		ve--
	}
	vs = colon + 1
	for vs < ve && (line[vs] == ' ' || line[vs] == '\t') {
		vs++
	}
	if !syntax.FieldValue(line[colon+1:]) {
		return 0, 0, 0, false
	}
	return colon, vs, ve, true
}

// contentLength parses a Content-Length value as net/http does, accepting
// only what is unambiguous: 1 to 18 digits.
func contentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, b := range v {
		if b < '0' || b > '9' {
			return 0, false
		}
		n = n*10 + int64(b-'0')
	}
	return n, true
}

// hasCloseToken reports whether a Connection value lists "close", as
// httpguts.HeaderValuesContainsToken reads it.
func hasCloseToken(v []byte) bool {
	for len(v) > 0 {
		var tok []byte
		tok, v, _ = bytes.Cut(v, []byte(","))
		if bytes.EqualFold(bytes.Trim(tok, " \t"), []byte("close")) {
			return true
		}
	}
	return false
}

// canonicalKey is http.CanonicalHeaderKey for a valid name, without an
// allocation for the names backends send most.
func canonicalKey(k []byte) string {
	switch string(k) { // no allocation: the compiler compares in place
	case "Content-Length":
		return "Content-Length"
	case "Content-Type":
		return "Content-Type"
	case "Date":
		return "Date"
	case "Server":
		return "Server"
	case "Connection":
		return "Connection"
	case "Keep-Alive":
		return "Keep-Alive"
	case "Cache-Control":
		return "Cache-Control"
	case "Expires":
		return "Expires"
	case "Pragma":
		return "Pragma"
	case "Set-Cookie":
		return "Set-Cookie"
	case "Vary":
		return "Vary"
	case "X-Powered-By":
		return "X-Powered-By"
	case "Last-Modified":
		return "Last-Modified"
	case "Etag", "ETag":
		return "Etag"
	case "Content-Encoding":
		return "Content-Encoding"
	case "Location":
		return "Location"
	case "Accept-Ranges":
		return "Accept-Ranges"
	}
	return http.CanonicalHeaderKey(string(k))
}

// clBody reads a body of known length from the connection's reader. A
// connection that ends early is io.ErrUnexpectedEOF, as in net/http.
type clBody struct {
	br *bufio.Reader
	n  int64
}

func (b *clBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	switch {
	case b.n == 0:
		return n, io.EOF
	case err == io.EOF:
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

// Close does nothing: upBody decides the connection's fate.
func (b *clBody) Close() error { return nil }
