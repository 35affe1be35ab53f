package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore"
)

// queueStore verifies every id; its in-flight table and queues are a real
// sessionstore.Store's (which needs no memcached for them).
type queueStore struct {
	*sessionstore.Store
	killed *atomic.Bool // Check reports every id killed
}

func (s queueStore) Check(context.Context, string) sessionstore.Result {
	if s.killed.Load() {
		return sessionstore.Result{Verdict: sessionstore.Killed}
	}
	return sessionstore.Result{Verdict: sessionstore.Verified}
}
func (queueStore) Touch(context.Context, string) error { return nil }

// queueObs records the queue's reports.
type queueObs struct {
	mu       sync.Mutex
	waits    int
	rejected []string
}

func (o *queueObs) QueueWait(time.Duration) { o.mu.Lock(); o.waits++; o.mu.Unlock() }
func (o *queueObs) QueueRejected(reason string) {
	o.mu.Lock()
	o.rejected = append(o.rejected, reason)
	o.mu.Unlock()
}

// gatedBackend answers each request once its gate is opened, recording the
// order in which requests reached it (by their "n" query parameter).
type gatedBackend struct {
	mu      sync.Mutex
	arrived []string
	gates   map[string]chan struct{}
}

func (g *gatedBackend) gate(n string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gates[n] == nil {
		g.gates[n] = make(chan struct{})
	}
	return g.gates[n]
}

func (g *gatedBackend) order() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.arrived...)
}

func (g *gatedBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := r.URL.Query().Get("n")
	if r.Header.Get("Upgrade") == "echo" {
		echoTunnel(w)
		return
	}
	g.mu.Lock()
	g.arrived = append(g.arrived, n)
	g.mu.Unlock()
	if r.URL.Path == "/events" {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		io.WriteString(w, "data: hi\n\n")
		w.(http.Flusher).Flush()
	}
	if r.URL.Path == "/cookie" {
		io.WriteString(w, r.Header.Get("Cookie"))
		return
	}
	if r.URL.Query().Get("gated") != "" {
		select {
		case <-g.gate(n):
		case <-r.Context().Done():
		}
	}
	io.WriteString(w, "ok "+n)
}

// echoTunnel switches to an "echo" protocol that answers each line with
// "echo:" and the line, until the client closes.
func echoTunnel(w http.ResponseWriter) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	brw.Flush()
	for range 100 {
		line, err := brw.ReadString('\n')
		if err != nil {
			return
		}
		brw.WriteString("echo:" + line)
		brw.Flush()
	}
}

type queueFarm struct {
	*farm
	store   *sessionstore.Store
	backend *gatedBackend
	obs     *queueObs
	killed  *atomic.Bool
}

func newQueueFarm(t *testing.T, qo QueueOptions) *queueFarm {
	t.Helper()
	st, err := sessionstore.New(sessionstore.Options{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	gb := &gatedBackend{gates: map[string]chan struct{}{}}
	srv := httptest.NewServer(gb)
	t.Cleanup(srv.Close)
	obs := &queueObs{}
	qo.Observer = obs
	var killed atomic.Bool
	f := newFarm(t, []string{srv.URL}, func(o *Options) {
		qs := queueStore{st, &killed}
		o.Session = &SessionOptions{Store: qs, Locks: qs, Cookie: "PHPSESSID", Queue: &qo}
	})
	return &queueFarm{farm: f, store: st, backend: gb, obs: obs, killed: &killed}
}

const (
	sessA = "3vdj8srh32rjq4kfeitc4hk4l5"
	sessB = "9qcm1ahb2hc5n6r4t0nbl7a3u8"
)

// get sends a request of session id (none if "") and returns its status
// and Retry-After.
func (f *queueFarm) get(ctx context.Context, t *testing.T, id, target string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.front.URL+target, nil)
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	if id != "" {
		req.Header.Set("Cookie", "PHPSESSID="+id)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer res.Body.Close()
	io.Copy(io.Discard, res.Body)
	return res.StatusCode, res.Header.Get("Retry-After")
}

func (f *queueFarm) waiters() int64 { _, n := f.store.Queued(); return n }

// arrivedCount is how many requests reached the backend.
func (f *queueFarm) arrivedCount() int { return len(f.backend.order()) }

var defaultQueue = QueueOptions{MaxInFlight: 1, MaxQueue: 32, MaxWaiters: 1000, Timeout: 10 * time.Second}

// TestQueueFIFO: a session's requests reach the backend one at a time, in
// the order they arrived, each when the previous response is complete.
func TestQueueFIFO(t *testing.T) {
	f := newQueueFarm(t, defaultQueue)
	const n = 6
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _ = f.get(context.Background(), t, sessA, "/p?gated=1&n="+string(rune('a'+i)))
		}()
		// Arrival order is the order they entered: wait until this one is
		// at the backend (the first) or queued.
		waitFor(t, "request queued", func() bool { return f.arrivedCount()+int(f.waiters()) == i+1 })
	}
	for i := range n {
		name := string(rune('a' + i))
		waitFor(t, "request "+name+" at the backend", func() bool { return f.arrivedCount() == i+1 })
		if got := f.arrivedCount(); got != i+1 {
			t.Fatalf("%d requests at the backend with %d responses pending, want only %d", got, n-i, i+1)
		}
		close(f.backend.gate(name))
	}
	wg.Wait()
	want := "abcdef"
	got := ""
	for _, s := range f.backend.order() {
		got += s
	}
	if got != want {
		t.Errorf("backend saw %q, want arrival order %q", got, want)
	}
	for i, s := range statuses {
		if s != 200 {
			t.Errorf("request %d: status %d", i, s)
		}
	}
	if s, w := f.store.Queued(); s != 0 || w != 0 {
		t.Errorf("queue not empty after the burst: %d sessions, %d waiters", s, w)
	}
}

// holdFirst sends session id's request "first" and waits until it is at the
// backend; closing the returned gate ends it.
func (f *queueFarm) holdFirst(t *testing.T, id string) (done chan int) {
	done = make(chan int, 1)
	before := f.arrivedCount()
	go func() { s, _ := f.get(context.Background(), t, id, "/p?gated=1&n=first"+id); done <- s }()
	waitFor(t, "first request at the backend", func() bool { return f.arrivedCount() == before+1 })
	return done
}

// TestQueueTimeout: a waiter past Timeout gets 503 with Retry-After and
// leaves the queue; the request it waited behind is unaffected.
func TestQueueTimeout(t *testing.T) {
	qo := defaultQueue
	qo.Timeout = 50 * time.Millisecond
	f := newQueueFarm(t, qo)
	done := f.holdFirst(t, sessA)
	status, retry := f.get(context.Background(), t, sessA, "/p?n=second")
	if status != http.StatusServiceUnavailable || retry == "" {
		t.Errorf("waiter past the timeout: status %d Retry-After %q, want 503 with Retry-After", status, retry)
	}
	if f.waiters() != 0 {
		t.Errorf("%d waiters left after the timeout", f.waiters())
	}
	close(f.backend.gate("first" + sessA))
	if s := <-done; s != 200 {
		t.Errorf("first request: %d", s)
	}
	if got := f.obs.rejected; len(got) != 1 || got[0] != "timeout" {
		t.Errorf("rejections reported: %v, want [timeout]", got)
	}
	// The slot was released: the next request goes straight through.
	if s, _ := f.get(context.Background(), t, sessA, "/p?n=third"); s != 200 {
		t.Errorf("request after the timeout: %d", s)
	}
}

// TestQueueBounds: past MaxQueue waiters of one session, or MaxWaiters of
// all, requests get 503 at once; other sessions and requests without a
// session are served meanwhile.
func TestQueueBounds(t *testing.T) {
	qo := defaultQueue
	qo.MaxQueue = 2
	qo.MaxWaiters = 3
	f := newQueueFarm(t, qo)
	doneA := f.holdFirst(t, sessA)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); f.get(ctx, t, sessA, "/p?n=q"+string(rune('0'+i))) }()
	}
	waitFor(t, "two waiters", func() bool { return f.waiters() == 2 })
	if s, retry := f.get(context.Background(), t, sessA, "/p?n=over"); s != 503 || retry == "" {
		t.Errorf("third waiter of a session (max_queue 2): %d %q, want 503 with Retry-After", s, retry)
	}
	// Another session is served, and may queue one waiter (3 in all)...
	doneB := f.holdFirst(t, sessB)
	wg.Add(1)
	go func() { defer wg.Done(); f.get(ctx, t, sessB, "/p?n=qb") }()
	waitFor(t, "three waiters", func() bool { return f.waiters() == 3 })
	// ...but not a second one: max_waiters.
	if s, _ := f.get(context.Background(), t, sessB, "/p?n=overb"); s != 503 {
		t.Errorf("waiter past max_waiters: %d, want 503", s)
	}
	// No session: never queued.
	if s, _ := f.get(context.Background(), t, "", "/p?n=anon"); s != 200 {
		t.Errorf("request without a session while the queues are full: %d", s)
	}
	cancel()
	wg.Wait()
	close(f.backend.gate("first" + sessA))
	close(f.backend.gate("first" + sessB))
	<-doneA
	<-doneB
	if got := f.obs.rejected; len(got) != 2 || got[0] != "full" || got[1] != "full" {
		t.Errorf("rejections reported: %v, want [full full]", got)
	}
}

// TestQueueClientLeaves: a waiter whose client hangs up is dequeued and
// never reaches the backend; the next one takes its place.
func TestQueueClientLeaves(t *testing.T) {
	f := newQueueFarm(t, defaultQueue)
	done := f.holdFirst(t, sessA)
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan struct{})
	go func() { defer close(left); f.get(ctx, t, sessA, "/p?n=leaver") }()
	waitFor(t, "the waiter queued", func() bool { return f.waiters() == 1 })
	cancel()
	<-left
	waitFor(t, "the waiter dequeued", func() bool { return f.waiters() == 0 })
	next := make(chan int, 1)
	go func() { s, _ := f.get(context.Background(), t, sessA, "/p?n=next"); next <- s }()
	waitFor(t, "the next waiter queued", func() bool { return f.waiters() == 1 })
	close(f.backend.gate("first" + sessA))
	<-done
	if s := <-next; s != 200 {
		t.Errorf("next request: %d", s)
	}
	for _, n := range f.backend.order() {
		if n == "leaver" {
			t.Errorf("a request whose client left while queued reached the backend: %v", f.backend.order())
		}
	}
}

// TestQueueNeverQueued: bypass paths and requests without a session go
// straight on while the session's slot is taken; a server-sent events
// response releases its slot when it starts.
func TestQueueNeverQueued(t *testing.T) {
	qo := defaultQueue
	qo.BypassPaths = []string{"/static/", "*.css"}
	f := newQueueFarm(t, qo)
	done := f.holdFirst(t, sessA)
	for _, target := range []string{"/static/app.js?n=s1", "/theme/site.css?n=s2"} {
		if s, _ := f.get(context.Background(), t, sessA, target); s != 200 {
			t.Errorf("%s (bypass) while the slot is taken: %d", target, s)
		}
	}
	if s, _ := f.get(context.Background(), t, "", "/p?n=anon"); s != 200 {
		t.Errorf("request without a session: %d", s)
	}
	close(f.backend.gate("first" + sessA))
	<-done

	// An event stream holds the connection, not the slot.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.front.URL+"/events?gated=1&n=ev", nil)
	req.Header.Set("Cookie", "PHPSESSID="+sessA)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if s, _ := f.get(context.Background(), t, sessA, "/p?n=during"); s != 200 {
		t.Errorf("request while an event stream of the session is open: %d", s)
	}
	close(f.backend.gate("ev"))
}

func TestMatchPaths(t *testing.T) {
	pats := []string{"/static/", "*.css", "/img/*.png"}
	for p, want := range map[string]bool{
		"/static/a.js": true, "/a/b/site.css": true, "/img/x.png": true,
		"/img/sub/x.png": false, "/index.php": false, "/staticx": false,
	} {
		if got := matchPaths(pats, p); got != want {
			t.Errorf("matchPaths(%q) = %v, want %v", p, got, want)
		}
	}
}

// TestQueueUpgradeReleasesAtSwitch: a session's WebSocket-style upgrade
// takes a slot until the switch only: with its tunnel open, the session's
// next requests are not queued behind it.
func TestQueueUpgradeReleasesAtSwitch(t *testing.T) {
	qo := defaultQueue
	qo.Timeout = 2 * time.Second // a blocked request would get 503, not hang
	f := newQueueFarm(t, qo)
	c, err := net.Dial("tcp", f.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nCookie: PHPSESSID=%s\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", sessA)
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", res, err)
	}
	for i := range 3 {
		if s, _ := f.get(context.Background(), t, sessA, fmt.Sprintf("/p?n=%d", i)); s != 200 {
			t.Errorf("request %d of the session with its tunnel open: %d, want 200", i, s)
		}
	}
	fmt.Fprintf(c, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo:hello\n" {
		t.Fatalf("tunnel after the requests gave %q, %v", line, err)
	}
}

// TestQueueKilledWhileWaiting: a session killed while its request waited
// never reaches PHP with that request: the id is checked again after the
// wait and stripped.
func TestQueueKilledWhileWaiting(t *testing.T) {
	f := newQueueFarm(t, defaultQueue)
	done := f.holdFirst(t, sessA)
	got := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, f.front.URL+"/cookie", nil)
		req.Header.Set("Cookie", "PHPSESSID="+sessA+"; theme=dark")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- err.Error()
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		got <- string(b)
	}()
	waitFor(t, "the request queued", func() bool { return f.waiters() == 1 })
	f.killed.Store(true) // killed through some instance
	close(f.backend.gate("first" + sessA))
	<-done
	if c := <-got; c != "theme=dark" {
		t.Errorf("PHP got Cookie %q from a request of a session killed while it waited, want only theme=dark", c)
	}
}
