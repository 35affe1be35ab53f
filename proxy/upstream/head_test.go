package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/proxy/internal/syntax"
)

// headCorpus is backend output for the differential test: what readHead
// must parse as http.ReadResponse does, and what it must leave to it.
var headCorpus = []struct {
	name, raw string
	fast      bool // readHead takes it (the rest fall back)
}{
	{"nginx", "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 16:12:13 GMT\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nConnection: keep-alive\r\n\r\nhello from lamp01 ok\n", true},
	{"php session", "HTTP/1.1 200 OK\r\nSet-Cookie: PHPSESSID=abc; path=/\r\nExpires: Thu, 19 Nov 1981 08:52:00 GMT\r\nCache-Control: no-store, no-cache, must-revalidate\r\nPragma: no-cache\r\nSet-Cookie: lang=de\r\nContent-Length: 2\r\n\r\nok", true},
	{"pragma alone", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n", true},
	{"pragma other", "HTTP/1.1 200 OK\r\nPragma: x, no-cache\r\nContent-Length: 0\r\n\r\n", true},
	{"lower-case names", "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-custom-thing: a\r\netag: \"x\"\r\nETag: \"y\"\r\n\r\nabc", true},
	{"spacing", "HTTP/1.1 200 OK\r\nContent-Length:   3  \t\r\nX-A:\tb c\t \r\nX-Empty:\r\nX-Sp: \r\n\r\nabc", true},
	{"obs-text", "HTTP/1.1 200 OK\r\nX-Name: Jos\xe9 \xff\r\nContent-Length: 0\r\n\r\n", true},
	{"no reason", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", true},
	{"long reason", "HTTP/1.1 503 Service Unavailable  \t x\r\nContent-Length: 1\r\n\r\nx", true},
	{"leading zeros", "HTTP/1.1 200 OK\r\nContent-Length: 0003\r\n\r\nabc", true},
	{"connection close", "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 1\r\n\r\nx", true},
	{"connection list", "HTTP/1.1 200 OK\r\nConnection: upgrade,close \r\nConnection: x\r\nContent-Length: 1\r\n\r\nx", true},
	{"connection closed-ish", "HTTP/1.1 200 OK\r\nConnection: closed, keep-alive\r\nContent-Length: 1\r\n\r\nx", true},
	{"connection close in Unicode folding only", "HTTP/1.1 200 OK\r\nConnection: clo\u017fe\r\nContent-Length: 1\r\n\r\nx", true},
	{"truncated body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true},
	{"leftover", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", true},
	{"token names", "HTTP/1.1 200 OK\r\nX-!#$%&'*+.^_`|~: v\r\nContent-Length: 0\r\n\r\n", true},
	{"many", "HTTP/1.1 302 Found\r\nLocation: /a\r\nVary: Accept\r\nVary: Cookie\r\nX-Powered-By: PHP/8.2\r\nLast-Modified: x\r\nContent-Encoding: gzip\r\nAccept-Ranges: bytes\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n", true},

	{"no length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", false},
	{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false},
	{"trailer", "HTTP/1.1 200 OK\r\nTrailer: X\r\nContent-Length: 0\r\n\r\n", false},
	{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", false},
	{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx", false},
	{"empty length", "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", false},
	{"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\n", false},
	{"1xx", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false},
	{"204", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false},
	{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", false},
	{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false},
	{"bare LF in head", "HTTP/1.1 200 OK\nX: y\r\nContent-Length: 0\r\n\r\n", false},
	{"bare LF line", "HTTP/1.1 200 OK\r\nX: y\nContent-Length: 0\r\n\r\n", false},
	{"bare LF end", "HTTP/1.1 200 OK\r\nContent-Length: 0\n\n", false},
	{"continuation", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", false},
	{"leading space", "HTTP/1.1 200 OK\r\n X: a\r\nContent-Length: 0\r\n\r\n", false},
	{"space before colon", "HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n", false},
	{"empty name", "HTTP/1.1 200 OK\r\n: a\r\nContent-Length: 0\r\n\r\n", false},
	{"no colon", "HTTP/1.1 200 OK\r\nX\r\nContent-Length: 0\r\n\r\n", false},
	{"control in value", "HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 0\r\n\r\n", false},
	{"CR in value", "HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n", false},
	{"two spaces", "HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n", false},
	{"four digits", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", false},
	{"control in reason", "HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n", false},
	{"incomplete head", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", false},
	{"garbage", "hello", false},
	{"empty", "", false},
}

// checkHead runs readHead and http.ReadResponse on the same bytes. Where
// readHead takes the response, both must agree on every field, the body
// and what stays unread; where it does not, it must have consumed nothing.
func checkHead(t *testing.T, raw []byte, method string) (fast bool) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://backend/", nil)
	br := bufio.NewReaderSize(bytes.NewReader(raw), 4<<10)
	br.Peek(1)
	before := br.Buffered()
	var body leanRes
	got, ok := readHead(br, req, &body)
	if !ok {
		if br.Buffered() != before {
			t.Fatalf("readHead fell back on %q but consumed %d bytes", raw, before-br.Buffered())
		}
		return false
	}
	wbr := bufio.NewReaderSize(bytes.NewReader(raw), 4<<10)
	want, err := http.ReadResponse(wbr, req)
	if err != nil {
		t.Fatalf("readHead took %q, which ReadResponse refuses: %v", raw, err)
	}
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"Status", got.Status, want.Status},
		{"StatusCode", got.StatusCode, want.StatusCode},
		{"Proto", got.Proto, want.Proto},
		{"ProtoMajor", got.ProtoMajor, want.ProtoMajor},
		{"ProtoMinor", got.ProtoMinor, want.ProtoMinor},
		{"Header", got.Header, want.Header},
		{"ContentLength", got.ContentLength, want.ContentLength},
		{"Close", got.Close, want.Close},
		{"TransferEncoding", got.TransferEncoding, want.TransferEncoding},
		{"Trailer", got.Trailer, want.Trailer},
		{"Request", got.Request, want.Request},
	} {
		if !reflect.DeepEqual(f.got, f.want) {
			t.Fatalf("%q: %s = %#v, ReadResponse says %#v", raw, f.name, f.got, f.want)
		}
	}
	gb, gerr := io.ReadAll(got.Body)
	wb, werr := io.ReadAll(want.Body)
	if !bytes.Equal(gb, wb) || !errors.Is(gerr, werr) {
		t.Fatalf("%q: body %q, %v; ReadResponse's %q, %v", raw, gb, gerr, wb, werr)
	}
	grest, _ := io.ReadAll(br)
	wrest, _ := io.ReadAll(wbr)
	if !bytes.Equal(grest, wrest) {
		t.Fatalf("%q: left %q unread; ReadResponse %q", raw, grest, wrest)
	}
	return true
}

func TestReadHeadMatchesReadResponse(t *testing.T) {
	for _, tc := range headCorpus {
		t.Run(tc.name, func(t *testing.T) {
			if fast := checkHead(t, []byte(tc.raw), http.MethodGet); fast != tc.fast {
				t.Errorf("readHead took it: %v, want %v", fast, tc.fast)
			}
			if checkHead(t, []byte(tc.raw), http.MethodHead) {
				t.Error("readHead took the answer to a HEAD request")
			}
		})
	}
}

// TestReadHeadFieldLimit: up to syntax.MaxFields lines take the fast path;
// more take ReadResponse's.
func TestReadHeadFieldLimit(t *testing.T) {
	head := func(n int) []byte {
		return []byte("HTTP/1.1 200 OK\r\n" + strings.Repeat("X-A: b\r\n", n-1) + "Content-Length: 0\r\n\r\n")
	}
	if !checkHead(t, head(syntax.MaxFields), http.MethodGet) {
		t.Errorf("a head of %d fields fell back", syntax.MaxFields)
	}
	if checkHead(t, head(syntax.MaxFields+1), http.MethodGet) {
		t.Errorf("a head of %d fields took the fast path", syntax.MaxFields+1)
	}
}

// TestReadHeadLeavesTheRest: after the body, the next response's bytes are
// still in the reader, and a body cut short is io.ErrUnexpectedEOF.
func TestReadHeadLeavesTheRest(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
	req, _ := http.NewRequest(http.MethodGet, "http://backend/", nil)
	br := bufio.NewReaderSize(strings.NewReader(raw), 4<<10)
	br.Peek(1)
	var body leanRes
	res, ok := readHead(br, req, &body)
	if !ok {
		t.Fatal("readHead fell back")
	}
	if b, err := io.ReadAll(res.Body); string(b) != "ok" || err != nil {
		t.Fatalf("body %q, %v", b, err)
	}
	next, ok := readHead(br, req, &body)
	if !ok || next.StatusCode != 404 || next.Body != http.NoBody {
		t.Fatalf("next response: %+v, %v", next, ok)
	}

	br = bufio.NewReaderSize(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"), 4<<10)
	br.Peek(1)
	res, _ = readHead(br, req, &body)
	if b, err := io.ReadAll(res.Body); string(b) != "ab" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short body: %q, %v; want io.ErrUnexpectedEOF", b, err)
	}
}

func FuzzReadHead(f *testing.F) {
	for _, tc := range headCorpus {
		f.Add([]byte(tc.raw))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkHead(t, raw, http.MethodGet)
	})
}

// BenchmarkResponseHead compares readHead with http.ReadResponse on what
// nginx answers in make bench.
func BenchmarkResponseHead(b *testing.B) {
	raw := []byte(headCorpus[0].raw)
	req, _ := http.NewRequest(http.MethodGet, "http://backend/", nil)
	r := bytes.NewReader(raw)
	br := bufio.NewReaderSize(r, 4<<10)
	read := func(b *testing.B, parse func() (*http.Response, error)) {
		b.ReportAllocs()
		for b.Loop() {
			r.Reset(raw)
			br.Reset(r)
			br.Peek(1)
			res, err := parse()
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
		}
	}
	b.Run("readHead", func(b *testing.B) {
		var body leanRes
		read(b, func() (*http.Response, error) {
			res, ok := readHead(br, req, &body)
			if !ok {
				return nil, errors.New("fell back")
			}
			return res, nil
		})
	})
	b.Run("ReadResponse", func(b *testing.B) {
		read(b, func() (*http.Response, error) { return http.ReadResponse(br, req) })
	})
}
