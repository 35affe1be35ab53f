package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

// TestEscapeHatchesServeKeyFlows: server.engine: net/http and
// server.sockio: false, alone and together, serve the key flows through the
// real listener as the default (h1 with sockio) does, in front of real PHP
// and memcached: a session follows a user over every backend on a reused
// keep-alive connection, a POST body reaches PHP, a forged session id does
// not, and a malformed or oversized request head is refused. (Whether
// sockio is in use is not visible on the wire: proxy/h1's and
// proxy/upstream's tests check that.)
func TestEscapeHatchesServeKeyFlows(t *testing.T) {
	p := newPool(t, phptest.Memcache)
	for _, tc := range []struct {
		name, server string
		absolute     int // status for an absolute-form target: which server it is
	}{
		{"h1+sockio", "", 400},
		{"h1 without sockio", "  sockio: false\n", 400},
		{"net/http", "  engine: net/http\n", 200},
		{"net/http without sockio", "  engine: net/http\n  sockio: false\n", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := strings.Replace(gateYAML(p, ""), "server:\n", "server:\n"+tc.server, 1)
			g := start(t, writeConfig(t, yaml))
			t.Cleanup(p.tr.CloseIdleConnections)
			base := front(g)

			u := p.newUser(t)
			seen := map[string]bool{}
			reused := 0
			for i := 1; i <= 6; i++ {
				req, _ := http.NewRequest("GET", base+"/visit.php", nil)
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
					GotConn: func(ci httptrace.GotConnInfo) {
						if ci.Reused {
							reused++
						}
					},
				}))
				res, err := u.c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				pg := parsePage(t, body)
				if res.StatusCode != 200 || pg.Visits != i {
					t.Fatalf("visit %d: %s %s", i, res.Status, body)
				}
				seen[pg.Backend] = true
			}
			if len(seen) != 3 || reused != 5 {
				t.Errorf("backends seen %v, connections reused %d: want all three over one connection", seen, reused)
			}

			res, err := u.c.Post(base+"/visit.php", "application/x-www-form-urlencoded", strings.NewReader("a=1"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if pg := parsePage(t, body); res.StatusCode != 200 || pg.Visits != 7 {
				t.Errorf("POST: %s %s, want visit 7", res.Status, body)
			}

			forged := newID(t)
			res, body = rawGet(t, g.addrs.front, "/visit.php", "PHPSESSID="+forged)
			if pg := parsePage(t, body); res.StatusCode != 200 || pg.ID == forged || pg.Visits != 1 {
				t.Errorf("forged id: %s %s, want a fresh session", res.Status, body)
			}

			// h1 refuses absolute-form targets, net/http takes them: the
			// engine asked for is the one serving.
			if res := rawRequest(t, g.addrs.front, "GET http://a/health.php HTTP/1.1\r\nHost: a\r\n\r\n"); res == nil || res.StatusCode != tc.absolute {
				t.Errorf("absolute-form target: %s, want %d", statusOf(res), tc.absolute)
			}
			if res := rawRequest(t, g.addrs.front, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"); res == nil || res.StatusCode != 400 {
				t.Errorf("two Host headers: %s, want 400", statusOf(res))
			}
			big := "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("x", 70<<10) + "\r\n\r\n"
			if res := rawRequest(t, g.addrs.front, big); res == nil || res.StatusCode != 431 {
				t.Errorf("70 KiB head: %s, want 431", statusOf(res))
			}
		})
	}
}

// parsePage decodes visit.php's answer; a body that is not one is a zero page.
func parsePage(t *testing.T, body []byte) page {
	t.Helper()
	var pg page
	if err := json.Unmarshal(body, &pg); err != nil {
		t.Logf("not a page: %q", body)
	}
	return pg
}

// statusOf is res's status line, or why there is none.
func statusOf(res *http.Response) string {
	if res == nil {
		return "connection closed without a response"
	}
	return res.Status
}

// TestTLSClientsServedByALPN: over TLS, a client that chose HTTP/1.1 by
// ALPN, or no protocol, is served by h1, and one that chose h2 by net/http's
// HTTP/2 server; server.engine: net/http serves HTTP/1.1 over TLS too. An
// absolute-form target tells the engines apart (h1 refuses it). Over either
// engine: keep-alive, X-Forwarded-Proto https and the access log's TLS
// version for every request, an upgrade tunnelled through TLS, and a
// plain-HTTP client on the TLS port answered 400.
func TestTLSClientsServedByALPN(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "echo" {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			brw.Flush()
			line, _ := brw.ReadString('\n')
			brw.WriteString("echo:" + line)
			brw.Flush()
			return
		}
		io.WriteString(w, r.Header.Get("X-Forwarded-Proto"))
	}))
	t.Cleanup(be.Close)
	cert, key, roots := selfSigned(t, t.TempDir())
	for _, tc := range []struct {
		name, server string
		absolute     int // status for an absolute-form target: which server it is
	}{
		{"h1", "", 400},
		{"net/http", "  engine: net/http\n", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "access.log")
			g := startCaptured(t, "tls:\n  cert: "+cert+"\n  key: "+key+"\naccess_log:\n  path: "+logPath+"\n  format: json\n"+
				logOn(plainGateYAML(be.URL, tc.server)))
			addr := g.addrs.front
			dial := func(alpn []string) *tls.Conn {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{RootCAs: roots, NextProtos: alpn})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				c.SetDeadline(time.Now().Add(5 * time.Second))
				return c
			}
			for _, alpn := range [][]string{{"http/1.1"}, nil} {
				c := dial(alpn)
				io.WriteString(c, "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
				res, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil || res.StatusCode != tc.absolute {
					t.Errorf("ALPN %q: absolute-form target: %v %v, want %d", alpn, statusOf(res), err, tc.absolute)
				}
			}

			get := func(tr *http.Transport) (proto, body string, reused bool) {
				t.Helper()
				req, _ := http.NewRequest("GET", "https://"+addr+"/", nil)
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
					GotConn: func(ci httptrace.GotConnInfo) { reused = ci.Reused },
				}))
				res, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				return res.Proto, string(b), reused
			}
			h1tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}} // offers http/1.1 alone
			t.Cleanup(h1tr.CloseIdleConnections)
			for i := range 2 {
				if proto, xfp, reused := get(h1tr); proto != "HTTP/1.1" || xfp != "https" || reused != (i == 1) {
					t.Errorf("HTTP/1.1 request %d: %s, X-Forwarded-Proto %q, reused %v", i+1, proto, xfp, reused)
				}
			}
			h2tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
			t.Cleanup(h2tr.CloseIdleConnections)
			for i := range 2 {
				if proto, xfp, reused := get(h2tr); proto != "HTTP/2.0" || xfp != "https" || reused != (i == 1) {
					t.Errorf("HTTP/2 request %d: %s, X-Forwarded-Proto %q, reused %v", i+1, proto, xfp, reused)
				}
			}

			c := dial([]string{"http/1.1"})
			io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			br := bufio.NewReader(c)
			if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != http.StatusSwitchingProtocols {
				t.Errorf("upgrade: %v %v, want 101", statusOf(res), err)
			} else {
				io.WriteString(c, "hello\n")
				if line, err := br.ReadString('\n'); line != "echo:hello\n" {
					t.Errorf("tunnel gave %q, %v", line, err)
				}
			}
			c.Close()

			if res := rawRequest(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); res == nil || res.StatusCode != 400 {
				t.Errorf("plain HTTP on the TLS port: %s, want 400", statusOf(res))
			}

			h1tr.CloseIdleConnections()
			h2tr.CloseIdleConnections()
			g.stop()
			data, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			protos := map[string]int{}
			for line := range strings.Lines(string(data)) {
				var e map[string]any
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatalf("%v: %s", err, line)
				}
				if e["tls"] != "TLSv1.3" {
					t.Errorf("access log: tls %v, want TLSv1.3: %s", e["tls"], line)
				}
				protos[fmt.Sprint(e["protocol"])]++
			}
			want := 3 // two GETs and the upgrade; the absolute-form ones only through net/http
			if tc.absolute == 200 {
				want += 2
			}
			if protos["HTTP/1.1"] != want || protos["HTTP/2.0"] != 2 {
				t.Errorf("access log protocols %v, want HTTP/1.1 %d times and HTTP/2.0 twice", protos, want)
			}
		})
	}
}
