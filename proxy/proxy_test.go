package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/balancer"
	"github.com/sessiongate/sessiongate/proxy/upstream"
)

// recorder is an Observer that keeps what it was told.
type recorder struct {
	mu       sync.Mutex
	statuses []int
	attempts []string
	retries  []string
	sessions []string
	renewals int
}

func (r *recorder) Attempt(b string, failed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, fmt.Sprintf("%s:%v", b, failed))
}
func (r *recorder) Request(_, _ string, status int, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses = append(r.statuses, status)
}
func (r *recorder) Retry(b string) { r.mu.Lock(); r.retries = append(r.retries, b); r.mu.Unlock() }
func (r *recorder) Session(o string) {
	r.mu.Lock()
	r.sessions = append(r.sessions, o)
	r.mu.Unlock()
}
func (r *recorder) Renewal() { r.mu.Lock(); r.renewals++; r.mu.Unlock() }
func (r *recorder) Replay()  {}

func (r *recorder) lastStatus() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.statuses) == 0 {
		return 0
	}
	return r.statuses[len(r.statuses)-1]
}

type farm struct {
	pool  *balancer.Pool
	proxy *Proxy
	front *front
	obs   *recorder
}

// front is a proxy served on loopback the way sessiongate serves it: by
// NewServer, so plain HTTP goes through h1.
type front struct {
	URL      string
	Listener net.Listener
}

func serveFront(t testing.TB, h http.Handler, o ServerOptions) *front {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(h, o)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		// Close drops connections; Shutdown then waits for their handlers,
		// as httptest.Server.Close does.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("front: handlers still running 10s after Close: %v", err)
		}
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("front: Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return &front{URL: "http://" + ln.Addr().String(), Listener: ln}
}

// newFarm puts a Proxy (round robin over urls, in order) behind its
// server. mod may adjust the options before the proxy is built.
func newFarm(t testing.TB, urls []string, mod func(*Options)) *farm {
	t.Helper()
	var bs []*balancer.Backend
	for i, u := range urls {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, balancer.NewBackend(fmt.Sprintf("b%d", i), pu, 1))
	}
	pool, err := balancer.NewPool("round_robin", bs)
	if err != nil {
		t.Fatal(err)
	}
	tr := upstream.NewLean(upstream.TransportOptions{DialTimeout: time.Second, ResponseTimeout: 5 * time.Second, MaxIdleConns: 8})
	t.Cleanup(tr.CloseIdleConnections)
	f := &farm{pool: pool, obs: &recorder{}}
	o := Options{Pool: pool, Transport: tr, Retries: 2, Observer: f.obs}
	if mod != nil {
		mod(&o)
	}
	f.proxy = New(o)
	f.front = serveFront(t, f.proxy, ServerOptions{})
	return f
}

// deadURL is a loopback address nobody listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func backend(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func get(t *testing.T, u string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestRetries(t *testing.T) {
	var posts atomic.Int32
	// hangup reads the request, then closes the connection without
	// answering: the request may have had effects.
	hangup := backend(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		posts.Add(1)
		c, _, _ := http.NewResponseController(w).Hijack()
		c.Close()
	})
	good := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		io.WriteString(w, "good")
	})

	for _, tc := range []struct {
		name    string
		first   string // the backend round robin tries first
		method  string
		body    string
		status  int
		posts   int32
		retries int
	}{
		{"dead backend, GET", deadURL(t), http.MethodGet, "", 200, 0, 1},
		{"dead backend, POST never sent", deadURL(t), http.MethodPost, "a=1", 200, 1, 1},
		{"GET after hang-up", hangup.URL, http.MethodGet, "", 200, 1, 1},
		{"POST that reached PHP is not replayed", hangup.URL, http.MethodPost, "a=1", 502, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			posts.Store(0)
			f := newFarm(t, []string{tc.first, good.URL}, nil)
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, _ := http.NewRequest(tc.method, f.front.URL+"/x", body)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tc.status {
				t.Errorf("status = %d, want %d", res.StatusCode, tc.status)
			}
			if got := posts.Load(); got != tc.posts && tc.method == http.MethodPost {
				t.Errorf("POST reached backends %d times, want %d", got, tc.posts)
			}
			if len(f.obs.retries) != tc.retries {
				t.Errorf("retries = %v, want %d", f.obs.retries, tc.retries)
			}
		})
	}
}

func TestAllBackendsDeadGives502AndNoneAvailable503(t *testing.T) {
	f := newFarm(t, []string{deadURL(t), deadURL(t)}, nil)
	if res, _ := get(t, f.front.URL, nil); res.StatusCode != http.StatusBadGateway {
		t.Errorf("status = %d, want 502", res.StatusCode)
	}
	// Health checks found every backend down, and they are: a short 503
	// page at once, not a hang and not a 502.
	for _, b := range f.pool.Backends() {
		f.pool.SetHealthy(b.Name, false)
	}
	start := time.Now()
	res, body := get(t, f.front.URL, nil)
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no backend") {
		t.Errorf("all down: status = %d body %q, want 503 with a short page", res.StatusCode, body)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("all down: answered after %v", d)
	}
	for _, b := range f.pool.Backends() {
		f.pool.SetAdmin(b.Name, balancer.AdminMaintenance)
	}
	res, body = get(t, f.front.URL, nil)
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no backend") {
		t.Errorf("all in maintenance: status = %d body %q, want 503 with a short page", res.StatusCode, body)
	}
}

// TestEveryBackendUnhealthyStillTried: when health checks have taken every
// backend out (PHP too busy to answer probes in time), requests still go to
// the enabled ones instead of failing with 503.
func TestEveryBackendUnhealthyStillTried(t *testing.T) {
	ok := backend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	f := newFarm(t, []string{deadURL(t), ok.URL}, nil)
	for _, b := range f.pool.Backends() {
		f.pool.SetHealthy(b.Name, false)
	}
	for i := range 4 {
		if res, body := get(t, f.front.URL, nil); res.StatusCode != http.StatusOK || body != "ok" {
			t.Errorf("request %d: status = %d body %q, want 200 from the live backend", i, res.StatusCode, body)
		}
	}
}

func TestBackendTimeoutIs504(t *testing.T) {
	release := make(chan struct{})
	slow := backend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	f := newFarm(t, []string{slow.URL}, func(o *Options) {
		o.Transport = upstream.NewLean(upstream.TransportOptions{DialTimeout: time.Second, ResponseTimeout: 100 * time.Millisecond, MaxIdleConns: 8})
	})
	if res, _ := get(t, f.front.URL, nil); res.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status = %d, want 504", res.StatusCode)
	}
}

func TestClientGoneIs499(t *testing.T) {
	entered := make(chan struct{}, 1)
	slow := backend(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done()
	})
	f := newFarm(t, []string{slow.URL}, nil)
	c, err := net.Dial("tcp", f.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for f.obs.lastStatus() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := f.obs.lastStatus(); got != StatusClientClosed {
		t.Errorf("status = %d, want 499", got)
	}
	f.obs.mu.Lock()
	defer f.obs.mu.Unlock()
	for _, a := range f.obs.attempts {
		if strings.HasSuffix(a, ":true") {
			t.Errorf("client hang-up counted against the backend: %v", f.obs.attempts)
		}
	}
	if b := f.pool.Backends()[0]; b.Errors() != 0 {
		t.Errorf("backend errors = %d after a client hang-up, want 0", b.Errors())
	}
}

func TestForwardedHeaders(t *testing.T) {
	seen := make(chan http.Header, 1)
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		seen <- h
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Backend", "yes")
	})
	hdr := map[string]string{
		"X-Forwarded-For":   "6.6.6.6",
		"X-Forwarded-Proto": "https",
		"X-Forwarded-Host":  "evil.example",
		"X-Real-IP":         "6.6.6.6",
		"Forwarded":         "for=6.6.6.6",
		"Connection":        "keep-alive, X-Secret, X-Forwarded-For",
		"X-Secret":          "hop",
		"Proxy-Connection":  "keep-alive",
	}

	t.Run("untrusted client cannot spoof", func(t *testing.T) {
		f := newFarm(t, []string{be.URL}, nil)
		res, _ := get(t, f.front.URL, hdr)
		h := <-seen
		if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q, want 127.0.0.1", got)
		}
		if got := h.Get("X-Forwarded-Proto"); got != "http" {
			t.Errorf("X-Forwarded-Proto = %q, want http", got)
		}
		if got, want := h.Get("X-Forwarded-Host"), f.front.Listener.Addr().String(); got != want {
			t.Errorf("X-Forwarded-Host = %q, want %q", got, want)
		}
		for _, k := range []string{"X-Real-Ip", "Forwarded", "X-Secret", "Proxy-Connection"} {
			if v := h.Get(k); v != "" {
				t.Errorf("%s = %q reached the backend", k, v)
			}
		}
		if h.Get("Host") != f.front.Listener.Addr().String() {
			t.Errorf("Host = %q, want the client's", h.Get("Host"))
		}
		if res.Header.Get("Keep-Alive") != "" || res.Header.Get("X-Backend") != "yes" {
			t.Errorf("response headers = %v", res.Header)
		}
	})

	t.Run("trusted proxy is believed", func(t *testing.T) {
		f := newFarm(t, []string{be.URL}, func(o *Options) {
			o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		})
		get(t, f.front.URL, map[string]string{"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
		h := <-seen
		if got := h.Get("X-Forwarded-For"); got != "203.0.113.9, 127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q", got)
		}
		if got := h.Get("X-Forwarded-Proto"); got != "https" {
			t.Errorf("X-Forwarded-Proto = %q", got)
		}
	})
}

// pattern is an endless deterministic body source.
type pattern struct{ n, limit int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.n >= p.limit {
		return 0, io.EOF
	}
	if rem := p.limit - p.n; int64(len(b)) > rem {
		b = b[:rem]
	}
	for i := range b {
		b[i] = byte(p.n + int64(i))
	}
	p.n += int64(len(b))
	return len(b), nil
}

// TestBodiesStream sends a body far larger than the memory it may cost
// both ways and checks, through the allocation counter, that neither was
// held whole.
func TestBodiesStream(t *testing.T) {
	const size = 128 << 20
	const budget = 24 << 20
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, n)
			return
		}
		io.Copy(w, &pattern{limit: size})
	})
	f := newFarm(t, []string{be.URL}, nil)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := http.Post(f.front.URL, "application/octet-stream", &pattern{limit: size})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != fmt.Sprint(size) {
		t.Fatalf("backend received %s bytes, want %d", b, size)
	}
	res, err = http.Get(f.front.URL)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if n != size {
		t.Fatalf("client received %d bytes, want %d", n, size)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > budget {
		t.Errorf("moving 2×%d MiB allocated %d MiB, budget %d MiB", size>>20, alloc>>20, budget>>20)
	}
}

func TestBodyLimitIs413(t *testing.T) {
	be := backend(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
	f := newFarm(t, []string{be.URL}, func(o *Options) { o.MaxBodyBytes = 1000 })
	res, err := http.Post(f.front.URL, "text/plain", strings.NewReader(strings.Repeat("x", 2000)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("declared length: status = %d, want 413", res.StatusCode)
	}
	// Chunked, so the limit is found while streaming.
	res, err = http.Post(f.front.URL, "text/plain", io.MultiReader(strings.NewReader(strings.Repeat("x", 2000))))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked: status = %d, want 413", res.StatusCode)
	}
}

// pathCounter is upstream.Lean, counting which of its paths the proxy
// used: RoundTripTo (the request as received) or RoundTrip (a copy, sent
// by http.Transport when Lean does not take it).
type pathCounter struct {
	*upstream.Lean
	direct, copied atomic.Int64
}

func (c *pathCounter) RoundTripTo(r *http.Request, base *url.URL) (*http.Response, error) {
	c.direct.Add(1)
	return c.Lean.RoundTripTo(r, base)
}

func (c *pathCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.copied.Add(1)
	return c.Lean.RoundTrip(r)
}

// TestBodyLimitKeepsGETsLean: with server.max_body_bytes set, a GET still
// takes the lean path. Wrapping its empty body in the limit's reader made
// it look as if it had one, and every request went through http.Transport.
func TestBodyLimitKeepsGETsLean(t *testing.T) {
	be := backend(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
	var paths *pathCounter
	f := newFarm(t, []string{be.URL}, func(o *Options) {
		o.MaxBodyBytes = 1000
		paths = &pathCounter{Lean: o.Transport.(*upstream.Lean)}
		o.Transport = paths
	})
	res, err := http.Get(f.front.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if d, c := paths.direct.Load(), paths.copied.Load(); res.StatusCode != 200 || d != 1 || c != 0 {
		t.Errorf("GET: status %d, direct %d, copied %d; want 200, 1, 0", res.StatusCode, d, c)
	}
	res, err = http.Post(f.front.URL, "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if d, c := paths.direct.Load(), paths.copied.Load(); res.StatusCode != 200 || d != 1 || c != 1 {
		t.Errorf("POST: status %d, direct %d, copied %d; want 200, 1, 1", res.StatusCode, d, c)
	}
}

func TestUpgradePassesThrough(t *testing.T) {
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want upgrade", 400)
			return
		}
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
	})
	f := newFarm(t, []string{be.URL}, nil)
	c, err := net.Dial("tcp", f.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d, want 101", res.StatusCode)
	}
	fmt.Fprintf(c, "hello\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo:hello\n" {
		t.Fatalf("tunnel gave %q, %v", line, err)
	}
}

func TestHugeHeaderIs431(t *testing.T) {
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {})
	f := newFarm(t, []string{be.URL}, nil)
	srv := serveFront(t, f.proxy, ServerOptions{ReadHeaderTimeout: time.Second, MaxHeaderBytes: 8 << 10})
	res, _ := get(t, srv.URL, map[string]string{"Cookie": "PHPSESSID=" + strings.Repeat("a", 100<<10)})
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status = %d, want 431", res.StatusCode)
	}
}

func TestStreamingResponseIsFlushed(t *testing.T) {
	next := make(chan struct{})
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-next
		io.WriteString(w, "second\n")
	})
	f := newFarm(t, []string{be.URL}, nil)
	res, err := http.Get(f.front.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(res.Body).ReadString('\n')
		got <- line
	}()
	select {
	case line := <-got:
		if line != "first\n" {
			t.Errorf("first chunk %q", line)
		}
	case <-time.After(3 * time.Second):
		t.Error("first chunk not delivered while the backend is still writing")
	}
	close(next)
}
