package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"

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
