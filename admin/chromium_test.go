package admin

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// movingState makes counters grow on every status poll so the dashboard has
// rates and sparklines to draw.
type movingState struct {
	*fakeState
	polls atomic.Uint64
}

func (m *movingState) Backends() []BackendView {
	n := m.polls.Add(1)
	list := m.fakeState.Backends()
	for i := range list {
		list[i].Requests += n * uint64(40*(i+1))
		list[i].Errors += n / 2
	}
	list[0].Share, list[0].Warming = 0.35, true // slow start
	return list
}

// FrontDoor implements FrontDoorSource.
func (m *movingState) FrontDoor() FrontDoorView {
	return FrontDoorView{RateLimited: 4242, ConnectionsRefused: 7, ProxyHeader: 1, ClientsTracked: 99}
}

// Certificates implements CertificatesSource: one due in 90 days, one
// about to expire, one with a name that is markup.
func (m *movingState) Certificates() []CertificateView {
	base := time.Date(2026, 5, 6, 7, 0, 0, 0, time.UTC)
	return []CertificateView{{Name: "www.example.com", NotAfter: base.Add(90 * 24 * time.Hour)},
		{Name: "old.example.com", NotAfter: base.Add(3*24*time.Hour + time.Hour)},
		{Name: "<b>x</b>", NotAfter: base.Add(30 * 24 * time.Hour)}}
}

func (m *movingState) Sessions() *SessionView {
	n, s := m.polls.Load(), *m.fakeState.Sessions()
	s.Lookups = map[string]uint64{}
	for k, v := range m.fakeState.Sessions().Lookups {
		s.Lookups[k] = v + n*n*uint64(len(k))
	}
	s.Repairs += n % 3
	s.Renewals += 2 * n
	return &s
}

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: install it with `apt-get install -y chromium` (make test does)")
	return ""
}

// runChromium runs headless Chromium on url with extra flags and returns
// stdout and stderr. Each run gets its own profile directory and is killed
// with its context.
func runChromium(t *testing.T, bin, url string, extra ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
		"--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0",
		// Let the page poll a few times (virtual time runs the timers fast).
		"--virtual-time-budget=20000",
	}, extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// Chromium forks helpers (zygote, GPU, renderer): run it in its own process
	// group and kill the whole group on timeout and, for stragglers, after it exits.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // ESRCH when all are gone already
	}
	if err != nil {
		t.Fatalf("chromium %v: %v\nstderr:\n%s", extra, err, errb.String())
	}
	return out.String(), errb.String()
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// consoleProblems finds page errors in Chromium's log: uncaught exceptions,
// console messages (the dashboard writes none) and failed loads.
func consoleProblems(stderr string) []string {
	var bad []string
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "Uncaught") || strings.Contains(line, ":CONSOLE") ||
			strings.Contains(line, "Failed to load resource") || strings.Contains(line, "Content Security Policy") {
			bad = append(bad, line)
		}
	}
	return bad
}

// dashboard serves the admin handler over fake data on a loopback port. It
// also serves /drive, the dashboard page plus drive.js, for tests that click.
// Any answer >= 400 the page causes fails the test.
func dashboard(t *testing.T, driveJS string) (url string, st *movingState, polls *atomic.Int64) {
	t.Helper()
	st = &movingState{fakeState: newFakeState()}
	polls = new(atomic.Int64) // the status clock moves 10s per poll so rates and sparklines look real
	base := time.Date(2026, 5, 6, 7, 0, 0, 0, time.UTC)
	h := New(Options{
		Token: testToken, Source: st, Sessions: sessionsWithRead{st.fakeState, poolFake{st}}, Backends: st, Pool: poolFake{st}, Version: "test",
		Now: func() time.Time { return base.Add(time.Duration(polls.Add(1)) * 10 * time.Second) },
	})
	index, err := fs.ReadFile(assets, "ui/index.html")
	if err != nil {
		t.Fatal(err)
	}
	drivePage := strings.Replace(string(index), "</head>", `<script src="drive.js" defer></script></head>`, 1)
	var failed sync.Map // path -> status
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/drive":
			io.WriteString(w, drivePage)
			return
		case "/drive.js":
			w.Header().Set("Content-Type", "text/javascript")
			io.WriteString(w, driveJS)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		if rec.code >= 400 {
			failed.Store(r.URL.Path, rec.code)
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		failed.Range(func(k, v any) bool {
			t.Errorf("the page requested %v and got %v", k, v)
			return true
		})
	})
	return srv.URL, st, polls
}

func TestDashboardInChromium(t *testing.T) {
	bin := chromiumPath(t)
	url, _, polls := dashboard(t, "")

	dom, stderr := runChromium(t, bin, url+"/", "--dump-dom")
	if bad := consoleProblems(stderr); len(bad) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(bad, "\n"))
	}
	if polls.Load() < 3 {
		t.Errorf("the page polled /api/status %d times, want several", polls.Load())
	}
	// Data shows up as text: markup characters come back entity-escaped.
	for _, want := range []string{">lamp01<", ">&lt;script&gt;alert(1)&lt;/script&gt;<", ">lamp/03<",
		">127.0.0.1:11211<", ">127.0.0.1:11212<", ">restarting<", ">held for a restarting node<", ">sent to PHP again (PHP lost the session at a fault)<", ">draining<", ">live<", "<polyline points=\"",
		">warming 35%<", ">requests over the rate limit (429)<", ">4,242<", ">clients tracked now<",
		">www.example.com<", ">2026-08-04 07:00 UTC<", ">89<", `<span class="badge down">3</span>`, ">&lt;b&gt;x&lt;/b&gt;<",
		"Draining is instant and safe: no session is tied to a backend."} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if n := len(regexp.MustCompile(`(?i)<script`).FindAllString(dom, -1)); n != 1 {
		t.Errorf("rendered DOM has %d script elements, want only the dashboard's own", n)
	}
	if strings.Contains(dom, "<script>alert(1)") {
		t.Error("backend name was parsed as markup")
	}

	dir := os.Getenv("TESTOUT")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "dashboard.png")
	_, stderr = runChromium(t, bin, url+"/", "--screenshot="+shot, "--window-size=1280,900", "--hide-scrollbars")
	if bad := consoleProblems(stderr); len(bad) > 0 {
		t.Errorf("console errors while taking the screenshot:\n%s", strings.Join(bad, "\n"))
	}
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10_000 {
		t.Errorf("screenshot %s missing or blank: %v", shot, err)
	}
	t.Logf("screenshot: %s", shot)
}

// TestDashboardDrainButtonInChromium clicks Drain on the backend with the
// hostile name: the prompt answer must travel as a bearer token and the name
// must reach the API intact.
func TestDashboardDrainButtonInChromium(t *testing.T) {
	bin := chromiumPath(t)
	url, st, _ := dashboard(t, `'use strict';
window.prompt = () => '`+testToken+`';
function click() {
  const row = [...document.querySelectorAll('#backends tbody tr')]
    .find((tr) => tr.cells[0].firstChild.textContent === '`+xssName+`');
  if (!row) { setTimeout(click, 100); return; }
  row.querySelector('button').click(); // Drain
}
click();
`)
	dom, stderr := runChromium(t, bin, url+"/drive", "--dump-dom")
	if bad := consoleProblems(stderr); len(bad) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(bad, "\n"))
	}
	i := slices.IndexFunc(st.fakeState.Backends(), func(b BackendView) bool { return b.Name == xssName })
	if i < 0 {
		t.Fatalf("no backend %q in the state after clicking Drain", xssName)
	}
	if b := st.fakeState.Backends()[i]; b.State != "draining" {
		t.Errorf("after clicking Drain the backend is %q", b.State)
	}
	if !strings.Contains(dom, "&lt;script&gt;alert(1)&lt;/script&gt; is now draining") {
		t.Errorf("no confirmation in the page:\n%s", dom)
	}
}

// Pool implements PoolSource for the dashboard: a scan and a resync under way.
func (m *movingState) Pool() *PoolView {
	n := int64(m.polls.Load())
	return &PoolView{Sessions: 1200 + n, WithData: 900, Active: map[string]int64{"1m": 40, "5m": 150 + n, "15m": 400},
		Incomplete: 3, ScannedAt: time.Date(2026, 5, 6, 7, 0, 0, 0, time.UTC).Add(time.Duration(n) * 30 * time.Second), ScanSecs: 0.12,
		PerNode: map[string]PoolNodeView{"127.0.0.1:11211": {Sessions: 1200, WithData: 900, Locks: 12, Other: 7},
			"127.0.0.1:11212": {Error: "connection refused"}},
		Sizes:   []SizeBucket{{LE: 0, Count: 300}, {LE: 1024, Count: 900}},
		Largest: []LargestView{{Session: "1a2b3c4d", Bytes: 31337}},
		Resync:  &ResyncView{Running: true, Node: "127.0.0.1:11213", Done: 400, Total: 1200, Copied: 380, Rate: 500}}
}

// sessionsWithRead adds poolFake's Read to the fake Sessions.
type sessionsWithRead struct {
	*fakeState
	poolFake
}

// poolFake implements Pool and SessionReader over two sessions of user 42.
type poolFake struct{ st *movingState }

var poolIDs = []string{testSID, "zyxwvutsrqponmlkjihgfedcba9876"}

func (p poolFake) Scan(context.Context) (*PoolView, error) { return p.st.Pool(), nil }

func (p poolFake) List(_ context.Context, q SessionQuery) (SessionPage, error) {
	page := SessionPage{}
	if q.Cursor != "" {
		return page, nil
	}
	for _, id := range poolIDs {
		if !slices.Contains(p.st.fakeState.killedIDs(), id) {
			page.Sessions = append(page.Sessions, ListedSession{ID: id, Bytes: 20, TTL: 1400, Nodes: []string{"127.0.0.1:11211"}})
		}
	}
	return page, nil
}

func (p poolFake) Logout(ctx context.Context, user string, each func(string)) (int, error) {
	killed := 0
	for _, id := range poolIDs {
		if !slices.Contains(p.st.fakeState.killedIDs(), id) && p.st.fakeState.Kill(ctx, id) == nil {
			each(id)
			killed++
		}
	}
	return killed, nil
}

func (p poolFake) Read(_ context.Context, id string) (StoredSession, bool, error) {
	return StoredSession{Node: "127.0.0.1:11211", Value: []byte(`user|s:2:"42";visits|i:3;`), TTL: 1400}, true, nil
}

func (f *fakeState) killedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.killed...)
}

// TestDashboardSessionsViewInChromium searches user 42, kills one of the
// sessions with its button, reads a session's decoded data, and logs
// everyone out, the token asked once and sent as a bearer header.
func TestDashboardSessionsViewInChromium(t *testing.T) {
	bin := chromiumPath(t)
	url, st, _ := dashboard(t, `'use strict';
let prompts = 0;
window.prompt = () => { prompts++; return '`+testToken+`'; };
window.confirm = () => true;
const wait = (cond) => new Promise((ok) => { const f = () => (cond() ? ok() : setTimeout(f, 50)); f(); });
(async () => {
  await wait(() => !document.getElementById('pool-card').hidden);
  const q = document.getElementById('pool-q');
  q.value = '42';
  document.getElementById('pool-find-user').click();
  await wait(() => document.querySelectorAll('#pool-result tbody tr').length === 2);
  document.querySelector('#pool-result tbody tr button').click();
  await wait(() => document.getElementById('pool-msg').textContent.includes('killed'));
  q.value = '`+testSID+`';
  document.getElementById('pool-find-id').click();
  await wait(() => document.querySelector('#pool-result pre'));
  document.getElementById('pool-all-out').click();
  await wait(() => document.getElementById('pool-msg').textContent.includes('sessions killed'));
  document.body.dataset.prompts = String(prompts);
})();
`)
	dom, stderr := runChromium(t, bin, url+"/drive", "--dump-dom")
	if bad := consoleProblems(stderr); len(bad) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(bad, "\n"))
	}
	for _, want := range []string{`data-prompts="1"`, `"user": "42"`, "1 sessions killed.", "Sessions in the pool <span",
		">1a2b3c4d<", "Resyncing 127.0.0.1:11213: 400 / 1,200 looked at, 380 copied", "<progress", ">not scanned<"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if got := st.fakeState.killedIDs(); !slices.Equal(got, []string{testSID, poolIDs[1]}) {
		t.Errorf("killed %v, want %s by its button then the other by logging everyone out", got, testSID)
	}
}
