package upstream

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// connCounter counts the connections a test server accepts.
func connCounter(s *httptest.Server) *atomic.Int32 {
	var n atomic.Int32
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			n.Add(1)
		}
	}
	return &n
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestLeanAbandonedBodyClosesConnection(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, big)
	}))
	conns := connCounter(be)
	be.Start()
	defer be.Close()
	lean := NewLean(TransportOptions{DialTimeout: time.Second, ResponseTimeout: time.Second, MaxIdleConns: 4})
	defer lean.CloseIdleConnections()
	for range 2 {
		req, _ := http.NewRequest(http.MethodGet, be.URL, nil)
		res, err := lean.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadFull(res.Body, make([]byte, 10)) // read a little, then give up
		res.Body.Close()
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("connections = %d, want 2: a half-read connection must not be reused", n)
	}
}

func TestLeanSendsOnlyBodilessIdempotentRequests(t *testing.T) {
	for _, tc := range []struct {
		method string
		body   io.Reader
		hdr    string
		h2     bool  // as net/http's HTTP/2 server makes it: a Body always
		length int64 // with h2: the ContentLength it set
		lean   bool
	}{
		{http.MethodGet, nil, "", false, 0, true},
		{http.MethodHead, nil, "", false, 0, true},
		{http.MethodDelete, nil, "", false, 0, true},
		{http.MethodPost, nil, "", false, 0, false},
		{http.MethodPut, strings.NewReader("x"), "", false, 0, false},
		{http.MethodGet, nil, "websocket", false, 0, false},
		{http.MethodGet, nil, "", true, 0, true},   // stream ended with the headers
		{http.MethodGet, nil, "", true, -1, false}, // a body of unknown length follows
		{http.MethodGet, nil, "", true, 5, false},
		{http.MethodPost, nil, "", true, 0, false},
	} {
		req := httptest.NewRequest(tc.method, "http://backend/", tc.body)
		req.URL.Scheme, req.URL.Host = "http", "backend"
		if tc.hdr != "" {
			req.Header.Set("Upgrade", tc.hdr)
		}
		if tc.h2 {
			req.ProtoMajor, req.ProtoMinor = 2, 0
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader("")), tc.length
		}
		if got := Eligible(req, req.URL.Scheme); got != tc.lean {
			t.Errorf("%s body=%v upgrade=%q h2=%v length=%d: lean=%v, want %v", tc.method, tc.body != nil, tc.hdr, tc.h2, tc.length, got, tc.lean)
		}
	}
}

// TestDirectRequestMatchesCopy holds Lean's direct path (the request as
// the server parsed it, plus the backend's base URL) to the bytes it sends
// for the proxy's copy of the request with TargetURL's URL.
func TestDirectRequestMatchesCopy(t *testing.T) {
	targets := []string{
		"/", "/index.php", "/index.php?x=1&y=%20z", "/a%2Fb/c?q", "/caf%C3%A9/",
		"/a?", "/?", "*", "/%7Euser/", "/a//b/../c", "/p;x=1?a=b#c", "/sp%20ace?%00",
	}
	bases := []string{"http://127.0.0.1:8080", "http://127.0.0.1:8080/", "http://lamp01/app", "http://lamp01/app/", "http://lamp01/a%20b/"}
	for _, target := range targets {
		for _, base := range bases {
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(
				"GET " + target + " HTTP/1.1\r\nHost: front.example\r\nAccept: */*\r\n\r\n")))
			if err != nil {
				t.Fatalf("%q: %v", target, err)
			}
			b := mustURL(t, base)
			out := r.WithContext(r.Context())
			out.URL = TargetURL(b, r.URL)
			want := string(appendRequest(nil, out, out.URL.Host, nil))
			got := string(appendRequest(nil, r, b.Host, b))
			if got != want {
				t.Errorf("target %q, base %q:\ndirect %q\ncopy   %q", target, base, got, want)
			}
		}
	}
	// URLs no request line makes, for appendTarget alone.
	for _, in := range []*url.URL{{}, {RawQuery: "a=1"}, {Path: "/a/b", RawPath: "/a%2fb"}, {Path: "/a/b", RawPath: "/bogus"}} {
		for _, base := range bases {
			b := mustURL(t, base)
			if got, want := string(appendTarget(nil, b, in)), TargetURL(b, in).RequestURI(); got != want {
				t.Errorf("%#v at %q: %q, want %q", in, base, got, want)
			}
		}
	}
	// Without a Host header (HTTP/1.0), the backend's host goes.
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET /x HTTP/1.0\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(appendRequest(nil, r, "lamp01:80", mustURL(t, "http://lamp01:80"))); !strings.HasPrefix(got, "GET /x HTTP/1.1\r\nHost: lamp01:80\r\n") {
		t.Errorf("HTTP/1.0 without Host: %q", got)
	}
}

// oneAnswerBackend answers one request on each connection and reports on
// the channel when the client closes that connection.
func oneAnswerBackend(t *testing.T) (string, <-chan struct{}) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	closed := make(chan struct{}, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if _, err := br.ReadByte(); err == io.EOF {
					closed <- struct{}{}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), closed
}

func roundTripOK(t *testing.T, l *Lean, u string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	res, err := l.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(res.Body); string(b) != "ok" || err != nil {
		t.Fatalf("body %q, %v", b, err)
	}
	res.Body.Close()
}

// TestIdleConnectionClosesAfterIdleTimeout: a pooled connection nobody
// reuses is closed once IdleTimeout has passed, and leaves the pool.
func TestIdleConnectionClosesAfterIdleTimeout(t *testing.T) {
	u, closed := oneAnswerBackend(t)
	l := &Lean{MaxIdle: 2, IdleTimeout: 20 * time.Millisecond}
	defer l.CloseIdleConnections()
	roundTripOK(t, l, u)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the idle connection was still open 5s after its 20ms idle timeout")
	}
	l.mu.Lock()
	n := len(l.idle)
	l.mu.Unlock()
	if n != 0 {
		t.Errorf("the pool still lists %d backends", n)
	}
}

// TestCloseIdleConnectionsStopsTheTimers: CloseIdleConnections closes the
// idle connections at once and stops their timers.
func TestCloseIdleConnectionsStopsTheTimers(t *testing.T) {
	u, closed := oneAnswerBackend(t)
	l := &Lean{MaxIdle: 2, IdleTimeout: time.Hour}
	roundTripOK(t, l, u)
	l.mu.Lock()
	var c *upConn
	for _, list := range l.idle {
		c = list[0]
	}
	l.mu.Unlock()
	if c == nil || c.timer == nil {
		t.Fatal("no pooled connection with a timer")
	}
	l.CloseIdleConnections()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("CloseIdleConnections left the connection open")
	}
	if c.timer.Stop() {
		t.Error("the idle timer was still running")
	}
}

// BenchmarkIdleCheck is the check a reused connection gets before the
// request is written: one non-blocking peek at its socket.
func BenchmarkIdleCheck(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
		}
	}()
	l := &Lean{}
	c, _, err := l.get(b.Context(), ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.nc.Close()
	b.ReportAllocs()
	for b.Loop() {
		if c.stale() {
			b.Fatal("an idle connection looked stale")
		}
	}
}

// TestReuseWithoutIdleTimeout: with IdleTimeout 0 connections have no
// timer and are still reused.
func TestReuseWithoutIdleTimeout(t *testing.T) {
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	conns := connCounter(be)
	be.Start()
	defer be.Close()
	l := &Lean{MaxIdle: 2}
	defer l.CloseIdleConnections()
	for range 3 {
		roundTripOK(t, l, be.URL)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("connections = %d, want 1", n)
	}
}
