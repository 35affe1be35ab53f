package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore"
	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

// combinedLine is the combined log format's field rules:
// %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i", with quoted
// fields free of bare quotes and backslashes (nginx's \xHH escapes).
var combinedLine = regexp.MustCompile(`^(\S+) (\S+) (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "(\S+) (\S+) (\S+)" (\d{3}) (\d+|-) "((?:[^"\\]|\\x[0-9A-F]{2})*)" "((?:[^"\\]|\\x[0-9A-F]{2})*)"$`)

// idBackend answers "hello" and records the X-Request-ID of every request.
type idBackend struct {
	*httptest.Server
	mu  sync.Mutex
	ids map[string]string // path -> X-Request-ID seen
}

func newIDBackend(t *testing.T) *idBackend {
	b := &idBackend{ids: map[string]string{}}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.ids[r.URL.Path] = r.Header.Get("X-Request-Id")
		b.mu.Unlock()
		io.WriteString(w, "hello")
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *idBackend) saw(path string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ids[path]
}

// do sends a GET to the gate with the given headers and returns the
// response's X-Request-ID.
func do(t *testing.T, front, path string, hdr ...string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+front+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.Header.Get("X-Request-Id"), res.StatusCode
}

// accessLogYAML is plainGateYAML with the access log as extra says (the
// shared helpers turn it off to keep test output readable).
func accessLogYAML(be, extra string) string {
	return logOn(plainGateYAML(be, "")) + extra
}

// logOn removes the shared helpers' "access_log: off".
func logOn(yaml string) string { return strings.Replace(yaml, "access_log: off\n", "", 1) }

// TestAccessLogCombined: each request is one line in the combined format,
// with the client address found behind trusted proxies.
func TestAccessLogCombined(t *testing.T) {
	be := newIDBackend(t)
	path := filepath.Join(t.TempDir(), "access.log")
	g := startCaptured(t, accessLogYAML(be.URL, "trusted_proxies: [127.0.0.1, 10.0.0.0/8]\naccess_log:\n  path: "+path+"\n"))
	id, _ := do(t, g.addrs.front, "/index.php?q=%22x%22", "User-Agent", `Mozilla/5.0 "quoted"`,
		"Referer", "https://shop.example/", "X-Forwarded-For", "198.51.100.7, 10.1.2.3")
	do(t, g.addrs.front, "/none")
	g.stop() // flushes the log

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), data)
	}
	m := combinedLine.FindStringSubmatch(lines[0])
	if m == nil {
		t.Fatalf("not the combined format: %q", lines[0])
	}
	if _, err := time.Parse("02/Jan/2006:15:04:05 -0700", m[4]); err != nil {
		t.Errorf("%%t: %v", err)
	}
	for i, want := range map[int]string{1: "198.51.100.7", 2: "-", 3: "-", 5: "GET", 6: "/index.php?q=%22x%22",
		7: "HTTP/1.1", 8: "200", 9: "5", 10: "https://shop.example/", 11: `Mozilla/5.0 \x22quoted\x22`} {
		if m[i] != want {
			t.Errorf("field %d = %q, want %q (%s)", i, m[i], want, lines[0])
		}
	}
	m = combinedLine.FindStringSubmatch(lines[1])
	if m == nil || m[1] != "127.0.0.1" || m[10] != "-" || m[11] != "Go-http-client/1.1" {
		t.Errorf("second line: %q", lines[1])
	}
	if id == "" {
		t.Error("no X-Request-ID in the response")
	}
}

// TestAccessLogJSON: one object per line with the session layer's outcome
// and the session id's hash (never the id), against real PHP and memcached.
func TestAccessLogJSON(t *testing.T) {
	p := newPool(t, phptest.Memcache)
	path := filepath.Join(t.TempDir(), "access.log")
	g := startCaptured(t, logOn(gateYAML(p, ""))+"access_log:\n  path: "+path+"\n  format: json\n")
	t.Cleanup(p.tr.CloseIdleConnections)
	u := p.newUser(t)
	base := "http://" + g.addrs.front
	u.visit(t, base, "/visit.php") // PHP makes the session
	res, err := u.get(base+"/visit.php", nil)
	if err != nil {
		t.Fatal(err)
	}
	id := res.Header.Get("X-Request-Id")
	p.tr.CloseIdleConnections()
	g.stop()

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), u.id) {
		t.Fatal("the session id is in the access log")
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), data)
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &e); err != nil {
		t.Fatalf("%v: %s", err, lines[1])
	}
	want := map[string]any{"client": "127.0.0.1", "method": "GET", "host": g.addrs.front, "uri": "/visit.php",
		"protocol": "HTTP/1.1", "status": 200.0, "bytes_in": 0.0, "retries": 0.0, "session": "verified",
		"session_id": sessionstore.ShortID(u.id), "request_id": id, "tls": "", "referer": ""}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("%s = %#v, want %#v", k, e[k], v)
		}
	}
	if e["backend"] == "" || e["bytes_out"].(float64) <= 0 || e["upstream_ms"] == nil ||
		e["duration_ms"].(float64) < e["upstream_ms"].(float64) || e["user_agent"] != "Go-http-client/1.1" {
		t.Errorf("line: %s", lines[1])
	}
	if _, err := time.Parse(time.RFC3339, e["time"].(string)); err != nil {
		t.Errorf("time: %v", err)
	}
	var first map[string]any
	json.Unmarshal([]byte(lines[0]), &first)
	if first["session"] != "" || first["session_id"] != "" {
		t.Errorf("a request without a session cookie: %s", lines[0])
	}
}

// TestAccessLogReopen is logrotate's sequence: rename the file, SIGUSR1,
// and later lines go to a new file at the configured path.
func TestAccessLogReopen(t *testing.T) {
	be := newIDBackend(t)
	path := filepath.Join(t.TempDir(), "access.log")
	logs := &logSink{}
	r := startLogged(t, writeConfig(t, accessLogYAML(be.URL, "access_log:\n  path: "+path+"\n")), logs)
	do(t, r.addrs.front, "/before")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	r.reload <- syscall.SIGUSR1
	for i := 0; ; i++ { // the reopen creates the file
		if _, err := os.Stat(path); err == nil {
			break
		}
		if i == 500 {
			t.Fatal("no new file 10s after SIGUSR1")
		}
		time.Sleep(20 * time.Millisecond)
	}
	do(t, r.addrs.front, "/after")
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("serve: %v", err)
	}
	r.done <- nil // for startLogged's cleanup
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.Contains(string(old), "GET /before ") || strings.Contains(string(old), "/after") {
		t.Errorf("rotated file:\n%s", old)
	}
	if !strings.Contains(string(cur), "GET /after ") || strings.Contains(string(cur), "/before") {
		t.Errorf("new file:\n%s", cur)
	}
	if !strings.Contains(logs.String(), "access log reopened") {
		t.Error("the reopen was not logged")
	}
}

// TestAccessLogOffAndDroppedMetric: access_log: off writes nothing, and the
// dropped-lines counter is exported.
func TestAccessLogOffAndDroppedMetric(t *testing.T) {
	be := newIDBackend(t)
	g := startCaptured(t, accessLogYAML(be.URL, "access_log: off\n"))
	if _, st := do(t, g.addrs.front, "/x"); st != 200 {
		t.Fatalf("status %d", st)
	}
	res, err := http.Get("http://" + g.addrs.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), "\nsessiongate_access_log_dropped_total 0\n") {
		t.Error("sessiongate_access_log_dropped_total missing from /metrics")
	}
}

var generatedID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestRequestIDs: an id is made unless a trusted proxy sent a well-formed
// one; PHP's side and the client see the same id, and two instances never
// make the same one.
func TestRequestIDs(t *testing.T) {
	be := newIDBackend(t)
	trusting := startCaptured(t, accessLogYAML(be.URL, "access_log: off\ntrusted_proxies: [127.0.0.1]\n"))
	other := startCaptured(t, accessLogYAML(be.URL, "access_log: off\n"))

	seen := map[string]bool{}
	prefixes := map[string]bool{}
	for i, g := range []*capturedGate{trusting, other} {
		for j := 0; j < 50; j++ {
			path := "/gen/" + strconv.Itoa(i) + "/" + strconv.Itoa(j)
			id, st := do(t, g.addrs.front, path)
			if st != 200 || !generatedID.MatchString(id) {
				t.Fatalf("generated id %q (status %d)", id, st)
			}
			if be.saw(path) != id {
				t.Fatalf("backend saw %q, client got %q", be.saw(path), id)
			}
			if seen[id] {
				t.Fatalf("id %s made twice", id)
			}
			seen[id] = true
			prefixes[id[:16]] = true
		}
	}
	if len(prefixes) != 2 {
		t.Errorf("%d id prefixes for two instances", len(prefixes))
	}

	const good = "Edge-7f3a.b_c:9"
	if id, _ := do(t, trusting.addrs.front, "/kept", "X-Request-Id", good); id != good || be.saw("/kept") != good {
		t.Errorf("from a trusted proxy: client got %q, backend saw %q, want %q", id, be.saw("/kept"), good)
	}
	if id, _ := do(t, other.addrs.front, "/untrusted", "X-Request-Id", good); id == good || !generatedID.MatchString(id) || be.saw("/untrusted") != id {
		t.Errorf("from an untrusted peer: client got %q, backend saw %q", id, be.saw("/untrusted"))
	}
	for name, hdr := range map[string][]string{
		"overlong": {"X-Request-Id", strings.Repeat("a", 129)},
		"slash":    {"X-Request-Id", "a/b"},
		"space":    {"X-Request-Id", "a b"},
		"quote":    {"X-Request-Id", `a"b`},
		"utf8":     {"X-Request-Id", "caf\xc3\xa9"},
		"two":      {"X-Request-Id", "a", "X-Request-Id", "b"},
		"empty":    {"X-Request-Id", ""},
	} {
		path := "/malformed/" + name
		id, _ := do(t, trusting.addrs.front, path, hdr...)
		if !generatedID.MatchString(id) || be.saw(path) != id {
			t.Errorf("%s: client got %q, backend saw %q; want a fresh id", name, id, be.saw(path))
		}
	}
	if id, _ := do(t, trusting.addrs.front, "/max", "X-Request-Id", strings.Repeat("a", 128)); id != strings.Repeat("a", 128) {
		t.Errorf("a 128-byte id was replaced by %q", id)
	}
}

// TestRequestIDInLogLines: sessiongate's own log lines about a request
// carry its id.
func TestRequestIDInLogLines(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // nothing listens there now: every attempt fails
	g := startCaptured(t, "listen: 127.0.0.1:0\naccess_log: off\nupstream:\n  retries: 1\nadmin:\n  listen: 127.0.0.1:0\n"+
		"backends:\n  - name: lamp01\n    url: "+deadURL+"\n  - name: lamp02\n    url: "+deadURL+"\n")
	id, st := do(t, g.addrs.front, "/x")
	if st != http.StatusBadGateway && st != http.StatusServiceUnavailable {
		t.Fatalf("status %d", st)
	}
	if !generatedID.MatchString(id) {
		t.Fatalf("error response carries X-Request-ID %q", id)
	}
	g.stop()
	var n int
	for _, line := range strings.Split(g.logs.String(), "\n") {
		if strings.Contains(line, "backend failed, retrying") || strings.Contains(line, "msg=\"backend error\"") {
			n++
			if !strings.Contains(line, "request_id="+id) {
				t.Errorf("log line without request_id=%s: %s", id, line)
			}
		}
	}
	if n == 0 {
		t.Errorf("no request log lines:\n%s", g.logs.String())
	}
}
