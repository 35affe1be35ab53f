package admin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveAdmin serves a fixture's handler with NewServer on addr (host:0) and
// returns the bound address.
func serveAdmin(t *testing.T, f *fixture, addr string, l ServerLimits) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(f.h, l, nil)
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// rawExchange sends raw on a new connection and returns the response (nil if
// the connection closed first) and the connection, read deadline 5s.
func rawExchange(t *testing.T, addr, raw string) (*http.Response, string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, "", c
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b), c
}

// TestHostGuardThroughListener sends raw requests with chosen Host values
// to the admin handler served on 127.0.0.2 (so that its own address is not
// a loopback name): only its own address, loopback names and the
// configured host are served; a rebinding page's name gets 421 for every
// path, before any data.
func TestHostGuardThroughListener(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Hosts = []string{"admin.example.com", "[fd00::5]"} })
	addr := serveAdmin(t, f, "127.0.0.2:0", DefaultLimits())
	_, port, _ := net.SplitHostPort(addr)
	for _, tc := range []struct {
		host string
		want int
	}{
		{"evil.example", http.StatusMisdirectedRequest},
		{"evil.example:" + port, http.StatusMisdirectedRequest},
		{"127.0.0.3:" + port, http.StatusMisdirectedRequest},
		{"localhost.evil.example", http.StatusMisdirectedRequest},
		{"127.0.0.2:" + port, http.StatusOK},
		{"127.0.0.2", http.StatusOK},
		{"127.0.0.1:" + port, http.StatusOK},
		{"localhost", http.StatusOK},
		{"LocalHost:" + port, http.StatusOK},
		{"[::1]:" + port, http.StatusOK},
		{"admin.example.com", http.StatusOK},
		{"Admin.Example.com:8443", http.StatusOK},
		{"[fd00::5]:443", http.StatusOK},
	} {
		for _, path := range []string{"/api/status", "/metrics", "/"} {
			res, body, _ := rawExchange(t, addr, fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, tc.host))
			if res == nil {
				t.Fatalf("Host %s, %s: no response", tc.host, path)
			}
			if res.StatusCode != tc.want {
				t.Errorf("Host %s, %s: status %d, want %d", tc.host, path, res.StatusCode, tc.want)
			}
			if tc.want != http.StatusOK && (strings.Contains(body, "lamp01") || strings.Contains(body, "sessiongate_up")) {
				t.Errorf("Host %s, %s: refused but the body carries data: %q", tc.host, path, body)
			}
		}
	}
}

// TestAdminServerTimeouts: a silent connection is closed at the header
// timeout, a request whose body never comes at the read timeout, and a CPU
// profile longer than both timeouts still arrives whole.
func TestAdminServerTimeouts(t *testing.T) {
	l := ServerLimits{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 600 * time.Millisecond,
		WriteTimeout: 600 * time.Millisecond, IdleTimeout: time.Second, MaxHeaderBytes: 8 << 10}
	f := newFixture(t, nil)
	addr := serveAdmin(t, f, "127.0.0.1:0", l)
	closedBeforeDeadline := func(t *testing.T, c net.Conn) {
		t.Helper()
		_, err := io.Copy(io.Discard, c) // until the server closes it, or our 5s
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Error("the server kept the connection open for 5s")
		}
	}
	t.Run("silent connection", func(t *testing.T) {
		res, _, c := rawExchange(t, addr, "")
		if res != nil {
			t.Errorf("got a response to nothing: %d", res.StatusCode)
		}
		closedBeforeDeadline(t, c)
	})
	t.Run("body never sent", func(t *testing.T) {
		// net/http reads what the handler left of the body before it
		// answers; without a read timeout it would wait for ever.
		_, _, c := rawExchange(t, addr, "POST /api/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "+testToken+
			"\r\nContent-Length: 1000\r\n\r\n")
		closedBeforeDeadline(t, c)
	})
	t.Run("long profile", func(t *testing.T) {
		res, body, _ := rawExchange(t, addr, "GET /debug/pprof/profile?seconds=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"+
			"Authorization: Bearer "+testToken+"\r\nConnection: close\r\n\r\n")
		if res == nil || res.StatusCode != http.StatusOK || !strings.HasPrefix(body, "\x1f\x8b") {
			t.Fatalf("profile: response %v, %d bytes, want 200 with a gzipped profile", res, len(body))
		}
	})
}
