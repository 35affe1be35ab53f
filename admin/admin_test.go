package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testToken = "s3cret-admin-token"
	testSID   = "abcdefghijklmnopqrstuvwxyz012345"
	xssName   = "<script>alert(1)</script>"
)

// fakeState implements Source, Sessions and BackendControl over a few
// in-memory backends and nodes.
type fakeState struct {
	mu       sync.Mutex // guards backends and killed
	backends []BackendView
	killed   []string
	sessions *SessionView
}

func newFakeState() *fakeState {
	return &fakeState{
		backends: []BackendView{
			{Name: "lamp01", URL: "http://127.0.0.1:8081", State: "up", InFlight: 2, Requests: 1200, Errors: 3,
				LastCheck: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), LatencyMS: 1.5},
			{Name: xssName, URL: "http://127.0.0.1:8082", State: "down", LastError: "dial tcp: connection refused"},
			{Name: "lamp/03", URL: "http://127.0.0.1:8083", State: "draining"},
		},
		sessions: &SessionView{
			Lookups: map[string]uint64{"verified": 900, "repaired": 4, "unknown_stripped": 17, "invalid_stripped": 2,
				"cached": 5000},
			Repairs: 4, Renewals: 80, Kills: 1, Cached: 5000, Held: 3,
		},
	}
}

func (f *fakeState) Backends() []BackendView {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]BackendView(nil), f.backends...)
}

func (f *fakeState) Nodes() []NodeView {
	return []NodeView{
		{Addr: "127.0.0.1:11211", State: "up", LatencyMS: 0.2, UptimeS: 93784, Items: 1234, Evictions: 5, Restarts: 1,
			LastRestart: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), Bytes: 5 << 20, LimitBytes: 64 << 20},
		{Addr: "127.0.0.1:11212", State: "down"},
		{Addr: "127.0.0.1:11213", State: "restarting", ConnectionLosses: 2, Restarts: 1},
	}
}

func (f *fakeState) Sessions() *SessionView { return f.sessions }

func (f *fakeState) set(name, state string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.backends {
		if f.backends[i].Name == name {
			f.backends[i].State = state
			return nil
		}
	}
	return fmt.Errorf("unknown backend %q", name)
}

func (f *fakeState) Drain(name string) error       { return f.set(name, "draining") }
func (f *fakeState) Enable(name string) error      { return f.set(name, "up") }
func (f *fakeState) Maintenance(name string) error { return f.set(name, "maintenance") }

func (f *fakeState) ValidID(id string) bool {
	return regexp.MustCompile(`^[A-Za-z0-9,-]{22,256}$`).MatchString(id)
}

func (f *fakeState) Inspect(_ context.Context, id string) ([]SessionEntry, error) {
	return []SessionEntry{
		{Node: "127.0.0.1:11211", Reachable: true, Present: true, Size: 42, Flags: 0, TTL: 1400},
		{Node: "127.0.0.1:11212", Error: "connection refused"},
	}, nil
}

func (f *fakeState) Kill(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.killed = append(f.killed, id)
	return nil
}

type fixture struct {
	h     http.Handler
	state *fakeState
	logs  *bytes.Buffer
}

func newFixture(t *testing.T, mod func(*Options)) *fixture {
	t.Helper()
	f := &fixture{state: newFakeState(), logs: &bytes.Buffer{}}
	o := Options{
		Token:    testToken,
		Source:   f.state,
		Sessions: f.state,
		Backends: f.state,
		Reload:   func() error { return nil },
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "sessiongate_up 1\n")
		}),
		Logger:  slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Version: "1.2.3",
		Now:     func() time.Time { return time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC) },
		Hosts:   []string{"example.com"}, // httptest.NewRequest's Host
	}
	if mod != nil {
		mod(&o)
	}
	f.h = New(o)
	return f
}

// do sends one request; hdr are header name/value pairs.
func (f *fixture) do(method, target string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

var bearer = []string{"Authorization", "Bearer " + testToken}

func TestOpenEndpoints(t *testing.T) {
	f := newFixture(t, nil)
	cases := []struct {
		path, ctype, contains string
	}{
		{"/", "text/html", `<script src="ui/app.js"`},
		{"/ui/app.js", "text/javascript", "api/status"},
		{"/ui/app.css", "text/css", ".badge"},
		{"/api/status", "application/json", `"backends"`},
		{"/metrics", "", "sessiongate_up 1"},
	}
	for _, c := range cases {
		w := f.do("GET", c.path)
		if w.Code != http.StatusOK {
			t.Errorf("GET %s: %d", c.path, w.Code)
			continue
		}
		if !strings.HasPrefix(w.Header().Get("Content-Type"), c.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s", c.path, w.Header().Get("Content-Type"), c.ctype)
		}
		if !strings.Contains(w.Body.String(), c.contains) {
			t.Errorf("GET %s: body lacks %q", c.path, c.contains)
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: CSP %q", c.path, csp)
		}
	}
	for _, p := range []string{"/ui/", "/ui/missing.js", "/nope", "/index.html"} {
		if w := f.do("GET", p); w.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, w.Code)
		}
	}
}

func TestStatusJSONShape(t *testing.T) {
	w := newFixture(t, nil).do("GET", "/api/status")
	var st map[string]json.RawMessage
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"backends", "nodes", "sessions", "time", "version"} {
		if _, ok := st[k]; !ok {
			t.Errorf("status lacks %q", k)
		}
	}
	keys := func(raw json.RawMessage) []string {
		var list []map[string]any
		if err := json.Unmarshal(raw, &list); err != nil || len(list) == 0 {
			t.Fatalf("not a non-empty list: %s", raw)
		}
		var ks []string
		for k := range list[0] {
			ks = append(ks, k)
		}
		return ks
	}
	wantKeys := func(what string, got []string, want string) {
		have := map[string]bool{}
		for _, k := range got {
			have[k] = true
		}
		for _, k := range strings.Fields(want) {
			if !have[k] {
				t.Errorf("%s lacks %q (has %v)", what, k, got)
			}
		}
	}
	wantKeys("backend", keys(st["backends"]), "name url state in_flight requests errors last_check latency_ms last_error")
	wantKeys("node", keys(st["nodes"]), "addr state latency_ms uptime_s items evictions connection_losses restarts last_restart bytes limit_bytes last_error")
	var sess map[string]any
	json.Unmarshal(st["sessions"], &sess)
	wantKeys("sessions", func() (ks []string) {
		for k := range sess {
			ks = append(ks, k)
		}
		return ks
	}(), "lookups repairs renewals kills cached held")
	if got := string(st["time"]); got != `"2026-05-06T07:08:09Z"` {
		t.Errorf("time = %s", got)
	}
	if got := string(st["version"]); got != `"1.2.3"` {
		t.Errorf("version = %s", got)
	}
	// encoding/json escapes markup characters: the name can't close a tag
	// even if some client put the raw JSON into a page.
	body := w.Body.String()
	if strings.Contains(body, "<script>") || !strings.Contains(body, `\u003cscript\u003ealert(1)\u003c/script\u003e`) {
		t.Errorf("backend name not escaped by encoding/json: %s", body)
	}
}

func TestStatusWithoutSessionLayer(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Source = nil })
	body := f.do("GET", "/api/status").Body.String()
	for _, want := range []string{`"backends":[]`, `"nodes":[]`, `"sessions":null`} {
		if !strings.Contains(body, want) {
			t.Errorf("status %s lacks %s", body, want)
		}
	}
}

func TestAuth(t *testing.T) {
	f := newFixture(t, nil)
	cases := []struct {
		name string
		hdr  []string
		want int
	}{
		{"missing", nil, http.StatusUnauthorized},
		{"wrong token", []string{"Authorization", "Bearer nope"}, http.StatusUnauthorized},
		{"token prefix", []string{"Authorization", "Bearer " + testToken[:5]}, http.StatusUnauthorized},
		{"wrong scheme", []string{"Authorization", "Basic " + testToken}, http.StatusUnauthorized},
		{"right", bearer, http.StatusOK},
		{"scheme case-insensitive", []string{"Authorization", "bearer " + testToken}, http.StatusOK},
	}
	for _, c := range cases {
		w := f.do("GET", "/api/sessions/"+testSID, c.hdr...)
		if w.Code != c.want {
			t.Errorf("%s: %d, want %d", c.name, w.Code, c.want)
		}
		if c.want == http.StatusUnauthorized && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q", c.name, w.Header().Get("WWW-Authenticate"))
		}
	}
	if strings.Contains(f.logs.String(), testToken) || strings.Contains(f.logs.String(), testSID) {
		t.Errorf("log reveals the token or a session id:\n%s", f.logs)
	}
}

func TestTokenEndpointsDisabledWithoutToken(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Token = "" })
	for _, r := range [][2]string{{"GET", "/api/sessions/" + testSID}, {"DELETE", "/api/sessions/" + testSID},
		{"POST", "/api/backends/lamp01/drain"}, {"POST", "/api/reload"}} {
		// An empty bearer must not match the empty token.
		w := f.do(r[0], r[1], "Authorization", "Bearer ")
		if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "admin.token") {
			t.Errorf("%s %s: %d %s, want 403 with a message", r[0], r[1], w.Code, w.Body)
		}
	}
}

func TestOriginCheck(t *testing.T) {
	f := newFixture(t, nil) // httptest requests have Host example.com
	cases := []struct {
		origin string
		want   int
	}{
		{"", http.StatusOK},
		{"http://example.com", http.StatusOK},
		{"https://evil.example", http.StatusForbidden},
		{"http://example.com:8080", http.StatusForbidden},
		{"null", http.StatusForbidden},
	}
	for _, c := range cases {
		hdr := append([]string{"Origin", c.origin}, bearer...)
		if c.origin == "" {
			hdr = bearer
		}
		if w := f.do("POST", "/api/backends/lamp01/drain", hdr...); w.Code != c.want {
			t.Errorf("Origin %q: %d, want %d", c.origin, w.Code, c.want)
		}
	}
}

func TestInspectSession(t *testing.T) {
	f := newFixture(t, nil)
	w := f.do("GET", "/api/sessions/"+testSID, bearer...)
	if w.Code != http.StatusOK {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	var entries []map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &entries); err != nil || len(entries) != 2 {
		t.Fatalf("entries %s: %v", w.Body, err)
	}
	for _, k := range strings.Fields("node reachable present size flags ttl locked error") {
		if _, ok := entries[0][k]; !ok {
			t.Errorf("entry lacks %q", k)
		}
	}
	if entries[0]["ttl"] != 1400.0 || entries[1]["error"] != "connection refused" {
		t.Errorf("entries %v", entries)
	}
}

func TestKillSession(t *testing.T) {
	f := newFixture(t, nil)
	if w := f.do("DELETE", "/api/sessions/"+testSID, bearer...); w.Code != http.StatusNoContent {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if len(f.state.killed) != 1 || f.state.killed[0] != testSID {
		t.Fatalf("killed %v", f.state.killed)
	}
	logs := f.logs.String()
	if strings.Contains(logs, testSID) || !strings.Contains(logs, "sid="+shortHash(testSID)) {
		t.Errorf("kill log must name the session by short hash only:\n%s", logs)
	}
}

func TestInvalidSessionID(t *testing.T) {
	f := newFixture(t, nil)
	for _, id := range []string{"short", "bad%20id%20with%20spaces0000000", strings.Repeat("a", 257)} {
		for _, m := range []string{"GET", "DELETE"} {
			if w := f.do(m, "/api/sessions/"+id, bearer...); w.Code != http.StatusBadRequest {
				t.Errorf("%s %s: %d, want 400", m, id, w.Code)
			}
		}
	}
	if len(f.state.killed) != 0 {
		t.Errorf("invalid ids reached Kill: %v", f.state.killed)
	}
}

func TestNoSessionLayer(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Sessions = nil })
	for _, m := range []string{"GET", "DELETE"} {
		w := f.do(m, "/api/sessions/"+testSID, bearer...)
		if w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "no session layer") {
			t.Errorf("%s: %d %s", m, w.Code, w.Body)
		}
	}
}

func TestBackendControl(t *testing.T) {
	f := newFixture(t, nil)
	cases := []struct {
		path      string
		want      int
		wantState string
	}{
		{"/api/backends/lamp01/drain", 200, "draining"},
		{"/api/backends/lamp01/maintenance", 200, "maintenance"},
		{"/api/backends/lamp01/enable", 200, "up"},
		{"/api/backends/lamp%2F03/enable", 200, "up"}, // escaped slash in a name
		{"/api/backends/%3Cscript%3Ealert%281%29%3C%2Fscript%3E/drain", 200, "draining"},
		{"/api/backends/nosuch/drain", 404, ""},
		{"/api/backends/lamp01/explode", 404, ""},
	}
	for _, c := range cases {
		w := f.do("POST", c.path, bearer...)
		if w.Code != c.want {
			t.Errorf("POST %s: %d %s, want %d", c.path, w.Code, w.Body, c.want)
			continue
		}
		var b BackendView
		if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
			t.Errorf("POST %s: %v", c.path, err)
		}
		if c.want == 200 && b.State != c.wantState {
			t.Errorf("POST %s: state %q, want %q", c.path, b.State, c.wantState)
		}
	}
	if w := f.do("GET", "/api/backends/lamp01/drain", bearer...); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET on an action: %d, want 405", w.Code)
	}
	g := newFixture(t, func(o *Options) { o.Backends = nil })
	if w := g.do("POST", "/api/backends/lamp01/drain", bearer...); w.Code != http.StatusNotFound {
		t.Errorf("without BackendControl: %d, want 404", w.Code)
	}
}

func TestReload(t *testing.T) {
	cases := []struct {
		name     string
		reload   func() error
		want     int
		contains string
	}{
		{"ok", func() error { return nil }, 200, "reloaded"},
		{"bad config", func() error {
			return fmt.Errorf("reload: %w", &ConfigError{Err: errors.New("config.yaml:12: backends[0].url: missing")})
		}, 422, "config.yaml:12"},
		{"other failure", func() error { return errors.New("listen tcp :80: address in use") }, 500, "address in use"},
		{"not configured", nil, 404, "reload not configured"},
	}
	for _, c := range cases {
		f := newFixture(t, func(o *Options) { o.Reload = c.reload })
		w := f.do("POST", "/api/reload", bearer...)
		if w.Code != c.want || !strings.Contains(w.Body.String(), c.contains) {
			t.Errorf("%s: %d %s, want %d with %q", c.name, w.Code, w.Body, c.want, c.contains)
		}
	}
}

// TestDashboardNeverParsesData guards the XSS rule: the embedded JS inserts
// data only as text, and the HTML has no inline script (the CSP forbids it).
func TestDashboardNeverParsesData(t *testing.T) {
	js, err := fs.ReadFile(assets, "ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	sinks := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|createContextualFragment|srcdoc`)
	if m := sinks.FindAll(js, -1); m != nil {
		t.Errorf("app.js uses HTML-parsing sinks: %q", m)
	}
	if !bytes.Contains(js, []byte("textContent")) {
		t.Error("app.js does not use textContent")
	}
	html, _ := fs.ReadFile(assets, "ui/index.html")
	if n := bytes.Count(html, []byte("<script")); n != 1 || !bytes.Contains(html, []byte(`<script src="ui/app.js" defer></script>`)) {
		t.Errorf("index.html must have exactly one external script, found %d <script", n)
	}
	if bytes.Contains(html, []byte("http://")) || bytes.Contains(html, []byte("https://")) {
		t.Error("index.html references another origin (must work offline)")
	}
}

func TestProfilesNeedTheToken(t *testing.T) {
	h := New(Options{Token: "tok", Source: newFakeState(), Hosts: []string{"example.com"}})
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/debug/pprof/heap", "", http.StatusUnauthorized},
		{"/debug/pprof/heap", "tok", http.StatusOK},
		{"/debug/pprof/goroutine", "tok", http.StatusOK},
		{"/debug/pprof/nope", "tok", http.StatusNotFound},
		{"/debug/pprof/profile?seconds=1", "tok", http.StatusOK},
		{"/debug/pprof/profile?seconds=999", "tok", http.StatusBadRequest},
	} {
		req := httptest.NewRequest(http.MethodGet, tc.path, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s with token %q: %d, want %d", tc.path, tc.token, rec.Code, tc.want)
		}
		if rec.Code == http.StatusOK && rec.Body.Len() == 0 {
			t.Errorf("%s: empty profile", tc.path)
		}
	}
}

// readerState adds SessionReader to fakeState: one stored session.
type readerState struct {
	*fakeState
	value []byte
}

func (r readerState) Read(_ context.Context, id string) (StoredSession, bool, error) {
	if id != "abcdefghijklmnopqrstuvwxyz" {
		return StoredSession{}, false, nil
	}
	return StoredSession{Node: "127.0.0.1:11211", Value: r.value, TTL: 1400}, true, nil
}

func TestDecodedSession(t *testing.T) {
	const id = "abcdefghijklmnopqrstuvwxyz"
	if w := newFixture(t, nil).do("GET", "/api/sessions/"+id+"?decode=1", bearer...); w.Code != http.StatusNotFound {
		t.Errorf("without a SessionReader: %d %s, want 404", w.Code, w.Body)
	}
	value := []byte(`auth|a:1:{s:4:"user";a:1:{s:2:"id";i:42;}}note|s:18:"<script>x</script>";`)
	f := newFixture(t, func(o *Options) {
		o.Sessions = readerState{newFakeState(), value}
		o.UserKey = "auth.user.id"
	})
	if w := f.do("GET", "/api/sessions/"+id+"?decode=1"); w.Code != http.StatusUnauthorized {
		t.Errorf("without the token: %d, want 401", w.Code)
	}
	w := f.do("GET", "/api/sessions/"+id+"?decode=1", bearer...)
	want := `{"node":"127.0.0.1:11211","bytes":73,"flags":0,"ttl":1400,"serializer":"php","data":{"auth":{"user":{"id":42}},` +
		`"note":"\u003cscript\u003ex\u003c/script\u003e"},"user_key":"auth.user.id","user":"42"}`
	if w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != want || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("decode: %d %s\nwant %s", w.Code, w.Body, want)
	}
	if w := f.do("GET", "/api/sessions/zyxwvutsrqponmlkjihgfedcba?decode=1", bearer...); w.Code != http.StatusNotFound {
		t.Errorf("a session no node holds: %d, want 404", w.Code)
	}
	if w := f.do("GET", "/api/sessions/"+id+"?decode=0", bearer...); w.Code != http.StatusOK || !strings.HasPrefix(w.Body.String(), "[") {
		t.Errorf("decode=0 is the node view: %d %s", w.Code, w.Body)
	}
}
