package main

// The edge against hostile clients, through the real wiring (serve()): what
// a client can make sessiongate hold, forward or blame on a backend.

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

// TestSilentConnectionsCutAtReadHeaderTimeout: a connection that never sends
// a byte is closed at read_header_timeout (1s), not idle_timeout (30s), which
// is for the time between requests of a keep-alive connection.
func TestSilentConnectionsCutAtReadHeaderTimeout(t *testing.T) {
	const silent = 50
	be := newRecordingBackend(t)
	baseline := runtime.NumGoroutine()
	g := startCaptured(t, plainGateYAML(be.URL, "  read_header_timeout: 1s\n  idle_timeout: 30s\n"))

	closedAfter := make([]time.Duration, silent)
	var wg sync.WaitGroup
	for i := range silent {
		c, err := net.DialTimeout("tcp", g.addrs.front, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		opened := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(opened.Add(5 * time.Second))
			io.Copy(io.Discard, c) // until the server closes it (or the deadline)
			closedAfter[i] = time.Since(opened)
		}()
	}
	wg.Wait()
	first, last := slices.Min(closedAfter), slices.Max(closedAfter)
	t.Logf("%d silent connections closed after %v..%v", silent, first.Round(time.Millisecond), last.Round(time.Millisecond))
	if first < 900*time.Millisecond || last > 3*time.Second {
		t.Errorf("silent connections closed after %v..%v, want about 1s (read_header_timeout)", first, last)
	}
	g.stop()
	waitGoroutines(t, baseline)
}

// TestRequestTrailersNeverReachPHP: a chunked request may carry header
// fields after its body (trailers). php -S merges them into the request
// headers, so a Cookie trailer was a session cookie that strict mode never
// checked: PHP adopted the attacker's id and stored it (session fixation).
// sessiongate forwards no request trailers, on the plain (h1) and the TLS
// (net/http) listener alike.
func TestRequestTrailersNeverReachPHP(t *testing.T) {
	const fixed = "attackerfixed0000000000000" // 26 characters PHP would accept as an id
	p := newPool(t, phptest.Memcache)
	cert, key, roots := selfSigned(t, t.TempDir())
	tlsYAML := "tls:\n  cert: " + cert + "\n  key: " + key + "\n"
	// raw sends the attack over HTTP/1.1 on c and returns the response body.
	raw := func(t *testing.T, c net.Conn, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "POST /visit.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"+
			"Trailer: Cookie, X-Real-IP, X-Forwarded-For\r\nConnection: close\r\n\r\n"+
			"3\r\na=1\r\n0\r\nCookie: PHPSESSID="+fixed+"\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		return okBody(t, res, err)
	}
	for _, tc := range []struct {
		name, yaml string
		send       func(t *testing.T, addr string) []byte
	}{
		{"plain", "", func(t *testing.T, addr string) []byte {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			return raw(t, c, err)
		}},
		{"tls", tlsYAML, func(t *testing.T, addr string) []byte {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
				&tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
			return raw(t, c, err)
		}},
		{"http2", tlsYAML, func(t *testing.T, addr string) []byte {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
			defer tr.CloseIdleConnections()
			// A body of unknown length, so that the trailers follow it.
			req, _ := http.NewRequest("POST", "https://"+addr+"/visit.php", io.MultiReader(strings.NewReader("a=1")))
			req.Trailer = http.Header{"Cookie": {"PHPSESSID=" + fixed}, "X-Real-Ip": {"6.6.6.6"}}
			res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
			if err == nil && res.ProtoMajor != 2 {
				t.Fatalf("got %s, want HTTP/2", res.Proto)
			}
			return okBody(t, res, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := start(t, writeConfig(t, tc.yaml+gateYAML(p, "  strict: true\n")))
			body := tc.send(t, r.addrs.front)
			var pg page
			if err := json.Unmarshal(body, &pg); err != nil {
				t.Fatalf("%v in %q", err, body)
			}
			if pg.ID == fixed || pg.Visits != 1 {
				t.Errorf("PHP took the session id from a trailer: %+v", pg)
			}
			for _, a := range p.mc.Addrs() {
				if got := mcDo(t, a, "mg "+p.dataKey(fixed)+"\r\n"); got != "EN" {
					t.Errorf("memcached %s holds the attacker's id: %q", a, got)
				}
			}
		})
	}
}

// okBody returns the body of a 200 response, failing t on anything else.
func okBody(t *testing.T, res *http.Response, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("%s %q %v", res.Status, body, err)
	}
	return body
}

// TestUnderscoredHeadersDropped: CGI-style backends read X-Forwarded_For as
// X-Forwarded-For (both become HTTP_X_FORWARDED_FOR), so a client could set
// the forwarding headers past the cleanup. Names with '_' are dropped by
// default and forwarded with server.underscores_in_headers: true.
func TestUnderscoredHeadersDropped(t *testing.T) {
	var mu sync.Mutex
	var names []string
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/page" {
			mu.Lock()
			for k := range r.Header {
				names = append(names, k)
			}
			mu.Unlock()
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(be.Close)
	const hostile = "X-Forwarded_For: 6.6.6.6\r\nX-Real_IP: 6.6.6.6\r\nX-Forwarded_Host: evil.example\r\n" +
		"X-Forwarded_Proto: https\r\nx_forwarded_for: 6.6.6.6\r\nX-Custom_Name: 1\r\nX-Plain: 1\r\n"
	for _, tc := range []struct {
		server string
		want   int // underscored names the backend gets
	}{{"", 0}, {"  underscores_in_headers: false\n", 0}, {"  underscores_in_headers: true\n", 6}} {
		mu.Lock()
		names = nil
		mu.Unlock()
		g := startCaptured(t, plainGateYAML(be.URL, tc.server))
		res := rawRequest(t, g.addrs.front, "GET /page HTTP/1.1\r\nHost: x\r\n"+hostile+"Connection: close\r\n\r\n")
		if res == nil || res.StatusCode != 200 {
			t.Fatalf("%q: response %v", tc.server, res)
		}
		g.stop()
		mu.Lock()
		var underscored []string
		plain := false
		for _, k := range names {
			if strings.Contains(k, "_") {
				underscored = append(underscored, k)
			}
			plain = plain || k == "X-Plain"
		}
		mu.Unlock()
		if len(underscored) != tc.want || !plain {
			t.Errorf("server:%q: backend got underscored names %q (want %d) and X-Plain %v", tc.server, underscored, tc.want, plain)
		}
	}
}

// TestClientBodyFailuresAreNotTheBackends: uploads cut short or sent too
// slowly are the client's doing. Five truncated POSTs (passive.failures is 5)
// used to take a healthy backend out, and a slow body got 504 "backend
// timeout"; now the backend stays up with no error counted, the truncated
// ones are closed without an answer (499) and the slow one gets 408.
func TestClientBodyFailuresAreNotTheBackends(t *testing.T) {
	be := newRecordingBackend(t)
	g := startCaptured(t, plainGateYAML(be.URL, "  read_timeout: 1s\n"))
	const head = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"
	for i := range 5 {
		c, err := net.DialTimeout("tcp", g.addrs.front, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, head)
		c.(*net.TCPConn).CloseWrite() // the upload is cut short; still reading
		b, err := io.ReadAll(c)
		c.Close()
		if len(b) > 0 || err != nil {
			t.Errorf("truncated upload %d: got %q (%v), want the connection closed without an answer", i, b, err)
		}
	}
	slow := time.Now()
	res := rawRequest(t, g.addrs.front, head) // and never the other 90 bytes
	if res == nil || res.StatusCode != http.StatusRequestTimeout {
		t.Errorf("slow upload: %v, want 408", res)
	} else {
		t.Logf("slow upload answered %s after %v", res.Status, time.Since(slow).Round(time.Millisecond))
	}

	admin := "http://" + g.addrs.admin
	if st := backendState(t, admin, "lamp01"); st != "up" {
		t.Errorf("after client-side upload failures lamp01 is %q, want up", st)
	}
	if res := rawRequest(t, g.addrs.front, "GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); res == nil || res.StatusCode != 200 {
		t.Errorf("after the uploads: %v", res)
	}
	var st struct {
		Backends []struct {
			Name   string
			Errors uint64
		}
	}
	sres, err := http.Get(admin + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(sres.Body).Decode(&st)
	sres.Body.Close()
	for _, b := range st.Backends {
		if b.Errors != 0 {
			t.Errorf("%s has %d errors counted after client-side failures", b.Name, b.Errors)
		}
	}
	mres, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mres.Body)
	mres.Body.Close()
	for line := range strings.SplitSeq(string(metrics), "\n") {
		if strings.HasPrefix(line, "sessiongate_requests_total{") && strings.Contains(line, `code="5xx"`) && !strings.HasSuffix(line, " 0") {
			t.Errorf("metrics count a backend error: %s", line)
		}
	}
	logs := g.logs.String()
	for _, bad := range []string{"backend timeout", "backend error", "backend down", "status=504", "status=502"} {
		if strings.Contains(logs, bad) {
			t.Errorf("log blames the backend (%q):\n%s", bad, logs)
		}
	}
	if !strings.Contains(logs, "status=499") || !strings.Contains(logs, "status=408") {
		t.Errorf("log has no 499 and 408 lines:\n%s", logs)
	}
}

// TestHTTP10TransferEncodingNotSmuggled: RFC 9112 6.1 closes the connection
// after an HTTP/1.0 request with Transfer-Encoding, plain and over TLS, on
// either engine: h1 sees the field in the raw head (closeAfter); net/http
// (server.engine: net/http) ignores it for HTTP/1.0 and hides it, so there
// every HTTP/1.0 request closes. The request behind it never reaches PHP.
func TestHTTP10TransferEncodingNotSmuggled(t *testing.T) {
	cert, key, roots := selfSigned(t, t.TempDir())
	for _, overTLS := range []bool{false, true} {
		for _, engine := range []string{"h1", "net/http"} {
			name := "plain/" + engine
			if overTLS {
				name = "tls/" + engine
			}
			t.Run(name, func(t *testing.T) {
				be := newRecordingBackend(t)
				cfg := plainGateYAML(be.URL, "  engine: "+engine+"\n")
				if overTLS {
					cfg = "tls:\n  cert: " + cert + "\n  key: " + key + "\n" + cfg
				}
				g := startCaptured(t, cfg)
				d := &net.Dialer{Timeout: 2 * time.Second}
				var c net.Conn
				var err error
				if overTLS {
					c, err = tls.DialWithDialer(d, "tcp", g.addrs.front, &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
				} else {
					c, err = d.Dial("tcp", g.addrs.front)
				}
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, "POST /form HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"+
					"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
				br := bufio.NewReader(c)
				var got []int
				for range 3 {
					res, err := http.ReadResponse(br, nil)
					if err != nil {
						break
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					got = append(got, res.StatusCode)
				}
				if len(got) != 1 || got[0] != 200 {
					t.Errorf("statuses %v, want [200]", got)
				}
				if n := len(be.saw("/smuggled")); n != 0 {
					t.Errorf("backend saw %d smuggled requests", n)
				}
			})
		}
	}
}
