package main

// Hostile clients against the real wiring (serve() with a real memcached pool
// from memtest): forged session cookies must never reach memcached, the admin
// API must refuse missing tokens and cross-origin requests and never log a
// token or a full session id, slowloris connections are cut at
// read_header_timeout without starving real users, max_connections answers
// the excess at once, and serve leaves no goroutine behind.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore"
	"github.com/sessiongate/sessiongate/sessionstore/memtest"
)

// logSink collects what serve logs.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// capturedGate is sessiongate run by serve() with its logs, at debug level,
// kept in logs.
type capturedGate struct {
	addrs addrs
	logs  *logSink
	done  chan error
	stop  func() // cancels serve and waits for it to return; idempotent
}

func startCaptured(t *testing.T, yaml string) *capturedGate {
	t.Helper()
	g := &capturedGate{logs: &logSink{}}
	r := startLogged(t, writeConfig(t, yaml), g.logs)
	g.addrs, g.done = r.addrs, r.done
	var once sync.Once
	g.stop = func() {
		once.Do(func() {
			r.cancel()
			select {
			case err := <-r.done:
				r.done <- err // for startLogged's cleanup
				if err != nil {
					t.Errorf("serve returned %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("serve did not return within 10s")
			}
		})
	}
	t.Cleanup(g.stop)
	return g
}

// waitGoroutines fails t unless the goroutine count falls back to within a
// small margin of baseline within 5 seconds.
func waitGoroutines(t *testing.T, baseline int) {
	t.Helper()
	const margin = 3
	deadline := time.Now().Add(5 * time.Second)
	n := runtime.NumGoroutine()
	for n > baseline+margin && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // goroutines end asynchronously after their connections close
		n = runtime.NumGoroutine()
	}
	if n > baseline+margin {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines 5s after serve returned, baseline %d:\n%s", n, baseline, buf[:runtime.Stack(buf, true)])
	}
}

// recordingBackend is a PHP stand-in that records the Cookie header of every
// request except health probes.
type recordingBackend struct {
	*httptest.Server
	mu      sync.Mutex
	cookies map[string][]string // path -> Cookie headers, in order
}

func newRecordingBackend(t *testing.T) *recordingBackend {
	b := &recordingBackend{cookies: map[string][]string{}}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			b.mu.Lock()
			b.cookies[r.URL.Path] = append(b.cookies[r.URL.Path], strings.Join(r.Header["Cookie"], "\n"))
			b.mu.Unlock()
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *recordingBackend) saw(path string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.cookies[path])
}

const hostileToken = "hostile-admin-token-7f3a9c"

// sessionGateYAML is a strict session config over mc with renewal on.
func sessionGateYAML(be string, mc []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "access_log: off\nlisten: 127.0.0.1:0\nserver:\n  read_header_timeout: 2s\n  shutdown_grace: 5s\n"+
		"admin:\n  listen: 127.0.0.1:0\n  token: %s\nhealth:\n  path: /health\n  interval: 100ms\n"+
		"backends:\n  - name: lamp01\n    url: %s\n"+
		"session:\n  handler: memcache\n  strict: true\n  cookie_lifetime: 1h\n  renew_after: 1m\n  verify_ttl: 10s\n"+
		"memcached:\n  timeout: 100ms\n  servers:\n", hostileToken, be)
	for _, a := range mc {
		fmt.Fprintf(&b, "    - %s\n", a)
	}
	return b.String()
}

// rawRequest sends raw on a new connection and returns the response, or nil
// if the server closed the connection without one.
func rawRequest(t *testing.T, addr, raw string) *http.Response {
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
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// mcStats returns the counters of memcached's `stats`.
func mcStats(t *testing.T, addr string) map[string]int64 {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	io.WriteString(c, "stats\r\n")
	out := map[string]int64{}
	r := bufio.NewReader(c)
	for range 500 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stats on %s: %v", addr, err)
		}
		f := strings.Fields(line)
		if len(f) == 1 && f[0] == "END" {
			return out
		}
		if len(f) == 3 && f[0] == "STAT" {
			if n, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				out[f[1]] = n
			}
		}
	}
	t.Fatalf("stats on %s: no END", addr)
	return nil
}

// writeCounters are the stats that change when anything is stored, touched,
// deleted or incremented, plus curr_items.
var writeCounters = []string{"cmd_set", "cmd_touch", "curr_items", "total_items", "delete_hits", "delete_misses",
	"incr_hits", "incr_misses", "decr_hits", "decr_misses", "cas_misses", "cas_hits"}

// mcDial connects to the memcached at addr for one short exchange (2 s);
// the test closes the connection.
func mcDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	return c
}

// mcDo sends one text-protocol command and returns the first reply line.
func mcDo(t *testing.T, addr, cmd string) string {
	t.Helper()
	c := mcDial(t, addr)
	defer c.Close()
	io.WriteString(c, cmd)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("memcached %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}

// hostileCookies are Cookie header values no session id may be taken from.
var hostileCookies = []string{
	"PHPSESSID=" + strings.Repeat("a", 300),
	"PHPSESSID=" + strings.Repeat("a", 257),
	"PHPSESSID=abcdefghijklmnopqrstuvwxyz%0d%0aflush_all",
	"PHPSESSID=abcdefghijklmnopqrstuvwxyz%0d%0aset%20x%200%200%201",
	"PHPSESSID=abcdefghijklm%00opqrstuvwxyz",
	"PHPSESSID=abcdefghijklm opqrstuvwxyz",
	"PHPSESSID=abcdefghijklm+opqrstuvwxyz",
	"PHPSESSID=abcdefghijklm\topqrstuvwxyz",
	`PHPSESSID="abcdefghijklm"opqrstuvwxyz"`,
	"PHPSESSID=abcdefghijklm\xff\xfe\xc0opqrstuvwxyz",
	"PHPSESSID=abcdefghijklm%ff%feopqrstuvwxyz",
	"PHPSESSID=abc.def!xyzxyzxyzxyzxyzxyz",
	"PHPSESSID=abcdefghijklm\x01opqrstuvwxyz", // refused by net/http (400)
	"PHPSESSID=bad; PHPSESSID=abcdefghijklm\rPHPSESSID=x",
	strings.Repeat("PHPSESSID=bad; ", 40),
	"PHPSESSID=" + strings.Repeat("a", 100<<10), // 431
}

// TestHostileCookiesNeverReachMemcached sends forged session cookies over raw
// TCP through the real binary wiring: none is stored, looked up, or shown to
// PHP, nothing crashes, and once serve returns its goroutines are gone.
func TestHostileCookiesNeverReachMemcached(t *testing.T) {
	mc := memtest.Start(t, 2)
	be := newRecordingBackend(t)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	baseline := runtime.NumGoroutine()
	g := startCaptured(t, sessionGateYAML(be.URL, mc.Addrs()))

	before := make([]map[string]int64, len(mc.Addrs()))
	for i, a := range mc.Addrs() {
		before[i] = mcStats(t, a)
	}
	for i, cookie := range hostileCookies {
		res := rawRequest(t, g.addrs.front, "GET /hostile HTTP/1.1\r\nHost: x\r\nCookie: "+cookie+"\r\nConnection: close\r\n\r\n")
		if res == nil || (res.StatusCode != 200 && res.StatusCode != 400 && res.StatusCode != 431) {
			t.Errorf("cookie %d: response %v", i, res)
		}
	}
	for _, c := range be.saw("/hostile") {
		if strings.Contains(c, "PHPSESSID") {
			t.Errorf("PHP got Cookie %.80q", c)
		}
	}
	for i, a := range mc.Addrs() {
		after := mcStats(t, a)
		for _, k := range append([]string{"cmd_get"}, writeCounters...) {
			if after[k] != before[i][k] {
				t.Errorf("node %d: %s %d -> %d after forged cookies", i, k, before[i][k], after[k])
			}
		}
	}

	// Control: a well-formed unknown id is looked up (cmd_get moves), still
	// stores nothing, and is stripped.
	if res := rawRequest(t, g.addrs.front, "GET /control HTTP/1.1\r\nHost: x\r\nCookie: PHPSESSID=zzzzzzzzzzzzzzzzzzzzzzzzzz\r\nConnection: close\r\n\r\n"); res == nil || res.StatusCode != 200 {
		t.Fatalf("control request: %v", res)
	}
	for i, a := range mc.Addrs() {
		after := mcStats(t, a)
		if after["cmd_get"] <= before[i]["cmd_get"] {
			t.Errorf("node %d: a well-formed id was not looked up (cmd_get %d)", i, after["cmd_get"])
		}
		for _, k := range writeCounters {
			if after[k] != before[i][k] {
				t.Errorf("node %d: %s %d -> %d after an unknown id", i, k, before[i][k], after[k])
			}
		}
	}
	if got := be.saw("/control"); len(got) != 1 || got[0] != "" {
		t.Errorf("PHP got %q for an unknown id, want no cookie", got)
	}

	// Still serving, nothing panicked.
	res, err := client.Get("http://" + g.addrs.front + "/after")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("after the hostile requests: %v %v", res, err)
	}
	res.Body.Close()
	if s := g.logs.String(); strings.Contains(s, "panic") {
		t.Errorf("panic logged:\n%s", s)
	}

	g.stop()
	client.CloseIdleConnections()
	waitGoroutines(t, baseline)
}

// TestAdminAPIRefusesAndLogsNoSecrets: missing or wrong tokens get 401,
// cross-origin requests (a forged dashboard button) 403 even with the token,
// and neither the token nor a full session id ever reaches the log, also not
// after an inspect, a kill and a failed renewal.
func TestAdminAPIRefusesAndLogsNoSecrets(t *testing.T) {
	mc := memtest.Start(t, 2)
	be := newRecordingBackend(t)
	g := startCaptured(t, sessionGateYAML(be.URL, mc.Addrs()))
	const id = "k7dj8srh32rjq4kfeitc4hk4l5"
	for _, a := range mc.Addrs() {
		if r := mcDo(t, a, "set "+id+" 0 600 10\r\nvisit|i:1;\r\n"); r != "STORED" {
			t.Fatalf("seeding %s: %q", a, r)
		}
	}
	admin := "http://" + g.addrs.admin
	call := func(method, path string, hdr ...string) int {
		t.Helper()
		req, _ := http.NewRequest(method, admin+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	bearer := "Bearer " + hostileToken
	wrong := []string{"Bearer " + hostileToken + "x", "Bearer " + strings.ToUpper(hostileToken), "Basic " + hostileToken,
		"Bearer", hostileToken, "Bearer  " + hostileToken[:len(hostileToken)-1]}
	for _, route := range [][2]string{{"GET", "/api/sessions/" + id}, {"DELETE", "/api/sessions/" + id},
		{"POST", "/api/backends/lamp01/drain"}, {"POST", "/api/reload"}, {"GET", "/debug/pprof/heap"},
		{"GET", "/debug/pprof/profile?seconds=1"}} {
		if got := call(route[0], route[1]); got != http.StatusUnauthorized {
			t.Errorf("%s %s without a token: %d, want 401", route[0], route[1], got)
		}
		for _, w := range wrong {
			if got := call(route[0], route[1], "Authorization", w); got != http.StatusUnauthorized {
				t.Errorf("%s %s with %q: %d, want 401", route[0], route[1], w, got)
			}
		}
		sep := "?"
		if strings.Contains(route[1], "?") {
			sep = "&"
		}
		if got := call(route[0], route[1]+sep+"token="+hostileToken); got != http.StatusUnauthorized {
			t.Errorf("%s %s with the token in the query: %d, want 401", route[0], route[1], got)
		}
	}

	// A page elsewhere making the dashboard's requests with a stolen token is
	// refused, and changes nothing.
	for _, origin := range []string{"http://evil.example", "null", "http://" + g.addrs.admin + ".evil.example"} {
		if got := call("POST", "/api/backends/lamp01/drain", "Authorization", bearer, "Origin", origin); got != http.StatusForbidden {
			t.Errorf("drain from Origin %s: %d, want 403", origin, got)
		}
		if got := call("DELETE", "/api/sessions/"+id, "Authorization", bearer, "Origin", origin); got != http.StatusForbidden {
			t.Errorf("kill from Origin %s: %d, want 403", origin, got)
		}
	}
	if st := backendState(t, admin, "lamp01"); st != "up" {
		t.Errorf("after forged drains lamp01 is %q", st)
	}
	for _, a := range mc.Addrs() {
		if r := mcDo(t, a, "mg "+id+"\r\n"); r != "HD" {
			t.Errorf("after forged kills the session on %s: %q", a, r)
		}
	}
	// The dashboard itself (same origin) works.
	if got := call("POST", "/api/backends/lamp01/maintenance", "Authorization", bearer, "Origin", admin); got != http.StatusOK {
		t.Errorf("same-origin button: %d, want 200", got)
	}
	if got := call("POST", "/api/backends/lamp01/enable", "Authorization", bearer, "Origin", admin); got != http.StatusOK {
		t.Errorf("same-origin button: %d, want 200", got)
	}

	failedRenewal(t, g, mc, id)

	if got := call("GET", "/api/sessions/"+id, "Authorization", bearer); got != http.StatusOK {
		t.Errorf("inspect: %d", got)
	}
	if got := call("DELETE", "/api/sessions/"+id, "Authorization", bearer); got != http.StatusNoContent {
		t.Errorf("kill: %d", got)
	}
	for _, a := range mc.Addrs() {
		if r := mcDo(t, a, "mg "+id+"\r\n"); r != "EN" {
			t.Errorf("after the kill the session on %s: %q", a, r)
		}
	}

	logs := g.logs.String()
	if strings.Contains(strings.ToLower(logs), "7f3a9c") { // the token's tail, also in every wrong token tried
		t.Errorf("the admin token (or a wrong one) is in the log:\n%s", logs)
	}
	if strings.Contains(logs, id) {
		t.Errorf("a full session id is in the log:\n%s", logs)
	}
	for _, want := range []string{"authentication failed", "cross-origin request refused", "session killed", "touch failed"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log has no %q line:\n%s", want, logs)
		}
	}
	if !strings.Contains(logs, sessionstore.ShortID(id)) {
		t.Errorf("log does not name the session by its short id %s:\n%s", sessionstore.ShortID(id), logs)
	}
}

// failedRenewal makes a renewal fail: the session is verified (and cached),
// then every node is paused, so the renewal's touch times out on all of them.
// A node checker probe that lands in the pause drops the cached verification
// first; then the request finds the store down instead, and it is tried again.
func failedRenewal(t *testing.T, g *capturedGate, mc *memtest.Cluster, id string) {
	t.Helper()
	req := "GET /renew HTTP/1.1\r\nHost: x\r\nCookie: PHPSESSID=" + id + "\r\nConnection: close\r\n\r\n"
	// Bounded retries: on a loaded machine the node watchers may notice the
	// pause first (a stall drops the cached verification, so the request is
	// looked up, fails open and renews nothing), which is correct but not
	// the path under test.
	const attempts = 20
	for attempt := 0; attempt < attempts && !strings.Contains(g.logs.String(), "touch failed"); attempt++ {
		// Verified and renewed: the cache now holds the verification.
		deadline := time.Now().Add(5 * time.Second)
		for {
			res := rawRequest(t, g.addrs.front, req)
			if res != nil && len(res.Header.Values("Set-Cookie")) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the session was never renewed:\n%s", g.logs.String())
			}
			time.Sleep(50 * time.Millisecond) // nodes come back up after the last pause
		}
		for i := range mc.Addrs() {
			mc.Pause(i)
		}
		res := rawRequest(t, g.addrs.front, req)
		for i := range mc.Addrs() {
			mc.Resume(i)
		}
		if res == nil || res.StatusCode != 200 {
			t.Fatalf("request during the pause: %v", res)
		}
	}
	if !strings.Contains(g.logs.String(), "touch failed") {
		t.Fatalf("no failed renewal in %d attempts:\n%s", attempts, g.logs.String())
	}
}

func backendState(t *testing.T, admin, name string) string {
	t.Helper()
	res, err := http.Get(admin + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var st struct {
		Backends []struct{ Name, State string }
	}
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	for _, b := range st.Backends {
		if b.Name == name {
			return b.State
		}
	}
	return ""
}

// plainGateYAML is a session-less config on free ports; server holds extra
// indented lines for the server: section.
func plainGateYAML(be, server string) string {
	return "access_log: off\nlisten: 127.0.0.1:0\nserver:\n  shutdown_grace: 2s\n" + server +
		"admin:\n  listen: 127.0.0.1:0\n  token: " + hostileToken + "\nbackends:\n  - name: lamp01\n    url: " + be + "\n"
}

// TestSlowlorisIsCutAtReadHeaderTimeout: 300 connections dribble a header
// byte every 200ms and never finish; real users are served meanwhile, and
// every stalled connection is closed at read_header_timeout (1s).
func TestSlowlorisIsCutAtReadHeaderTimeout(t *testing.T) {
	const stalled, users = 300, 50
	be := newRecordingBackend(t)
	baseline := runtime.NumGoroutine()
	g := startCaptured(t, plainGateYAML(be.URL, "  read_header_timeout: 1s\n"))

	conns := make([]net.Conn, 0, stalled)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	closedAfter := make([]time.Duration, stalled)
	var readers sync.WaitGroup
	for i := range stalled {
		c, err := net.DialTimeout("tcp", g.addrs.front, 2*time.Second)
		if err != nil {
			t.Fatalf("stalled connection %d: %v", i, err)
		}
		conns = append(conns, c)
		opened := time.Now()
		io.WriteString(c, "GET /stalled HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		readers.Add(1)
		go func() {
			defer readers.Done()
			c.SetReadDeadline(opened.Add(5 * time.Second))
			io.Copy(io.Discard, c) // until the server closes it (or the deadline)
			closedAfter[i] = time.Since(opened)
		}()
	}
	stopDribble := make(chan struct{})
	var dribbler sync.WaitGroup
	dribbler.Add(1)
	go func() {
		defer dribbler.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for range 25 { // at most 5s
			select {
			case <-stopDribble:
				return
			case <-tick.C:
			}
			for _, c := range conns {
				c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
				c.Write([]byte("a")) // fails once the server closed it
			}
		}
	}()

	client := &http.Client{Transport: &http.Transport{}, Timeout: 2 * time.Second}
	served, slowest := 0, time.Duration(0)
	for range users {
		start := time.Now()
		res, err := client.Get("http://" + g.addrs.front + "/real")
		if err != nil {
			t.Errorf("real user: %v", err)
			continue
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode == 200 {
			served++
		}
		slowest = max(slowest, time.Since(start))
	}
	readers.Wait()
	close(stopDribble)
	dribbler.Wait()

	first, last := slices.Min(closedAfter), slices.Max(closedAfter)
	t.Logf("%d stalled connections closed after %v..%v; %d/%d real requests served meanwhile, slowest %v",
		stalled, first.Round(time.Millisecond), last.Round(time.Millisecond), served, users, slowest.Round(time.Millisecond))
	if served != users {
		t.Errorf("%d of %d real requests served", served, users)
	}
	if first < 900*time.Millisecond || last > 3*time.Second {
		t.Errorf("stalled connections closed after %v..%v, want about 1s", first, last)
	}
	if n := len(be.saw("/stalled")); n != 0 {
		t.Errorf("backend saw %d stalled requests", n)
	}
	g.stop()
	client.CloseIdleConnections()
	waitGoroutines(t, baseline)
}

// TestMaxConnectionsAnswersExcessAtOnce: with max_connections 50, 60 idle
// connections leave 10 over the limit; each gets a 503 within a second
// instead of waiting, as does a real user; after 20 close, requests succeed.
func TestMaxConnectionsAnswersExcessAtOnce(t *testing.T) {
	const limit, open = 50, 60
	be := newRecordingBackend(t)
	baseline := runtime.NumGoroutine()
	g := startCaptured(t, plainGateYAML(be.URL, fmt.Sprintf("  read_header_timeout: 10s\n  max_connections: %d\n", limit)))

	type outcome struct {
		c     net.Conn
		first string // what the server sent first; "" if nothing within 1s
		after time.Duration
	}
	outs := make([]outcome, open)
	var wg sync.WaitGroup
	for i := range outs {
		c, err := net.DialTimeout("tcp", g.addrs.front, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		outs[i].c = c
		defer c.Close() // on an early Fatal; closed below otherwise
		dialed := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(dialed.Add(time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			outs[i].first, outs[i].after = line, time.Since(dialed)
		}()
	}
	wg.Wait()
	var rejected, idle []outcome
	for _, o := range outs {
		switch {
		case strings.HasPrefix(o.first, "HTTP/1.1 503"):
			rejected = append(rejected, o)
		case o.first == "":
			idle = append(idle, o)
		default:
			t.Errorf("unexpected first line %q", o.first)
		}
	}
	var slowest time.Duration
	for _, o := range rejected {
		slowest = max(slowest, o.after)
	}
	t.Logf("%d connections over the limit of %d got 503, slowest after %v", len(rejected), limit, slowest.Round(time.Microsecond))
	if len(rejected) != open-limit || len(idle) != limit {
		t.Fatalf("%d got 503 and %d wait, want %d and %d", len(rejected), len(idle), open-limit, limit)
	}

	// A real user arriving now gets the 503 too, not a reset.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	for range 5 {
		res, err := client.Get("http://" + g.addrs.front + "/full")
		if err != nil {
			t.Errorf("real user at capacity: %v", err)
			continue
		}
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
			t.Errorf("real user at capacity: %s, Retry-After %q", res.Status, res.Header.Get("Retry-After"))
		}
	}

	for _, o := range idle[:20] {
		o.c.Close()
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		res, err := client.Get("http://" + g.addrs.front + "/after")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request succeeded within 2s of closing 20 connections: %v %v", res, err)
		}
		time.Sleep(20 * time.Millisecond) // the server notices the closed connections asynchronously
	}
	for _, o := range outs {
		o.c.Close()
	}
	g.stop()
	waitGoroutines(t, baseline)
}
