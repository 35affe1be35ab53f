package proxy

// Hostile clients against the proxy behind its real server (NewServer, h1):
// forged and malformed session cookies, conflicting message framing, header
// floods and oversized bodies, all sent as raw bytes over loopback TCP so that
// no client library tidies them up first.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/proxy/cookie"
	"github.com/sessiongate/sessiongate/sessionstore"
)

// idLog is a Sessions that records every id the proxy asks about; ids in
// known get their verdict, every other one is Unknown.
type idLog struct {
	mu      sync.Mutex
	known   map[string]sessionstore.Verdict
	ids     []string
	touchFn func(id string) error
}

func (s *idLog) Check(_ context.Context, id string) sessionstore.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids = append(s.ids, id)
	v, ok := s.known[id]
	if !ok {
		v = sessionstore.Unknown
	}
	return sessionstore.Result{Verdict: v}
}

func (s *idLog) Touch(_ context.Context, id string) error {
	s.mu.Lock()
	s.ids = append(s.ids, id)
	fn := s.touchFn
	s.mu.Unlock()
	if fn != nil {
		return fn(id)
	}
	return nil
}

func (s *idLog) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ids...)
}

// seenRequest is what the backend got.
type seenRequest struct {
	path, cookie string
	body         int // bytes read
	bodyErr      error
}

// hostileFarm is a proxy with a session layer in front of one recording
// backend, served by NewServer with the production limits.
type hostileFarm struct {
	addr  string
	store *idLog
	logs  *lockedBuffer
	mu    sync.Mutex
	reqs  []seenRequest
}

func (h *hostileFarm) backendSaw() []seenRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]seenRequest(nil), h.reqs...)
}

// lockedBuffer is an io.Writer for log handlers used from many goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const maxBody = 1000

// newHostileFarm builds the farm; a nil store knows liveID only.
func newHostileFarm(t *testing.T, so SessionOptions, store *idLog) *hostileFarm {
	t.Helper()
	if store == nil {
		store = &idLog{known: map[string]sessionstore.Verdict{liveID: sessionstore.Verified}}
	}
	h := &hostileFarm{store: store, logs: &lockedBuffer{}}
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		h.mu.Lock()
		h.reqs = append(h.reqs, seenRequest{path: r.URL.Path, cookie: strings.Join(r.Header["Cookie"], "\n"), body: int(n), bodyErr: err})
		h.mu.Unlock()
		io.WriteString(w, "ok")
	})
	so.Store = h.store
	so.Cookie = "PHPSESSID"
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFarm(t, []string{be.URL}, func(o *Options) {
		o.Session = &so
		o.MaxBodyBytes = maxBody
		o.Logger = log
	})
	srv := serveFront(t, f.proxy, ServerOptions{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second,
		MaxHeaderBytes: 65536, Logger: log})
	h.addr = srv.Listener.Addr().String()
	return h
}

// exchange writes raw to a new connection to addr and reads responses until
// the server closes the connection, at most five or 5 seconds.
func exchange(t *testing.T, addr, raw string) []*http.Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	var out []*http.Response
	br := bufio.NewReader(c)
	for range 5 {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("connection neither answered nor closed within 5s (after %d responses)", len(out))
			}
			break
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		out = append(out, res)
	}
	return out
}

func statuses(rs []*http.Response) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.StatusCode)
	}
	return out
}

func TestHostileSessionCookiesAreNeverUsed(t *testing.T) {
	long := strings.Repeat("a", 300)
	for _, tc := range []struct {
		name, cookie string
		status       int    // 0: 200, or 400 when net/http refuses the header itself
		forwarded    string // Cookie PHP gets; "" = "a=1; b=2"
	}{
		{"300 characters", "PHPSESSID=" + long, 0, ""},
		{"257 characters", "PHPSESSID=" + long[:257], 0, ""},
		{"21 characters", "PHPSESSID=" + long[:21], 0, ""},
		{"encoded CRLF", "PHPSESSID=abcdefghijklmnopqrstuvwxyz%0d%0aflush_all", 0, ""},
		{"encoded NUL", "PHPSESSID=abcdefghijklm%00opqrstuvwxyz", 0, ""},
		{"encoded space", "PHPSESSID=abcdefghijklmnopqrstuvwxyz%20", 0, ""},
		{"plus as space", "PHPSESSID=abcdefghijklm+opqrstuvwxyz", 0, ""},
		{"space inside", "PHPSESSID=abcdefghijklm opqrstuvwxyz", 0, ""},
		{"tab inside", "PHPSESSID=abcdefghijklm\topqrstuvwxyz", 0, ""},
		{"quoted", `PHPSESSID="abcdefghijklmnopqrstuvwxyz"`, 0, ""},
		{"quote inside", `PHPSESSID=abcdefghijklm"opqrstuvwxyz`, 0, ""},
		{"non-UTF-8 bytes", "PHPSESSID=abcdefghijklm\xff\xfe\xc0opqrstuvwxyz", 0, ""},
		{"encoded non-UTF-8", "PHPSESSID=abcdefghijklm%ff%feopqrstuvwxyz", 0, ""},
		{"PHP-tolerated punctuation", "PHPSESSID=abc.def!xyzxyzxyzxyzxyzxyz", 0, ""},
		{"path traversal", "PHPSESSID=..%2F..%2F..%2Fetc%2Fpasswdxxxxxxxxx", 0, ""},
		{"empty", "PHPSESSID=", 0, ""},
		{"no value (PHP reads an empty id and makes a new one)", "PHPSESSID", 0, "a=1; PHPSESSID; b=2"},
		{"control byte", "PHPSESSID=abcdefghijklm\x01opqrstuvwxyz", 400, ""},
		{"DEL byte", "PHPSESSID=abcdefghijklm\x7fopqrstuvwxyz", 400, ""},
		{"vertical tab before the name", "a=1;\vPHPSESSID=" + otherID, 400, ""},
		{"many cookies, valid one beyond the bound", strings.Repeat("PHPSESSID=bad; ", 50) + "PHPSESSID=" + liveID, 0, ""},
		{"100 kB", "PHPSESSID=" + strings.Repeat("a", 100<<10), http.StatusRequestHeaderFieldsTooLarge, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostileFarm(t, SessionOptions{Strict: true}, nil)
			res := exchange(t, h.addr, "GET /page HTTP/1.1\r\nHost: x\r\nCookie: a=1; "+tc.cookie+"; b=2\r\nConnection: close\r\n\r\n")
			want := tc.status
			if want == 0 {
				want = http.StatusOK
			}
			if len(res) != 1 || res[0].StatusCode != want {
				t.Fatalf("statuses %v, want [%d]", statuses(res), want)
			}
			for _, id := range h.store.seen() {
				if !sessionstore.ValidID(id) {
					t.Errorf("the store was asked about %q", id)
				}
			}
			fwd := tc.forwarded
			if fwd == "" {
				fwd = "a=1; b=2"
			}
			for _, r := range h.backendSaw() {
				if r.cookie != fwd {
					t.Errorf("PHP got Cookie %q, want %q", r.cookie, fwd)
				}
			}
			if want == http.StatusOK && len(h.backendSaw()) != 1 {
				t.Errorf("backend saw %d requests, want 1", len(h.backendSaw()))
			}
			if s := h.logs.String(); strings.Contains(s, "panic") {
				t.Errorf("panic logged:\n%s", s)
			}
			// Still serving.
			if res := exchange(t, h.addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); len(res) != 1 || res[0].StatusCode != 200 {
				t.Errorf("after the hostile request: %v", statuses(res))
			}
		})
	}
}

// TestFirstValidSessionCookieWinsAlone: of several session cookies only the
// first valid one is checked, and only it reaches PHP, whatever the store says.
func TestFirstValidSessionCookieWinsAlone(t *testing.T) {
	cookie := "a=1; PHPSESSID=bad!; PHPSESSID=%s; b=2; PHPSESSID=" + commaID + "; PHPSESSID=" + liveID
	for _, tc := range []struct {
		verdict sessionstore.Verdict
		strict  bool
		want    string // "" = the session cookie is stripped
	}{
		{sessionstore.Verified, true, "PHPSESSID=" + otherID},
		{sessionstore.Repaired, true, "PHPSESSID=" + otherID},
		{sessionstore.StoreDown, true, "PHPSESSID=" + otherID},
		{sessionstore.Unknown, true, ""},
		{sessionstore.Adopted, false, "PHPSESSID=" + otherID},
	} {
		t.Run(tc.verdict.String(), func(t *testing.T) {
			h := newHostileFarm(t, SessionOptions{Strict: tc.strict}, &idLog{known: map[string]sessionstore.Verdict{
				otherID: tc.verdict, liveID: sessionstore.Verified, commaID: sessionstore.Verified}})
			res := exchange(t, h.addr, "GET / HTTP/1.1\r\nHost: x\r\nCookie: "+fmt.Sprintf(cookie, otherID)+"\r\nConnection: close\r\n\r\n")
			if len(res) != 1 || res[0].StatusCode != 200 {
				t.Fatalf("statuses %v", statuses(res))
			}
			if ids := h.store.seen(); len(ids) != 1 || ids[0] != otherID {
				t.Errorf("store asked about %q, want only %q", ids, otherID)
			}
			want := "a=1; b=2"
			if tc.want != "" {
				want = "a=1; " + tc.want + "; b=2"
			}
			if got := h.backendSaw(); len(got) != 1 || got[0].cookie != want {
				t.Errorf("PHP got %+v, want Cookie %q", got, want)
			}
		})
	}
}

// TestConflictingFramingIsNeverSmuggled sends requests whose length is
// ambiguous followed by a hidden second request. Whatever the proxy answers,
// the hidden request must never reach PHP: RFC 9112 6.1 requires closing the
// connection after a message that had both Transfer-Encoding and
// Content-Length.
func TestConflictingFramingIsNeverSmuggled(t *testing.T) {
	const hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct {
		name, head, body string
		want             []int // statuses the client may see, in order
	}{
		{"CL then TE", "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n", []int{200}},
		{"TE then CL", "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", "0\r\n\r\n", []int{200}},
		{"CL covers the hidden request, TE ends early", "Transfer-Encoding: chunked\r\nContent-Length: 41\r\n", "0\r\n\r\n", []int{200}},
		{"TE list", "Content-Length: 4\r\nTransfer-Encoding: chunked, identity\r\n", "0\r\n\r\n", []int{501}},
		{"TE twice", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n", "0\r\n\r\n", []int{501}},
		{"TE with space before colon", "Content-Length: 4\r\nTransfer-Encoding : chunked\r\n", "0\r\n\r\n", []int{400}},
		{"TE obfuscated", "Content-Length: 4\r\nTransfer-Encoding: xchunked\r\n", "0\r\n\r\n", []int{501}},
		{"two different CL", "Content-Length: 4\r\nContent-Length: 5\r\n", "0\r\n\r\n", []int{400}},
		{"CL list", "Content-Length: 4, 5\r\n", "0\r\n\r\n", []int{400}},
		{"signed CL", "Content-Length: +4\r\n", "0\r\n\r\n", []int{400}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostileFarm(t, SessionOptions{Strict: true}, nil)
			res := exchange(t, h.addr, "POST /form HTTP/1.1\r\nHost: x\r\n"+tc.head+"\r\n"+tc.body+hidden)
			if fmt.Sprint(statuses(res)) != fmt.Sprint(tc.want) {
				t.Errorf("statuses %v, want %v", statuses(res), tc.want)
			}
			for _, r := range h.backendSaw() {
				if r.path != "/form" {
					t.Errorf("backend saw a request for %s", r.path)
				}
				if r.body != 0 {
					t.Errorf("backend got a %d-byte body", r.body)
				}
			}
		})
	}
	t.Run("HTTP/1.0 with TE and CL", func(t *testing.T) {
		h := newHostileFarm(t, SessionOptions{Strict: true}, nil)
		res := exchange(t, h.addr, "POST /form HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+hidden)
		if fmt.Sprint(statuses(res)) != "[200]" {
			t.Errorf("statuses %v, want [200]", statuses(res))
		}
		for _, r := range h.backendSaw() {
			if r.path != "/form" {
				t.Errorf("backend saw a request for %s", r.path)
			}
		}
	})
	// RFC 9112 6.1: HTTP/1.0 with Transfer-Encoding closes the connection.
	// net/http's parser ignores the field for HTTP/1.0, so the bytes a
	// chunked-aware front end sent as body were read as the next request.
	for _, te := range []string{"Transfer-Encoding: chunked", "transfer-encoding: chunked", "Transfer-Encoding: identity"} {
		t.Run("HTTP/1.0 keep-alive with "+te, func(t *testing.T) {
			h := newHostileFarm(t, SessionOptions{Strict: true}, nil)
			res := exchange(t, h.addr, "POST /form HTTP/1.0\r\nConnection: keep-alive\r\n"+te+"\r\n\r\n"+hidden)
			if fmt.Sprint(statuses(res)) != "[200]" {
				t.Errorf("statuses %v, want [200]", statuses(res))
			}
			for _, r := range h.backendSaw() {
				if r.path != "/form" {
					t.Errorf("backend saw a request for %s", r.path)
				}
			}
		})
	}
	t.Run("HTTP/1.0 keep-alive without TE keeps the connection", func(t *testing.T) {
		h := newHostileFarm(t, SessionOptions{Strict: true}, nil)
		res := exchange(t, h.addr, "POST /form HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"+
			"GET /second HTTP/1.0\r\n\r\n")
		if fmt.Sprint(statuses(res)) != "[200 200]" {
			t.Errorf("statuses %v, want [200 200]", statuses(res))
		}
	})
	t.Run("duplicate equal CL is one request", func(t *testing.T) {
		h := newHostileFarm(t, SessionOptions{Strict: true}, nil)
		res := exchange(t, h.addr, "POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
		if got := h.backendSaw(); len(res) != 1 || res[0].StatusCode != 200 || len(got) != 1 || got[0].body != 3 {
			t.Errorf("statuses %v, backend saw %+v", statuses(res), got)
		}
	})
	t.Run("plain chunked upload still works", func(t *testing.T) {
		h := newHostileFarm(t, SessionOptions{Strict: true}, nil)
		res := exchange(t, h.addr, "POST /form HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
		if got := h.backendSaw(); len(res) != 1 || res[0].StatusCode != 200 || len(got) != 1 || got[0].body != 3 {
			t.Errorf("statuses %v, backend saw %+v", statuses(res), got)
		}
	})
}

func TestHeaderFloodIs431(t *testing.T) {
	h := newHostileFarm(t, SessionOptions{Strict: true}, nil)
	var b strings.Builder
	b.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
	for i := range 6000 { // ~100 kB of small headers, beyond the 64 kB limit
		fmt.Fprintf(&b, "X-Flood-%d: %d\r\n", i, i)
	}
	b.WriteString("\r\n")
	res := exchange(t, h.addr, b.String())
	if len(res) != 1 || res[0].StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("statuses %v, want [431]", statuses(res))
	}
	if got := h.backendSaw(); len(got) != 0 {
		t.Errorf("backend saw %d requests", len(got))
	}
}

func TestBodyOverLimitIs413(t *testing.T) {
	chunked := func(n int) string {
		var b strings.Builder
		for n > 0 {
			c := min(n, 300)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", c, strings.Repeat("x", c))
			n -= c
		}
		return b.String() + "0\r\n\r\n"
	}
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"Content-Length over", fmt.Sprintf("Content-Length: %d\r\n\r\n%s", maxBody+1, strings.Repeat("x", maxBody+1)), 413},
		{"Content-Length huge, body never sent", "Content-Length: 10000000000\r\n\r\n", 413},
		{"Content-Length at the limit", fmt.Sprintf("Content-Length: %d\r\n\r\n%s", maxBody, strings.Repeat("x", maxBody)), 200},
		{"chunked over", "Transfer-Encoding: chunked\r\n\r\n" + chunked(maxBody+1), 413},
		{"chunked far over", "Transfer-Encoding: chunked\r\n\r\n" + chunked(20*maxBody), 413},
		{"chunked at the limit", "Transfer-Encoding: chunked\r\n\r\n" + chunked(maxBody), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostileFarm(t, SessionOptions{Strict: true}, nil)
			res := exchange(t, h.addr, "POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"+tc.req)
			if len(res) != 1 || res[0].StatusCode != tc.status {
				t.Errorf("statuses %v, want [%d]", statuses(res), tc.status)
			}
			for _, r := range h.backendSaw() {
				if r.body > maxBody || (tc.status == 413 && r.bodyErr == nil) {
					t.Errorf("backend read %d bytes (err %v) of a body over the limit", r.body, r.bodyErr)
				}
			}
		})
	}
}

// TestFailedRenewalLogsNoID: the one log line on the session path that names
// a session uses its short hash.
func TestFailedRenewalLogsNoID(t *testing.T) {
	h := newHostileFarm(t, SessionOptions{Strict: true, CookieLifetime: time.Hour, RenewAfter: time.Minute,
		Renewals: mustMarker(t)}, &idLog{known: map[string]sessionstore.Verdict{liveID: sessionstore.Verified},
		touchFn: func(string) error { return sessionstore.ErrStoreDown }})
	res := exchange(t, h.addr, "GET / HTTP/1.1\r\nHost: x\r\nCookie: PHPSESSID="+liveID+"\r\nConnection: close\r\n\r\n")
	if len(res) != 1 || res[0].StatusCode != 200 {
		t.Fatalf("statuses %v", statuses(res))
	}
	if c := res[0].Header.Values("Set-Cookie"); len(c) != 0 {
		t.Errorf("cookie renewed although the store touch failed: %q", c)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "touch failed") || !strings.Contains(logs, sessionstore.ShortID(liveID)) {
		t.Errorf("failed renewal not logged with the short id:\n%s", logs)
	}
	if strings.Contains(logs, liveID) {
		t.Errorf("a log line holds the full session id:\n%s", logs)
	}
}

func mustMarker(t *testing.T) *cookie.Marker {
	t.Helper()
	m, err := cookie.NewMarker("SGRENEW", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestH2CUpgradeIsNotTunnelled: a backend that speaks h2c would turn an
// Upgrade: h2c into a raw HTTP/2 connection whose later requests never pass
// the session check (h2c smuggling). The proxy forwards such a request as a
// plain one.
func TestH2CUpgradeIsNotTunnelled(t *testing.T) {
	upgrades := make(chan string, 4)
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		upgrades <- r.Header.Get("Upgrade")
		if r.Header.Get("Upgrade") == "" {
			io.WriteString(w, "plain")
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
		brw.Flush()
	})
	f := newFarm(t, []string{be.URL}, nil)
	for _, up := range []string{"h2c", "H2C", "websocket, h2c"} {
		res := exchange(t, f.front.Listener.Addr().String(), "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
			"Upgrade: "+up+"\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: close\r\n\r\n")
		if got := <-upgrades; got != "" || len(res) != 1 || res[0].StatusCode != 200 {
			t.Errorf("Upgrade: %s: backend got Upgrade %q, client got %v", up, got, statuses(res))
		}
	}
}

// rawBackend accepts connections and records the bytes of each request up
// to the end of a chunked body, answering each with a small 200.
func rawBackend(t *testing.T) (url string, saw func() []string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reqs []string
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				var buf []byte
				b := make([]byte, 4096)
				for !bytes.Contains(buf, []byte("\r\n0\r\n")) || !bytes.HasSuffix(buf, []byte("\r\n\r\n")) {
					n, err := c.Read(b)
					buf = append(buf, b[:n]...)
					if err != nil {
						break
					}
				}
				mu.Lock()
				reqs = append(reqs, string(buf))
				mu.Unlock()
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			})
		}
	})
	return "http://" + l.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), reqs...)
	}
}

// TestRequestTrailersAreNotForwarded: fields a client sends after a chunked
// body never reach the backend, neither as trailers nor merged into the
// headers (see TestRequestTrailersNeverReachPHP in cmd/sessiongate for what
// PHP made of them).
func TestRequestTrailersAreNotForwarded(t *testing.T) {
	be, saw := rawBackend(t)
	f := newFarm(t, []string{be}, func(o *Options) {
		o.Session = &SessionOptions{Store: &idLog{}, Cookie: "PHPSESSID", Strict: true}
	})
	res := exchange(t, f.front.Listener.Addr().String(), "POST /form HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"+
		"Trailer: Cookie, X-Real-IP\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nCookie: PHPSESSID="+otherID+
		"\r\nX-Real-IP: 6.6.6.6\r\nX-Undeclared: 1\r\n\r\n")
	if fmt.Sprint(statuses(res)) != "[200]" {
		t.Fatalf("statuses %v", statuses(res))
	}
	got := saw()
	if len(got) != 1 {
		t.Fatalf("backend saw %d requests", len(got))
	}
	for _, bad := range []string{"PHPSESSID", "6.6.6.6", "X-Undeclared", "Trailer:"} {
		if strings.Contains(got[0], bad) {
			t.Errorf("backend got %q in\n%s", bad, got[0])
		}
	}
	if !strings.HasSuffix(got[0], "\r\n3\r\nabc\r\n0\r\n\r\n") {
		t.Errorf("backend got\n%q\nwant the body and no trailer", got[0])
	}
}

// TestSessionCookieNeverOnSharedCacheableResponse: a shared cache that
// stored a page carrying a session cookie would hand that session to every
// later visitor. Whenever a response sets the session cookie (the renewal,
// or PHP's own), it is made private: public and s-maxage go, max-age stays.
func TestSessionCookieNeverOnSharedCacheableResponse(t *testing.T) {
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		for _, v := range r.URL.Query()["cc"] {
			w.Header().Add("Cache-Control", v)
		}
		if v := r.URL.Query().Get("cdn"); v != "" {
			w.Header().Set("CDN-Cache-Control", v)
			w.Header().Set("Surrogate-Control", v)
		}
		if r.URL.Query().Get("php") != "" { // PHP starts a session (session.cache_limiter=public)
			w.Header().Add("Set-Cookie", "PHPSESSID="+otherID+"; path=/")
		}
		io.WriteString(w, "page")
	})
	f := newFarm(t, []string{be.URL}, func(o *Options) {
		o.Session = &SessionOptions{Cookie: "PHPSESSID", Strict: true, CookieLifetime: time.Hour, RenewAfter: time.Minute,
			Renewals: mustMarker(t), Store: &idLog{known: map[string]sessionstore.Verdict{liveID: sessionstore.Verified}}}
	})
	addr := f.front.Listener.Addr().String()
	for _, tc := range []struct {
		name, query, cookie string
		want                string // Cache-Control the client gets
		sets                bool   // the response sets the session cookie
	}{
		{"renewal on public max-age", "cc=public,%20max-age=86400", liveID, "max-age=86400, private", true},
		{"renewal on s-maxage", "cc=s-maxage=600&cc=max-age=60,%20must-revalidate", liveID, "max-age=60, must-revalidate, private", true},
		{"renewal on no Cache-Control", "", liveID, "private", true},
		{"renewal on no-cache", "cc=no-cache", liveID, "no-cache, private", true},
		{"renewal on private stays", "cc=private,%20max-age=60", liveID, "private, max-age=60", true},
		{"renewal on no-store stays", "cc=no-store", liveID, "no-store", true},
		{"PHP's new session on public", "php=1&cc=public,%20max-age=10800", "", "max-age=10800, private", true},
		{"no session cookie: public stays", "cc=public,%20max-age=86400", "", "public, max-age=86400", false},
		{"renewal on CDN-Cache-Control", "cc=private&cdn=max-age=600", liveID, "private", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cookie := ""
			if tc.cookie != "" {
				cookie = "Cookie: PHPSESSID=" + tc.cookie + "\r\n"
			}
			res := exchange(t, addr, "GET /page?"+tc.query+" HTTP/1.1\r\nHost: x\r\n"+cookie+"Connection: close\r\n\r\n")
			if len(res) != 1 || res[0].StatusCode != 200 {
				t.Fatalf("statuses %v", statuses(res))
			}
			sets := false
			for _, c := range res[0].Cookies() {
				sets = sets || c.Name == "PHPSESSID"
			}
			if got := strings.Join(res[0].Header.Values("Cache-Control"), " | "); sets != tc.sets || got != tc.want {
				t.Errorf("session cookie set %v, Cache-Control %q; want %v, %q", sets, got, tc.sets, tc.want)
			}
			for _, k := range []string{"CDN-Cache-Control", "Surrogate-Control"} {
				if v := res[0].Header.Get(k); v != "" && sets {
					t.Errorf("a response setting the session cookie has %s: %s", k, v)
				}
			}
		})
	}
}
