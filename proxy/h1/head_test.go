package h1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/proxy/internal/syntax"
)

// headCorpus: request heads readHead must parse as http.ReadRequest does,
// or leave to it. fast says which; every head is followed by more bytes,
// which must stay unread.
var headCorpus = []struct {
	raw  string
	fast bool
}{
	{"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", true},
	{"GET /index.php?x=1&y=%20z HTTP/1.1\r\nHost: shop.example:8080\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n" +
		"Accept: text/html,application/xhtml+xml\r\nAccept-Language: de-DE,de;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Cookie: PHPSESSID=3vdj8srh32rjq4kfeitc4hk4l5; theme=dark\r\nConnection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\n" +
		"sec-ch-ua: \"Chromium\";v=\"130\"\r\nsec-ch-ua-mobile: ?0\r\nSec-Fetch-Dest: document\r\nIf-None-Match: \"abc\"\r\n\r\n", true},
	{"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"DELETE /a HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"OPTIONS /a HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"POST /form HTTP/1.1\r\nHost: h\r\n\r\n", true}, // no body
	{"FOO-BAR /x HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"get /x HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nhost: h\r\nx-lower: 1\r\nX-MiXeD: 2\r\nETag: 3\r\nWWW-Authenticate: 4\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: h\r\nAccept: a\r\naccept: b\r\nACCEPT: c\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, CLOSE \r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: h\r\nConnection: clo\u017fe, \u212aeep-alive\r\n\r\n", true}, // tokens compare in ASCII
	{"GET /x HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\nCache-Control: max-age=0\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: h\r\nPragma: x\r\nPragma: no-cache\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Spaces:  \t \r\nX-Trail: v \t\r\nX-Inner: a  b\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9\r\nX-Colon: a:b:c\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\n\r\n", true}, // no Host: h1 refuses it afterwards
	{"GET /x HTTP/1.1\r\nHost:\r\n\r\n", true},
	{"GET /x HTTP/1.1\r\nHost: bad host\r\n\r\n", true},
	{"GET /a%2Fb/c%20d?q=%zz HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"GET /caf\xc3\xa9/\xff HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"GET /a? HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"GET /? HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"GET /a?b?c HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"GET /a;p=1/../b/./c HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"GET /%7euser HTTP/1.1\r\nHost: h\r\n\r\n", true},
	// Targets at the edge of simpleTarget's bytes, and beyond it.
	{"GET /a-b_c.d~e$f&g+h,i/j:k;l=m@n?o=p&q=/?:@!$'()*,;%zz\xff HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"GET /a!b'c(d)e*f HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"GET /a\"b<c>d[e]f{g}h|i\\j^k`l HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"GET /a%41b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"GET /?? HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"GET /a?b\x7fc HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"GET /a?b\tc HTTP/1.1\r\nHost: h\r\n\r\n", false},

	// Left to ReadRequest.
	{"GET /%zz HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"GET //evil.example/x HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false},
	{"GET /x HTTP/1.0\r\nHost: h\r\n\r\n", false},
	{"GET /x HTTP/1.2\r\nHost: h\r\n\r\n", false},
	{"GET /x http/1.1\r\nHost: h\r\n\r\n", false},
	{"GET /x HTTP/1.1 \r\nHost: h\r\n\r\n", false},
	{"GET  /x HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"GET /x y HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"GE(T /x HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"GET /x\x01 HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{" GET /x HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"GET /x HTTP/1.1\nHost: h\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", false},
	{"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", false},
	{"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: h\r\nTrailer: X\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: h\r\n X-Fold: y\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\n Host: h\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\tcontinued\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost : h\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: h\r\n: empty name\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: h\r\nNo colon\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: h\r\nX-Bad: a\x00b\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: h\r\nX-Bad: a\rb\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: h\r\nX-Del: \x7f\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: h\r\nX\xc3\xa4: v\r\n\r\n", false},
	{"GET /x HTTP/1.1\r\nHost: h\r\n", false}, // not all here
}

const headTail = "GET /next HTTP/1.1\r\nHost: h\r\n\r\n"

// readRequestSeen is what http.ReadRequest and readHead produce, to compare.
type readRequestSeen struct {
	Method, RequestURI, Proto, Host string
	ProtoMajor, ProtoMinor          int
	URL                             string
	URLFields                       any
	Header, Trailer                 http.Header
	ContentLength                   int64
	TransferEncoding                []string
	Close, NoBody, OwnCtx           bool
	Rest                            string
}

func seen(ctx context.Context, req *http.Request, br *bufio.Reader) readRequestSeen {
	rest, _ := io.ReadAll(br)
	return readRequestSeen{
		Method: req.Method, RequestURI: req.RequestURI, Proto: req.Proto, Host: req.Host,
		ProtoMajor: req.ProtoMajor, ProtoMinor: req.ProtoMinor,
		URL: req.URL.String(), URLFields: *req.URL,
		Header: req.Header, Trailer: req.Trailer, ContentLength: req.ContentLength,
		TransferEncoding: req.TransferEncoding, Close: req.Close,
		NoBody: req.Body == http.NoBody, OwnCtx: req.Context() == ctx, Rest: string(rest),
	}
}

type ctxKey struct{}

// checkHead runs both parsers on raw and fails t where readHead took raw
// and read it differently from ReadRequest. It reports whether readHead
// took it.
func checkHead(t testing.TB, raw string) bool {
	t.Helper()
	ctx := context.WithValue(context.Background(), ctxKey{}, raw)
	br := bufio.NewReaderSize(strings.NewReader(raw), 4<<10)
	br.Peek(1) // as h1's next does before a request
	before := br.Buffered()
	got, ok := readHead(br, new(http.Request).WithContext(ctx))
	if !ok {
		if br.Buffered() != before {
			t.Errorf("%q: readHead fell back having consumed %d bytes", raw, before-br.Buffered())
		}
		return false
	}
	wbr := bufio.NewReaderSize(strings.NewReader(raw), 4<<10)
	want, err := http.ReadRequest(wbr)
	if err != nil {
		t.Errorf("%q: readHead took what ReadRequest refuses: %v", raw, err)
		return true
	}
	want = want.WithContext(ctx)
	if g, w := seen(ctx, got, br), seen(ctx, want, wbr); !reflect.DeepEqual(g, w) {
		t.Errorf("%q:\nreadHead    %+v\nReadRequest %+v", raw, g, w)
	}
	return true
}

func TestReadHeadMatchesReadRequest(t *testing.T) {
	for _, tc := range headCorpus {
		if fast := checkHead(t, tc.raw+headTail); fast != tc.fast {
			t.Errorf("%q: fast path %v, want %v", tc.raw, fast, tc.fast)
		}
	}
}

// TestReadHeadFieldLimit: up to syntax.MaxFields lines take the fast
// path; more are left to ReadRequest.
func TestReadHeadFieldLimit(t *testing.T) {
	head := func(n int) string {
		var b strings.Builder
		b.WriteString("GET / HTTP/1.1\r\nHost: h\r\n")
		for i := 1; i < n; i++ {
			fmt.Fprintf(&b, "X-F%d: %d\r\n", i, i)
		}
		return b.String() + "\r\n"
	}
	if !checkHead(t, head(syntax.MaxFields)) {
		t.Errorf("a head of %d fields fell back", syntax.MaxFields)
	}
	if checkHead(t, head(syntax.MaxFields+1)) {
		t.Errorf("a head of %d fields took the fast path", syntax.MaxFields+1)
	}
}

// FuzzReadHead is TestReadHeadMatchesReadRequest's rule on any input.
func FuzzReadHead(f *testing.F) {
	for _, tc := range headCorpus {
		f.Add(tc.raw + headTail)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		checkHead(t, raw)
	})
}
