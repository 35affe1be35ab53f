package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// xffBackend answers with the X-Forwarded-For it got.
func xffBackend(t *testing.T) *httptest.Server {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(be.Close)
	return be
}

// dialFrom connects to addr from the loopback address local (any of
// 127.0.0.0/8 is this host), so a test can be a trusted or untrusted peer.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func v1Header(src string) []byte {
	return []byte("PROXY TCP4 " + src + " 192.0.2.1 40000 80\r\n")
}

func v2Header(t *testing.T, cmd proxyproto.ProtocolVersionAndCommand, src string) []byte {
	t.Helper()
	h := &proxyproto.Header{Version: 2, Command: cmd, TransportProtocol: proxyproto.TCPv6,
		SourceAddr:      &net.TCPAddr{IP: net.ParseIP(src), Port: 40000},
		DestinationAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443}}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// roundTrip writes hdr and one GET on c (over TLS when roots is set) and
// returns the body, or the error reading the response.
func roundTrip(c net.Conn, hdr []byte, roots *x509.CertPool) (string, error) {
	if _, err := c.Write(hdr); err != nil {
		return "", err
	}
	if roots != nil {
		tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
		if err := tc.Handshake(); err != nil {
			return "", err
		}
		c = tc
	}
	if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n"); err != nil {
		return "", err
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

// TestProxyProtocol sends PROXY protocol headers through the real listener,
// on every engine and over TLS: v1 and v2 from the trusted balancer give
// the client address to X-Forwarded-For and the access log; a v2 LOCAL
// header (a balancer's health check) keeps the balancer's own; the same
// header from an untrusted peer, a malformed one and a stalled one get the
// connection closed, and the gate goes on serving.
func TestProxyProtocol(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, roots := selfSigned(t, dir)
	for _, tc := range []struct {
		name, server, tls string
	}{
		{"h1", "", ""},
		{"h1-no-sockio", "  sockio: false\n", ""},
		{"net-http", "  engine: net/http\n", ""},
		{"tls", "", "tls:\n  cert: " + certFile + "\n  key: " + keyFile + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := xffBackend(t)
			logPath := filepath.Join(t.TempDir(), "access.log")
			g := startCaptured(t, logOn(plainGateYAML(be.URL, tc.server))+tc.tls+
				"access_log:\n  path: "+logPath+"\n  format: json\n"+
				"proxy_protocol:\n  enabled: true\n  trusted: [127.0.0.2]\n  header_timeout: 300ms\n")
			var pool *x509.CertPool
			if tc.tls != "" {
				pool = roots
			}
			front := g.addrs.front

			for _, c := range []struct {
				hdr  []byte
				want string
			}{
				{v1Header("203.0.113.9"), "203.0.113.9"},
				{v2Header(t, proxyproto.PROXY, "2001:db8::7"), "2001:db8::7"},
				{v2Header(t, proxyproto.LOCAL, "2001:db8::7"), "127.0.0.2"},
			} {
				got, err := roundTrip(dialFrom(t, "127.0.0.2", front), c.hdr, pool)
				if err != nil || got != c.want {
					t.Errorf("header %q: backend saw X-Forwarded-For %q (%v), want %q", c.hdr, got, err, c.want)
				}
			}

			refused := func(what string, local string, hdr []byte) {
				t.Helper()
				if got, err := roundTrip(dialFrom(t, local, front), hdr, pool); err == nil {
					t.Errorf("%s: answered %q, want the connection closed", what, got)
				}
			}
			refused("untrusted peer", "127.0.0.1", v1Header("203.0.113.66"))
			refused("no header", "127.0.0.2", nil)
			refused("malformed v1", "127.0.0.2", []byte("PROXY TCP4 203.0.113.66 nonsense\r\n"))
			refused("overlong v1", "127.0.0.2", []byte("PROXY TCP4 "+strings.Repeat("1", 120)+"\r\n"))
			bad := v2Header(t, proxyproto.PROXY, "2001:db8::66")
			bad[13] = 0x99 // unknown family
			refused("malformed v2", "127.0.0.2", bad)

			// A header that stops halfway is cut at header_timeout.
			c := dialFrom(t, "127.0.0.2", front)
			io.WriteString(c, "PROXY TCP4 203.0.113.66 ")
			start := time.Now()
			if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("stalled header: read %d, %v; want the connection closed", n, err)
			} else if d := time.Since(start); d > 5*time.Second {
				t.Errorf("stalled header closed after %v, header_timeout is 300ms", d)
			}

			// Still serving.
			if got, err := roundTrip(dialFrom(t, "127.0.0.2", front), v1Header("198.51.100.1"), pool); err != nil || got != "198.51.100.1" {
				t.Errorf("after the refusals: %q, %v", got, err)
			}
			m := scrape(t, g.addrs.admin)
			if !strings.Contains(m, `sessiongate_client_refused_total{reason="proxy_untrusted"} 1`) ||
				!strings.Contains(m, `sessiongate_client_refused_total{reason="proxy_header"} 5`) {
				t.Errorf("refusal metrics:\n%s", grepLines(m, "client_refused"))
			}
			g.stop()

			data, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			var clients []string
			for line := range strings.Lines(string(data)) {
				var e struct{ Client string }
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatalf("%v: %q", err, line)
				}
				clients = append(clients, e.Client)
			}
			if want := "203.0.113.9 2001:db8::7 127.0.0.2 198.51.100.1"; strings.Join(clients, " ") != want {
				t.Errorf("access log clients %q, want %q", clients, want)
			}
		})
	}
}

// scrape returns the admin listener's /metrics.
func scrape(t *testing.T, admin string) string {
	t.Helper()
	res, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// TestProxyProtocolStalledHeaderBlocksNobody: connections whose header is
// late do not hold up the others (headers are read off the accept loop),
// and shutdown closes them without waiting out header_timeout or leaving
// goroutines behind.
func TestProxyProtocolStalledHeaderBlocksNobody(t *testing.T) {
	be := xffBackend(t)
	baseline := runtime.NumGoroutine()
	g := startCaptured(t, plainGateYAML(be.URL, "")+
		"proxy_protocol:\n  enabled: true\n  trusted: [127.0.0.2]\n  header_timeout: 1m\n")
	for range 20 {
		c := dialFrom(t, "127.0.0.2", g.addrs.front)
		io.WriteString(c, "PROXY TCP4 ")
	}
	// dialFrom's 10s deadline: were the accept loop waiting for one of
	// the stalled headers (1m), this would time out.
	if got, err := roundTrip(dialFrom(t, "127.0.0.2", g.addrs.front), v1Header("198.51.100.2"), nil); err != nil || got != "198.51.100.2" {
		t.Fatalf("beside 20 stalled headers: %q, %v", got, err)
	}
	g.stop() // fails the test if serve takes over 10s
	waitGoroutines(t, baseline)
}
