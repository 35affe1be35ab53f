package main

// A memcached node that hangs and resumes, with pecl memcache: the lock
// commands PHP queued on it before failing over run when it resumes, and
// leave a lock nobody holds (issue 14).

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

// lockNode returns the index of the node PHP takes session id's lock on (the
// first in its probe order), by holding the lock with a slow request.
func (p *pool) lockNode(t *testing.T, base string, u *user) int {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := u.get(base+"/slow.php?ms=600", nil)
		done <- err
	}()
	held := p.waitLocked(t, u.id)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, a := range p.mc.Addrs() {
		if _, ok := held[a]; ok && len(held) == 1 {
			return i
		}
	}
	t.Fatalf("lock held on %v, want one node", held)
	return -1
}

// TestResumedNodeLockReleased: the node that holds a session's lock hangs
// while a request of the session is in PHP; PHP gives up on it, fails over
// and answers. When the node resumes it runs PHP's queued lock commands:
// the lock is taken again for nobody. The session's next request must get
// through within a second (without the release it waits for the lock's 15 s
// TTL), and count on: the resumed node's copy, which missed the write made
// during the hang, is brought up to date before PHP reads it. Then a request is in PHP, waiting for the hung node,
// when it resumes soon enough for PHP to take the lock there: that live lock
// must be left alone until the request ends.
func TestResumedNodeLockReleased(t *testing.T) {
	p := onePHP(t, phptest.Memcache)
	logs := &logSink{}
	g := startLogged(t, writeConfig(t, gateYAML(p, "")), logs)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	const released = "released a session lock a resumed memcached node took"
	u := p.newUser(t)
	base := front(g)
	u.visit(t, base, "/visit.php")
	n := p.lockNode(t, base, u)
	pg := u.visit(t, base, "/visit.php")
	want := pg.Visits + 1

	p.mc.Pause(n)
	paused := true
	t.Cleanup(func() {
		if paused {
			p.mc.Resume(n)
		}
	})
	start := time.Now()
	pg = u.visit(t, base, "/visit.php") // PHP waits for the hung node, then fails over
	t.Logf("request during the hang took %v", time.Since(start))
	if pg.Visits != want {
		t.Fatalf("during the hang: visits %d, want %d", pg.Visits, want)
	}
	p.mc.Resume(n)
	paused = false
	t.Logf("after the resume, lock held on %v", p.lockCAS(t, u.id))

	start = time.Now()
	pg = u.visit(t, base, "/visit.php")
	took := time.Since(start)
	if pg.Visits != want+1 {
		t.Errorf("next request: visits %d, want %d", pg.Visits, want+1)
	}
	if took > time.Second {
		t.Errorf("next request took %v, want < 1s", took)
	}
	t.Logf("next request after the resume took %v", took)
	if c := strings.Count(logs.String(), released); c != 1 {
		t.Errorf("%d replayed locks released, want 1", c)
	}

	// A live lock: PHP's lock command waits in the hung node, which resumes
	// before PHP's 1 s timeout, so the request takes the lock there.
	live := make(chan error, 1)
	p.mc.Pause(n)
	paused = true
	go func() {
		var pg page
		_, err := u.get(base+"/slow.php?ms=1500", &pg)
		live <- err
	}()
	time.Sleep(600 * time.Millisecond) // the hang: PHP's lock command waits in it
	p.mc.Resume(n)
	paused = false
	held := p.waitLocked(t, u.id)
	if _, ok := held[p.mc.Addr(n)]; !ok {
		t.Fatalf("the live request's lock is on %v, want on the resumed node %s", held, p.mc.Addr(n))
	}
	// The release reads locks resumeSettle (50 ms) after the return; the
	// request holds its lock 1.5 s.
	time.Sleep(300 * time.Millisecond)
	if now := p.lockCAS(t, u.id); fmt.Sprint(now) != fmt.Sprint(held) {
		t.Errorf("live request's lock changed: %v -> %v", held, now)
	}
	if err := <-live; err != nil {
		t.Errorf("live request: %v", err)
	}
	if c := strings.Count(logs.String(), released); c != 1 {
		t.Errorf("%d replayed locks released, want still 1", c)
	}
	if pg := u.visit(t, base, "/visit.php"); pg.Visits != want+2 {
		t.Errorf("after the live request: visits %d, want %d", pg.Visits, want+2)
	}
}
