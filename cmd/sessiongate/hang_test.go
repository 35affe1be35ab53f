package main

// A memcached node that hangs longer than restart_hold under traffic: the
// session writes PHP sent it stay queued in its socket buffers and run when
// it resumes (issue 14).

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

// copies describes session id's copy on every node but skip (-1: none): its
// visits counter, remaining TTL and CAS, for the log.
func (p *pool) copies(t testing.TB, id string, skip int) string {
	t.Helper()
	visits := regexp.MustCompile(`visits\|i:(\d+)`)
	var b strings.Builder
	for i, addr := range p.mc.Addrs() {
		if i == skip {
			fmt.Fprintf(&b, "%s: hung; ", addr)
			continue
		}
		c, r := mcConn(t, addr)
		fmt.Fprintf(c, "mg %s t c v\r\n", p.dataKey(id))
		head, _ := r.ReadString('\n')
		v := "-"
		if strings.HasPrefix(head, "VA") {
			line, _ := r.ReadString('\n')
			if m := visits.FindStringSubmatch(line); m != nil {
				v = m[1]
			}
		}
		c.Close()
		fmt.Fprintf(&b, "%s: visits=%s %s; ", addr, v, strings.TrimSpace(head))
	}
	return b.String()
}

// TestHangLongerThanHoldNoLostUpdate: a request of a session is in PHP when
// a node hangs (a replica, or the node PHP locks and reads the session on);
// its write to that node queues there. The hang outlasts restart_hold, so
// the session's next requests go to PHP without the node and count on, on
// the others. When the node resumes, the queued writes run. The counter
// must never go back: no value is seen twice, and every request after the
// resume counts past everything before. memcached runs 4 threads, as in
// production; PHP is configured as deploy/php says.
//
// pecl memcache sends absolute expiry times, so its replays never look
// newer than they are. pecl memcached sends relative TTLs and waits for the
// hung node (libmemcached's 5 s per operation): with a hang of about three
// such timeouts, a request that follows one that timed out on the node
// writes the others without it, and the node then runs the older queued SET
// as it resumes, its TTL counted from then, longer than the newer copies'
// (seen here with memcached -vv on the node: counter 5 on the others, the
// replay of 4 on the node, all three at 4 after the next lookup: once in
// three runs). That case is not run here: in the same hang pecl memcached
// also fails session_start on lock timeouts ("Failed to write session lock:
// A TIMEOUT OCCURRED"), at random, and the counter starts again at 1 while
// the old copies keep theirs (PHP began a new session: lost in PHP,
// whatever the edge does). The
// edge's part, not copying the replay over the newer copies, is tested in
// sessionstore (TestReplayedWriteNotSpread) with the replay made by a real
// memcached from a set queued while it was stopped.
func TestHangLongerThanHoldNoLostUpdate(t *testing.T) {
	for _, c := range []struct {
		handler  string
		lockNode bool
		hang     time.Duration
	}{
		{phptest.Memcache, false, 6 * time.Second},
		{phptest.Memcache, true, 6 * time.Second},
	} {
		t.Run(fmt.Sprintf("%s/lock-node=%v", c.handler, c.lockNode), func(t *testing.T) {
			hangLongerThanHold(t, c.handler, c.lockNode, c.hang)
		})
	}
}

func hangLongerThanHold(t *testing.T, handler string, lockNode bool, hangFor time.Duration) {
	mc := memtest.StartArgs(t, 3, "-vv", "-t", "4")
	p := &pool{handler: handler, mc: mc, tr: &http.Transport{}}
	extra := deployIni(t, zlIniDir+"/"+handler+"-session.ini")
	p.php = phptest.Start(t, phptest.Options{N: 1, Handler: handler, Servers: mc.Addrs(), Extra: extra})
	t.Cleanup(p.tr.CloseIdleConnections)
	logs := &logSink{}
	g := startLogged(t, writeConfig(t, gateYAML(p, "")), logs)
	base := front(g)
	u := p.newUser(t)
	u.c.Timeout = 2 * hangFor
	u.visit(t, base, "/visit.php")
	l := p.lockNode(t, base, u)
	n := (l + 1) % 3 // a replica: PHP reads the lock node
	if lockNode {
		n = l
	}
	first := u.visit(t, base, "/visit.php").Visits
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Log(logs.String())
		p.mc.Stop(n)
		for line := range strings.SplitSeq(p.mc.Output(n), "\n") {
			if strings.Contains(line, u.id) && !strings.Contains(line, "mg ") {
				t.Log("hung node: ", line) // what ran there, in order
			}
		}
	})

	var mu sync.Mutex
	var seen []int // visits answered, in the order the answers came
	get := func(path, when string) {
		var pg zlPage
		st := time.Now()
		_, err := u.get(base+path, &pg)
		t.Logf("%s: %s took %v: visits %d, error %v %q", when, path, time.Since(st).Round(time.Millisecond), pg.Visits, err, pg.Error)
		if err == nil {
			mu.Lock()
			seen = append(seen, pg.Visits)
			mu.Unlock()
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { get("/count.php?ms=800", "in PHP at the hang") })
	p.waitLocked(t, u.id)
	p.mc.Pause(n)
	paused, at := true, time.Now()
	t.Cleanup(func() {
		if paused {
			p.mc.Resume(n)
		}
	})
	for i := 0; i < 20 && time.Since(at) < hangFor-time.Second; i++ {
		get("/count.php", fmt.Sprintf("during the hang, at %v", time.Since(at).Round(time.Millisecond)))
	}
	wg.Wait()
	time.Sleep(time.Until(at.Add(hangFor)))
	t.Logf("before the resume: %s", p.copies(t, u.id, n))
	p.mc.Resume(n)
	paused = false
	time.Sleep(100 * time.Millisecond) // the queued commands run at once
	t.Logf("after the resume: %s", p.copies(t, u.id, -1))
	before := slices.Max(append([]int{first}, seen...))
	for i := range 3 {
		get("/count.php", fmt.Sprintf("after the resume #%d", i+1))
	}
	after := seen[len(seen)-3:]
	if len(seen) < 3 || !slices.Equal(after, []int{before + 1, before + 2, before + 3}) {
		t.Errorf("after the resume: visits %v, want %d, %d, %d (all seen: %v)", after, before+1, before+2, before+3, seen)
	}
	s := slices.Sorted(slices.Values(seen))
	if len(slices.Compact(s)) != len(seen) {
		t.Errorf("a visits value seen twice (a lost update): %v", seen)
	}
	t.Logf("visits seen %v after %d; copies: %s", seen, first, p.copies(t, u.id, -1))
}
