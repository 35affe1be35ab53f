package upstream

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
// The response is x.res, its body reads through x.body.cl, and its single
// header values are in x.vals: the caller's one allocation (see leanRes).
func readHead(br *bufio.Reader, req *http.Request, x *leanRes) (*http.Response, bool) {
	if req.Method == http.MethodHead {
		return nil, false
	}
	head, first, ok := syntax.BufferedHead(br) // the status line is head[:first]
	if !ok {
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

	// Validate every line and find the framing fields before building
	// anything, so that a head that falls back costs no allocation.
	var fields [syntax.MaxFields]syntax.Field
	n, ok := syntax.SplitFields(head, first+2, fields[:])
	if !ok {
		return nil, false
	}
	closing := false
	var clv []byte
	for _, f := range fields[:n] {
		k, v := f.Name(head), f.Value(head)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if clv != nil {
				return nil, false // several: ReadResponse's rules for those
			}
			clv = v
		case bytes.EqualFold(k, []byte("Transfer-Encoding")), bytes.EqualFold(k, []byte("Trailer")):
			return nil, false
		case bytes.EqualFold(k, []byte("Connection")):
			closing = closing || syntax.HasToken(v, "close")
		}
	}
	length, ok := contentLength(clv)
	if !ok {
		return nil, false
	}

	// Build: one string holds the whole head, as in textproto.
	s := string(head)
	h := make(http.Header, n)
	syntax.FillHeader(h, s, head, fields[:n], x.vals[:])
	if closing {
		delete(h, "Connection") // as ReadResponse does
	}
	syntax.FixPragma(h)

	res := &x.res
	*res = http.Response{
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
	br.Discard(len(head) + 2)
	if length > 0 {
		x.body.cl = clBody{br: br, n: length}
		res.Body = &x.body.cl
	}
	return res, true
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
