package main

// Session locks and kills end to end: real memcached, real PHP (php -S with
// Debian's memcache/memcached session handlers), real sessiongate.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

// onePHP is a pool of 3 memcached nodes with a single PHP backend, so that a
// failed request has no other backend to be retried on.
func onePHP(t *testing.T, handler string) *pool {
	t.Helper()
	mc := memtest.Start(t, 3)
	p := &pool{handler: handler, mc: mc, tr: &http.Transport{}}
	p.php = phptest.Start(t, phptest.Options{N: 1, Handler: handler, Servers: mc.Addrs()})
	t.Cleanup(p.tr.CloseIdleConnections)
	return p
}

// lockKey is the key PHP's handler locks session id with.
func (p *pool) lockKey(id string) string {
	if p.handler == phptest.Memcached {
		return "memc.sess.key.lock." + id
	}
	return id + ".lock"
}

// lockCAS returns the CAS of id's lock key on each node where the lock is
// held (memcache: value >= 1; memcached: the key exists).
func (p *pool) lockCAS(t testing.TB, id string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, addr := range p.mc.Addrs() {
		f := strings.Fields(mcCmd(t, addr, "mg "+p.lockKey(id)+" c v\r\n"))
		if len(f) == 0 || f[0] != "VA" {
			continue
		}
		c, r := mcConn(t, addr) // again, for the value line
		fmt.Fprintf(c, "mg %s c v\r\n", p.lockKey(id))
		r.ReadString('\n')
		v, _ := r.ReadString('\n')
		c.Close()
		if n, _ := strconv.Atoi(strings.TrimSpace(v)); p.handler == phptest.Memcache && n < 1 {
			continue
		}
		for _, tok := range f[2:] {
			if strings.HasPrefix(tok, "c") {
				out[addr], _ = strconv.ParseUint(tok[1:], 10, 64)
			}
		}
	}
	return out
}

// waitLocked waits until PHP holds id's lock, and returns it as two reads
// in a row saw it (pecl memcache sets the lock again right after its incr
// took it).
func (p *pool) waitLocked(t *testing.T, id string) map[string]uint64 {
	t.Helper()
	var last string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		held := p.lockCAS(t, id)
		if len(held) > 0 && fmt.Sprint(held) == last {
			return held
		}
		last = fmt.Sprint(held)
	}
	t.Fatal("PHP never took the session lock")
	return nil
}

// TestOrphanedLockReleased: the PHP backend is killed while its request holds
// the session lock; once it is started again, that session's next request
// gets through within a second. Without the release, pecl memcache waits for
// the lock's 15 s TTL and pecl memcached's session_start fails after 0.75 s.
func TestOrphanedLockReleased(t *testing.T) {
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(h, func(t *testing.T) {
			p := onePHP(t, h)
			g := p.gate(t, "")
			u := p.newUser(t)
			if pg := u.visit(t, front(g), "/visit.php"); pg.Visits != 1 {
				t.Fatalf("first visit: %+v", pg)
			}
			id := u.id

			failed := make(chan int, 1)
			go func() {
				res, err := u.c.Get(front(g) + "/slow.php?ms=20000")
				if err != nil {
					failed <- 0
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				failed <- res.StatusCode
			}()
			p.waitLocked(t, id)
			p.php.Stop(0) // PHP dies holding the lock
			select {
			case code := <-failed:
				if code != http.StatusBadGateway {
					t.Fatalf("request whose backend died: %d, want 502", code)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the request whose backend died did not end")
			}
			if held := p.lockCAS(t, id); len(held) > 0 {
				t.Errorf("lock still held after the backend died: %v", held)
			}
			p.php.Start(0)

			start := time.Now()
			pg := u.visit(t, front(g), "/visit.php")
			took := time.Since(start)
			if pg.ID != id || pg.Visits != 2 {
				t.Errorf("next request: %+v, want session %s at visits=2", pg, id)
			}
			if took > time.Second {
				t.Errorf("next request took %v, want < 1s", took)
			}
			t.Logf("%s: next request after the backend's restart took %v", h, took)
		})
	}
}

// resetter is a backend that reads a request head and resets the connection,
// as a PHP backend killed mid-request does.
func resetter(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReader(c)
			for range 100 {
				line, err := r.ReadString('\n')
				if err != nil || line == "\r\n" {
					break
				}
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	return "http://" + l.Addr().String()
}

// gateTo starts sessiongate on p's memcached pool in front of the backends
// at urls.
func gateTo(t *testing.T, p *pool, session string, urls ...string) *running {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nserver:\n  shutdown_grace: 5s\nadmin:\n  listen: 127.0.0.1:0\n  token: %s\nbackends:\n", adminToken)
	for i, u := range urls {
		fmt.Fprintf(&b, "  - name: be%d\n    url: %s\n", i, u)
	}
	fmt.Fprintf(&b, "session:\n  handler: %s\n%s", p.handler, session)
	b.WriteString("memcached:\n  timeout: 100ms\n  servers:\n")
	for _, a := range p.mc.Addrs() {
		fmt.Fprintf(&b, "    - %s\n", a)
	}
	r := start(t, writeConfig(t, b.String()))
	t.Cleanup(p.tr.CloseIdleConnections)
	return r
}

// TestLiveLockNeverReleased: while a live PHP request holds the session lock
// (through instance A), a request of the same session whose backend fails
// (through instance B, whose backend resets) leaves the lock alone: B's
// check saw the lock held, so its request could only have waited for it.
func TestLiveLockNeverReleased(t *testing.T) {
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(h, func(t *testing.T) {
			p := onePHP(t, h)
			a := p.gate(t, "")
			b := gateTo(t, p, "", resetter(t))
			u := p.newUser(t)
			u.visit(t, front(a), "/visit.php")
			id := u.id

			live := make(chan error, 1)
			go func() {
				var pg page
				_, err := u.get(front(a)+"/slow.php?ms=1500", &pg)
				live <- err
			}()
			held := p.waitLocked(t, id)
			res, _ := rawGet(t, b.addrs.front, "/visit.php", "PHPSESSID="+id)
			if res.StatusCode != http.StatusBadGateway {
				t.Fatalf("request through the resetting backend: %d, want 502", res.StatusCode)
			}
			if now := p.lockCAS(t, id); fmt.Sprint(now) != fmt.Sprint(held) {
				t.Errorf("live request's lock changed: %v -> %v", held, now)
			}
			if err := <-live; err != nil {
				t.Errorf("live request: %v", err)
			}
		})
	}
}

// TestKillSeenByOtherInstance: a session killed through instance A's admin
// API is never forwarded by instance B again, though B had it in its
// verification cache: B's next request with the killed id reaches PHP
// without it, gets a fresh id, and no key of the old id is left on any node.
func TestKillSeenByOtherInstance(t *testing.T) {
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(h, func(t *testing.T) {
			p := newPool(t, h)
			a := p.gate(t, "  verify_ttl: 1m\n")
			b := p.gate(t, "  verify_ttl: 1m\n")
			u := p.newUser(t)
			u.visit(t, front(a), "/visit.php")
			old := u.id
			for range 2 {
				u.visit(t, front(b), "/visit.php") // B verifies, then answers from its cache
			}

			if code, _ := adminDo(t, http.MethodDelete, "http://"+a.addrs.admin+"/api/sessions/"+old, adminToken); code != http.StatusOK && code != http.StatusNoContent {
				t.Fatalf("DELETE through A: %d", code)
			}

			res, body := rawGet(t, b.addrs.front, "/visit.php", "PHPSESSID="+old)
			var fresh string
			for _, c := range res.Cookies() {
				if c.Name == "PHPSESSID" {
					fresh = c.Value
				}
			}
			if fresh == "" || fresh == old || !strings.Contains(string(body), `"visits":1`) {
				t.Errorf("through B after the kill: Set-Cookie %q, body %s; want a fresh session", res.Header["Set-Cookie"], body)
			}
			for _, addr := range p.mc.Addrs() {
				if mg(t, addr, p.dataKey(old)).found || mg(t, addr, p.lockKey(old)).found {
					t.Errorf("%s holds a key of the killed session", addr)
				}
			}
		})
	}
}

// nodeStates returns the memcached nodes' states as /api/status shows them.
func nodeStates(t *testing.T, admin string) []string {
	t.Helper()
	res, err := http.Get("http://" + admin + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var st struct{ Nodes []struct{ State string } }
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(st.Nodes))
	for i, n := range st.Nodes {
		out[i] = n.State
	}
	return out
}

// TestOrphanedLockReleasedAfterTimeouts: a PHP backend dies while its request
// holds the session lock, at a moment when every memcached node is marked down
// by timeouts (all paused here; seen at load average 20 with nodes only slow).
// When the nodes answer again, the lock is released before sessiongate retries
// the request on the other backend: the retry gets the session and counts.
// Without the release, the retry waits at PHP for the dead request's lock
// (pecl memcached gives up after 0.75 s, pecl memcache waits for its 15 s TTL).
func TestOrphanedLockReleasedAfterTimeouts(t *testing.T) {
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(h, func(t *testing.T) {
			mc := memtest.Start(t, 3)
			p := &pool{handler: h, mc: mc, tr: &http.Transport{}}
			p.php = phptest.Start(t, phptest.Options{N: 2, Handler: h, Servers: mc.Addrs()})
			t.Cleanup(p.tr.CloseIdleConnections)
			// A hold long enough for the script below on a loaded machine.
			g := start(t, writeConfig(t, gateYAML(p, "")+"  restart_hold: 5s\n"))
			t.Cleanup(p.tr.CloseIdleConnections)
			u := p.newUser(t)
			if pg := u.visit(t, front(g), "/visit.php"); pg.Visits != 1 {
				t.Fatalf("first visit: %+v", pg)
			}
			id := u.id

			type answer struct {
				pg  zlPage
				err error
				at  time.Time
			}
			slow := make(chan answer, 1)
			go func() {
				pg, err := zlGet(u.c, front(g)+"/count.php?ms=1500")
				slow <- answer{pg, err, time.Now()}
			}()
			holder := -1
			for deadline := time.Now().Add(5 * time.Second); holder < 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("no backend took the session within 5s")
				}
				for i := range 2 {
					if slices.Contains(p.php.Held(i), id) {
						holder = i
					}
				}
			}
			for i := range 3 {
				mc.Pause(i)
			}
			resumed := false
			resume := func() {
				if !resumed {
					for i := range 3 {
						mc.Resume(i)
					}
					resumed = true
				}
			}
			t.Cleanup(resume)
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if st := nodeStates(t, g.addrs.admin); !slices.Contains(st, "up") {
					break
				} else if time.Now().After(deadline) {
					t.Fatalf("nodes still %v 5s after they were paused", st)
				}
			}
			p.php.Stop(holder)                 // PHP dies holding the lock, every node down
			time.Sleep(300 * time.Millisecond) // the nodes stay away a moment
			resume()
			back := time.Now()

			a := <-slow // bounded by the client's timeout
			if a.err != nil || !a.pg.Started || a.pg.Error != "" || a.pg.Visits != 2 || a.pg.ID != id {
				t.Fatalf("the retried request: %+v, %v; want session %s started, counted to 2, no PHP error", a.pg, a.err, id)
			}
			t.Logf("%s: the retried request answered %v after the nodes resumed (it sleeps 1.5 s)", h, a.at.Sub(back).Round(time.Millisecond))
			if held := p.lockCAS(t, id); len(held) > 0 {
				t.Errorf("lock held after the retried request: %v", held)
			}
			if pg := u.visit(t, front(g), "/visit.php"); pg.ID != id || pg.Visits != 3 {
				t.Errorf("next visit: %+v, want session %s at visits=3", pg, id)
			}
		})
	}
}
