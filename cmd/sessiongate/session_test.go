package main

// End-to-end session tests: real memcached (memtest), real PHP with Debian's
// memcache/memcached session handlers (phptest) and the real sessiongate,
// started with serve() through the start helper of main_test.go.

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

const adminToken = "s3cret-admin-token"

// pool is one test's memcached cluster and PHP farm.
type pool struct {
	handler string
	mc      *memtest.Cluster
	php     *phptest.Farm
	tr      *http.Transport // shared by the test's clients, closed at the end
}

func newPool(t *testing.T, handler string) *pool {
	t.Helper()
	mc := memtest.Start(t, 3)
	p := &pool{handler: handler, mc: mc, tr: &http.Transport{}}
	p.php = phptest.Start(t, phptest.Options{Handler: handler, Servers: mc.Addrs()})
	t.Cleanup(p.tr.CloseIdleConnections)
	return p
}

// gate starts sessiongate in front of p; session holds extra indented lines
// for the session: section.
func (p *pool) gate(t *testing.T, session string) *running {
	t.Helper()
	r := start(t, writeConfig(t, gateYAML(p, session)))
	// Before the stop: http.Server.Shutdown waits up to 5 s for connections
	// that never sent a request, which the shared transport may hold.
	t.Cleanup(p.tr.CloseIdleConnections)
	return r
}

// gateYAML is a sessiongate config on free ports for p.
func gateYAML(p *pool, session string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "access_log: off\nlisten: 127.0.0.1:0\nserver:\n  shutdown_grace: 5s\nadmin:\n  listen: 127.0.0.1:0\n  token: %s\n", adminToken)
	b.WriteString("health:\n  path: /health.php\n  interval: 200ms\nbackends:\n")
	for i, u := range p.php.URLs() {
		fmt.Fprintf(&b, "  - name: %s\n    url: %s\n", p.php.Name(i), u)
	}
	fmt.Fprintf(&b, "session:\n  handler: %s\n%s", p.handler, session)
	b.WriteString("memcached:\n  timeout: 100ms\n  servers:\n")
	for _, a := range p.mc.Addrs() {
		fmt.Fprintf(&b, "    - %s\n", a)
	}
	return b.String()
}

// dataKey is the memcached key PHP stores session id under.
func (p *pool) dataKey(id string) string {
	if p.handler == phptest.Memcached {
		return "memc.sess.key." + id
	}
	return id
}

// user is one browser: a cookie jar.
type user struct {
	c  *http.Client
	id string // last session id PHP reported
}

func (p *pool) newUser(t testing.TB) *user {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &user{c: &http.Client{Jar: jar, Transport: p.tr, Timeout: 10 * time.Second}}
}

// page is what visit.php and big.php answer.
type page struct {
	Backend string `json:"backend"`
	Visits  int    `json:"visits"`
	ID      string `json:"id"`
	MD5     string `json:"md5"`
}

// get requests url and decodes the JSON body into v (if not nil).
func (u *user) get(url string, v any) (*http.Response, error) {
	res, err := u.c.Get(url)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return res, err
	}
	if res.StatusCode != http.StatusOK {
		return res, fmt.Errorf("GET %s: %s: %s", url, res.Status, body)
	}
	if v != nil {
		if headOnly(res, body) {
			return res, errHeadOnly
		}
		if err := json.Unmarshal(body, v); err != nil {
			return res, fmt.Errorf("GET %s: %v in %q", url, err, body)
		}
	}
	return res, nil
}

// visit requests base+path (visit.php or big.php) and records the session id.
func (u *user) visit(t testing.TB, base, path string) page {
	t.Helper()
	var pg page
	if _, err := u.get(base+path, &pg); err != nil {
		t.Fatal(err)
	}
	u.id = pg.ID
	return pg
}

func front(r *running) string { return "http://" + r.addrs.front }

// TestVisitCounterAcrossBackends: round robin spreads one user over every
// backend and the session follows with both PHP handlers.
func TestVisitCounterAcrossBackends(t *testing.T) {
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(h, func(t *testing.T) {
			p := newPool(t, h)
			g := p.gate(t, "")
			u := p.newUser(t)
			seen := map[string]bool{}
			for i := 1; i <= 9; i++ {
				pg := u.visit(t, front(g), "/visit.php")
				if pg.Visits != i {
					t.Fatalf("request %d: visits = %d (%+v)", i, pg.Visits, pg)
				}
				seen[pg.Backend] = true
			}
			if len(seen) != 3 {
				t.Errorf("backends seen: %v, want all three", seen)
			}
		})
	}
}

// TestNodeStoppedNoLoss: a crashed memcached node loses no session.
func TestNodeStoppedNoLoss(t *testing.T) {
	p := newPool(t, phptest.Memcache)
	g := p.gate(t, "")
	users := []*user{p.newUser(t), p.newUser(t), p.newUser(t)}
	for _, u := range users {
		u.visit(t, front(g), "/visit.php")
	}
	p.mc.Stop(0)
	for i := 2; i <= 10; i++ {
		for j, u := range users {
			if pg := u.visit(t, front(g), "/visit.php"); pg.Visits != i {
				t.Fatalf("user %d request %d after the stop: visits = %d", j, i, pg.Visits)
			}
		}
	}
}

// restartScenario makes every user visit visit.php 3 times, then restarts
// each memcached node empty in turn; after each restart every user (in
// parallel) visits 3 more times. base(u, k) is the URL base of user u's k-th
// request. It returns how many of the reads after restarts found the counter
// reset (lost), and how many there were.
func restartScenario(t *testing.T, p *pool, users []*user, base func(u, k int) string) (lost, reads int) {
	t.Helper()
	want := make([]int, len(users))
	ks := make([]int, len(users))
	round := func(counted bool) int {
		var mu sync.Mutex
		var wg sync.WaitGroup
		roundLost := 0
		for i, u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 3 {
					var pg page
					_, err := u.get(base(i, ks[i])+"/visit.php", &pg)
					ks[i]++
					if err != nil {
						t.Errorf("user %d: %v", i, err)
						return
					}
					how := "PHP read it empty"
					if u.id != "" && pg.ID != u.id {
						how = "the id was replaced"
					}
					u.id = pg.ID
					want[i]++
					if pg.Visits != want[i] {
						t.Logf("user %d on %s: visits %d, want %d: session lost (%s)", i, pg.Backend, pg.Visits, want[i], how)
						want[i] = pg.Visits
						mu.Lock()
						roundLost++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		if counted {
			lost += roundLost
			reads += 3 * len(users)
		}
		return roundLost
	}
	if n := round(false); n != 0 {
		t.Fatalf("%d sessions lost before any restart", n)
	}
	for node := range 3 {
		p.mc.Restart(node)
		t.Logf("node %d restarted empty: %d of %d reads lost data", node, round(true), 3*len(users))
	}
	return lost, reads
}

// TestRestartEachNodeEmptyNoLoss: with sessiongate repairing replicas, a node
// that restarts empty costs no session, and afterwards every node again
// holds every session.
func TestRestartEachNodeEmptyNoLoss(t *testing.T) {
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(h, func(t *testing.T) {
			p := newPool(t, h)
			g := p.gate(t, "")
			users := make([]*user, 20)
			for i := range users {
				users[i] = p.newUser(t)
			}
			lost, reads := restartScenario(t, p, users, func(int, int) string { return front(g) })
			if lost != 0 {
				t.Errorf("lost %d of %d session reads", lost, reads)
			}
			for node, addr := range p.mc.Addrs() {
				for i, u := range users {
					if m := mg(t, addr, p.dataKey(u.id)); !m.found {
						t.Errorf("node %d lacks user %d's session", node, i)
					}
				}
			}
		})
	}
}

// TestBackToBackRestartsNoLoss restarts the nodes in quick succession, so
// that a node restarts again before sessiongate has seen it back from its
// previous restart (its watcher redials with a 50 ms backoff).
func TestBackToBackRestartsNoLoss(t *testing.T) {
	p := newPool(t, phptest.Memcache)
	logs := &logBuffer{} // sessiongate's log and the test's steps, shown on failure
	g := startLogged(t, writeConfig(t, gateYAML(p, "")), logs)
	t.Cleanup(p.tr.CloseIdleConnections)
	step := func(format string, args ...any) {
		fmt.Fprintf(logs, "%s test: %s\n", time.Now().Format("15:04:05.000000"), fmt.Sprintf(format, args...))
	}
	u := p.newUser(t)
	for i := 1; i <= 30; i++ {
		step("visit %d", i)
		if pg := u.visit(t, front(g), "/visit.php"); pg.Visits != i {
			t.Fatalf("visit %d, after %d restarts: visits = %d: session lost; log:\n%s", i, i-1, pg.Visits, logs.String())
		}
		p.mc.Restart(i % 3)
		step("node %d restarted", i%3)
	}
}

// TestRestartWithoutSessiongateLoses runs the restart scenario straight
// against PHP to show that it does lose sessions there (Debian's memcache
// 4.0.5.2 reads a miss on the first server as an empty session).
func TestRestartWithoutSessiongateLoses(t *testing.T) {
	p := newPool(t, phptest.Memcache)
	users := make([]*user, 20)
	for i := range users {
		users[i] = p.newUser(t)
	}
	urls := p.php.URLs()
	lost, reads := restartScenario(t, p, users, func(u, k int) string { return urls[(u+k)%len(urls)] })
	t.Logf("without sessiongate: lost %d of %d session reads after restarts", lost, reads)
	if lost == 0 {
		t.Error("no session lost without sessiongate: the scenario does not exercise the restart bug")
	}
}

// TestBigCompressedSessionSurvivesRestart: a zlib-compressed session (flags 2)
// is repaired byte for byte with its flags.
func TestBigCompressedSessionSurvivesRestart(t *testing.T) {
	p := newPool(t, phptest.Memcache)
	g := p.gate(t, "")
	u := p.newUser(t)
	first := u.visit(t, front(g), "/big.php")
	if first.MD5 == "" {
		t.Fatalf("big.php answered %+v", first)
	}
	u.visit(t, front(g), "/big.php")
	checkFlags := func(when string) {
		t.Helper()
		for node, addr := range p.mc.Addrs() {
			m := mg(t, addr, u.id)
			if !m.found || m.flags != 2 || len(m.value) >= 30000 {
				t.Errorf("%s: node %d: found=%v flags=%d size=%d, want a compressed copy (flags 2)",
					when, node, m.found, m.flags, len(m.value))
			}
		}
	}
	checkFlags("before restarts")
	want := 2
	for node := range 3 {
		p.mc.Restart(node)
		want++
		pg := u.visit(t, front(g), "/big.php")
		if pg.Visits != want || pg.MD5 != first.MD5 {
			t.Fatalf("after restarting node %d: visits %d md5 %s, want %d %s", node, pg.Visits, pg.MD5, want, first.MD5)
		}
	}
	checkFlags("after restarts")
}

// TestForgedIDsNeverReachPHP: ids no node knows and ids PHP would not
// generate are removed before PHP sees them, so PHP never stores them (the
// memcache handler would adopt any of them, even in strict mode).
func TestForgedIDsNeverReachPHP(t *testing.T) {
	p := newPool(t, phptest.Memcache)
	g := p.gate(t, "")
	unknown := newID(t)

	// Control: straight to PHP, the unknown id is adopted and stored.
	adopted := newID(t)
	res, body := rawGet(t, strings.TrimPrefix(p.php.URL(0), "http://"), "/visit.php", "PHPSESSID="+adopted)
	if res.StatusCode != 200 || !strings.Contains(string(body), adopted) || !mg(t, p.mc.Addr(0), adopted).found {
		t.Fatalf("control: PHP did not adopt a forged id (%s: %s); the test proves nothing", res.Status, body)
	}

	forged := map[string]string{
		"unknown 26-char id":     unknown,
		"unknown id with comma":  unknown[:10] + "," + unknown[11:],
		"unknown id %-encoded":   unknown[:10] + "%2C" + unknown[11:],
		"path traversal":         "../../etc/passwd",
		"encoded CRLF injection": "%0d%0aset x 0 0 1",
		"300 characters":         strings.Repeat("a", 300),
		"quoted with spaces":     `"abc def ghi jkl mno pqr stu"`,
		"quotes and brackets":    `ab'c"d<e>f\ghijklmnopqrstuvwxyz`,
		"non-UTF-8 bytes":        "\xff\xfe\xc3" + unknown[3:],
	}
	before := currItems(t, p.mc.Addrs())
	fresh := 0
	for name, v := range forged {
		cookie := "PHPSESSID=" + v + "; theme=dark"
		res, body := rawGet(t, g.addrs.front, "/peek.php", cookie)
		var got map[string]string
		if err := json.Unmarshal(body, &got); err != nil || res.StatusCode != 200 {
			t.Fatalf("%s: peek.php %s %q: %v", name, res.Status, body, err)
		}
		if _, ok := got["PHPSESSID"]; ok || got["theme"] != "dark" {
			t.Errorf("%s: PHP received cookies %q, want only theme=dark", name, got)
		}
		res, body = rawGet(t, g.addrs.front, "/visit.php", cookie)
		var pg page
		if err := json.Unmarshal(body, &pg); err != nil || pg.Visits != 1 || pg.ID == v || len(pg.ID) != 26 {
			t.Errorf("%s: visit.php %s %q: want a fresh session", name, res.Status, body)
		}
		fresh++
	}
	after := currItems(t, p.mc.Addrs())
	for node := range before {
		// Each fresh session is a data key and a lock key on every node; nothing else.
		if d := after[node] - before[node]; d != 2*fresh {
			t.Errorf("node %d: curr_items grew by %d, want %d (%d fresh sessions)", node, d, 2*fresh, fresh)
		}
	}
	for _, addr := range p.mc.Addrs() {
		for _, k := range []string{unknown, unknown + ".lock", "x", unknown[:10] + "," + unknown[11:]} {
			if mg(t, addr, k).found {
				t.Errorf("%s holds key %q", addr, k)
			}
		}
	}
}

// TestSessionBeingCreatedNotStripped: an id whose lock key exists but whose
// data does not yet (PHP is writing it) reaches PHP; an id with neither key
// does not.
func TestSessionBeingCreatedNotStripped(t *testing.T) {
	p := newPool(t, phptest.Memcache)
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(h, func(t *testing.T) {
			p.handler = h // only sessiongate's key naming differs; peek.php starts no session
			g := p.gate(t, "")
			creating, nothing := newID(t), newID(t)
			lockKey, flags := creating+".lock", 768 // pecl memcache: an integer (flags 768), held at >= 1
			if h == phptest.Memcached {
				lockKey, flags = "memc.sess.key.lock."+creating, 0
			}
			if line := mcCmd(t, p.mc.Addr(1), fmt.Sprintf("set %s %d 15 1\r\n1\r\n", lockKey, flags)); line != "STORED" {
				t.Fatalf("set lock: %q", line)
			}
			for id, want := range map[string]bool{creating: true, nothing: false} {
				_, body := rawGet(t, g.addrs.front, "/peek.php", "PHPSESSID="+id)
				var got map[string]string
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatalf("peek.php: %q: %v", body, err)
				}
				if reached := got["PHPSESSID"] == id; reached != want {
					t.Errorf("id with lock key=%v: reached PHP = %v (cookies %q)", want, reached, got)
				}
			}
		})
	}
}

// TestDeleteLogsOut: the admin API shows a session on every node and
// deleting it logs the user out.
func TestDeleteLogsOut(t *testing.T) {
	p := newPool(t, phptest.Memcache)
	g := p.gate(t, "")
	u := p.newUser(t)
	for range 3 {
		u.visit(t, front(g), "/visit.php")
	}
	api := "http://" + g.addrs.admin + "/api/sessions/" + u.id
	call := func(method, token string) (int, []byte) {
		t.Helper()
		return adminDo(t, method, api, token)
	}
	code, body := call("GET", adminToken)
	var entries []struct {
		Node    string `json:"node"`
		Present bool   `json:"present"`
		Flags   uint32 `json:"flags"`
		TTL     int64  `json:"ttl"`
	}
	if err := json.Unmarshal(body, &entries); code != 200 || err != nil || len(entries) != 3 {
		t.Fatalf("GET session: %d %s (%v)", code, body, err)
	}
	for _, e := range entries {
		if !e.Present || e.TTL < 1000 {
			t.Errorf("before delete: %+v, want present with a ~1440 s TTL", e)
		}
	}
	if code, _ := call("DELETE", ""); code != http.StatusUnauthorized {
		t.Errorf("DELETE without token = %d, want 401", code)
	}
	if code, _ := call("DELETE", "wrong-token"); code != http.StatusUnauthorized {
		t.Errorf("DELETE with a wrong token = %d, want 401", code)
	}
	if !mg(t, p.mc.Addr(0), u.id).found {
		t.Fatal("a refused DELETE removed the session")
	}
	if code, body := call("DELETE", adminToken); code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", code, body)
	}
	for _, addr := range p.mc.Addrs() {
		if mg(t, addr, u.id).found || mg(t, addr, u.id+".lock").found {
			t.Errorf("%s still holds the session after DELETE", addr)
		}
	}
	old := u.id
	if pg := u.visit(t, front(g), "/visit.php"); pg.Visits != 1 || pg.ID == old {
		t.Errorf("after DELETE: %+v, want a fresh session at visits=1", pg)
	}
}

// TestRenewal: a live session's cookie is re-issued persistent and every
// replica's TTL is renewed with it, at most once per renew_after.
func TestRenewal(t *testing.T) {
	p := newPool(t, phptest.Memcache)
	g := p.gate(t, "  cookie_lifetime: 1h\n  renew_after: 1s\n  lifetime: 24m\n"+
		"  signing_keys: [\"0123456789abcdef0123456789abcdef-test\"]\n")
	u := p.newUser(t)
	u.visit(t, front(g), "/visit.php")

	sessionCookie := func(res *http.Response) *http.Cookie {
		for _, c := range res.Cookies() {
			if c.Name == "PHPSESSID" {
				return c
			}
		}
		return nil
	}
	res, err := u.get(front(g)+"/peek.php", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := sessionCookie(res); c == nil || c.Value != u.id || c.MaxAge != 3600 {
		t.Fatalf("live session: Set-Cookie %q, want PHPSESSID=%s with Max-Age=3600", res.Header["Set-Cookie"], u.id)
	}
	if res, err = u.get(front(g)+"/peek.php", nil); err != nil {
		t.Fatal(err)
	}
	if c := sessionCookie(res); c != nil {
		t.Errorf("renewed again within renew_after: %q", res.Header["Set-Cookie"])
	}

	for _, addr := range p.mc.Addrs() {
		if line := mcCmd(t, addr, "touch "+u.id+" 100\r\n"); line != "TOUCHED" {
			t.Fatalf("touch on %s: %q", addr, line)
		}
	}
	// Without the marker cookie the renewal is due again (as after renew_after).
	res, _ = rawGet(t, g.addrs.front, "/peek.php", "PHPSESSID="+u.id)
	if c := sessionCookie(res); c == nil || c.MaxAge != 3600 {
		t.Fatalf("renewal: Set-Cookie %q, want PHPSESSID with Max-Age=3600", res.Header["Set-Cookie"])
	}
	for node, addr := range p.mc.Addrs() {
		if m := mg(t, addr, u.id); !m.found || m.ttl < 1000 {
			t.Errorf("node %d: ttl %d after renewal, want ~1440", node, m.ttl)
		}
	}
}

// TestHungNodeAddsAtMostTimeout: with memcached.restart_hold 0, a memcached
// node that accepts but never answers (SIGSTOP) delays a session lookup by
// about memcached.timeout, not more, and sessions keep working. (By default
// requests with a session wait for a hung node, at most restart_hold once
// per outage, so that PHP's lock commands do not queue in it: see
// TestResumedNodeLockReleased.)
func TestHungNodeAddsAtMostTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	p := newPool(t, phptest.Memcache)
	yaml := strings.Replace(gateYAML(p, ""), "memcached:\n", "memcached:\n  restart_hold: 0s\n", 1)
	g := start(t, writeConfig(t, yaml)) // every request looks the session up afresh
	t.Cleanup(p.tr.CloseIdleConnections)
	users := make([]*user, 10)
	for i := range users {
		users[i] = p.newUser(t)
		users[i].visit(t, front(g), "/visit.php")
	}
	p.mc.Pause(1)
	t.Cleanup(func() { p.mc.Resume(1) })

	// peek.php starts no session, so its latency is sessiongate's alone.
	bound := 5*timeout + 300*time.Millisecond
	var worst time.Duration
	for i, u := range users {
		t0 := time.Now()
		if _, err := u.get(front(g)+"/peek.php", nil); err != nil {
			t.Fatal(err)
		}
		d := time.Since(t0)
		worst = max(worst, d)
		if d > bound {
			t.Errorf("request %d took %v with a hung node, bound %v", i, d, bound)
		}
	}
	t.Logf("worst lookup latency with a hung node: %v (memcached.timeout %v)", worst, timeout)
	// PHP itself waits its own 1 s connection timeout on the hung node, so
	// one visit shows the counter going on.
	if pg := users[0].visit(t, front(g), "/visit.php"); pg.Visits != 2 {
		t.Errorf("visits %d with a hung node, want 2", pg.Visits)
	}
}

// newID returns a random id in PHP's 26-character, 5-bits-per-character form.
func newID(t testing.TB) string {
	const alphabet = "0123456789abcdefghijklmnopqrstuv"
	b := make([]byte, 26)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = alphabet[b[i]%32]
	}
	return string(b)
}

// rawGet sends a GET with the Cookie header exactly as given (the Go client
// would refuse some forged values) and returns the response and body.
func rawGet(t testing.TB, addr, path, cookie string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nCookie: %s\r\nConnection: close\r\n\r\n", path, addr, cookie)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

// mcConn dials the memcached at addr for one command.
func mcConn(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	return c, bufio.NewReader(c)
}

// mcCmd sends one request to addr and returns the first response line.
func mcCmd(t testing.TB, addr, req string) string {
	t.Helper()
	c, r := mcConn(t, addr)
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("memcached %s: %v", addr, err)
	}
	return strings.TrimRight(line, "\r\n")
}

// metaItem is what `mg <key> v f t` returned.
type metaItem struct {
	found bool
	value []byte
	flags uint32
	ttl   int64 // -1 = never expires
}

// mg reads key from the memcached at addr with the meta protocol.
func mg(t testing.TB, addr, key string) metaItem {
	t.Helper()
	c, r := mcConn(t, addr)
	defer c.Close()
	fmt.Fprintf(c, "mg %s v f t\r\n", key)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("mg on %s: %v", addr, err)
	}
	f := strings.Fields(line)
	if len(f) > 0 && f[0] == "EN" {
		return metaItem{}
	}
	if len(f) < 2 || f[0] != "VA" {
		t.Fatalf("mg %s on %s: %q", key, addr, line)
	}
	size, _ := strconv.Atoi(f[1])
	m := metaItem{found: true, value: make([]byte, size+2)}
	for _, tok := range f[2:] {
		n, _ := strconv.ParseInt(tok[1:], 10, 64)
		switch tok[0] {
		case 'f':
			m.flags = uint32(n)
		case 't':
			m.ttl = n
		}
	}
	if _, err := io.ReadFull(r, m.value); err != nil {
		t.Fatalf("mg %s on %s: %v", key, addr, err)
	}
	m.value = m.value[:size]
	return m
}

// currItems returns each node's stats curr_items.
func currItems(t testing.TB, addrs []string) []int {
	t.Helper()
	out := make([]int, len(addrs))
	for i, addr := range addrs {
		c, r := mcConn(t, addr)
		io.WriteString(c, "stats\r\n")
		for range 200 {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("stats on %s: %v", addr, err)
			}
			if strings.HasPrefix(line, "END") {
				break
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "STAT curr_items "); ok {
				out[i], _ = strconv.Atoi(v)
			}
		}
		c.Close()
	}
	return out
}
