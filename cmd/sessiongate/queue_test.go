package main

// The session queue at the edge end to end: real memcached, real PHP (php -S
// with 4 workers and Debian's memcache/memcached session handlers), real
// sessiongate.

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

// queueWaiters reads sessiongate_session_queue_waiters from r's /metrics.
func queueWaiters(t *testing.T, r *running) int {
	t.Helper()
	res, err := http.Get("http://" + r.addrs.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "sessiongate_session_queue_waiters "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatal("/metrics lacks sessiongate_session_queue_waiters")
	return 0
}

// waitWaiters waits (5 s at most) until n requests wait in r's queue.
func waitWaiters(t *testing.T, r *running, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if queueWaiters(t, r) == n {
			return
		}
	}
	t.Fatalf("never saw %d requests waiting in the queue (now %d)", n, queueWaiters(t, r))
}

// status gets base+path and returns the status code and Retry-After.
func (u *user) status(t *testing.T, url string) (int, string) {
	res, err := u.c.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, ""
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, res.Header.Get("Retry-After")
}

// TestQueueBurstRealPHP: 16 requests of one session sent at once, each doing
// 20 ms of work in PHP, all succeed and run in the order they arrived, with
// either handler. (Without the queue, pecl memcached's session_start fails
// for those that wait for the lock longer than ~0.75 s, and the order is
// whatever PHP's lock polling makes it.)
func TestQueueBurstRealPHP(t *testing.T) {
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(h, func(t *testing.T) {
			p := onePHP(t, h)
			g := p.gate(t, "")
			u := p.newUser(t)
			u.visit(t, front(g), "/visit.php")
			// A burst as a page fires it: all at once.
			const n = 16
			var wg sync.WaitGroup
			statuses := make([]int, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					statuses[i], _ = u.status(t, fmt.Sprintf("%s/seq.php?ms=20&n=b%d", front(g), i))
				}()
			}
			wg.Wait()
			for i, s := range statuses {
				if s != http.StatusOK {
					t.Errorf("burst request %d: status %d", i, s)
				}
			}
			// Arrival order: the first request holds the slot long enough for
			// the others to queue behind it one after another.
			for i := range n {
				ms := 20
				if i == 0 {
					ms = 6000 // 15 arrivals, one after another, at load 10+ with -race took over 3 s
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					statuses[i], _ = u.status(t, fmt.Sprintf("%s/seq.php?ms=%d&n=%d", front(g), ms, i))
				}()
				if i > 0 {
					waitWaiters(t, g, i) // request i is queued: arrival order known
				} else {
					p.waitLocked(t, u.id)
				}
			}
			wg.Wait()
			for i, s := range statuses {
				if s != http.StatusOK {
					t.Errorf("request %d: status %d", i, s)
				}
			}
			var pg struct{ Seq []string }
			if _, err := u.get(front(g)+"/seq.php?n=last", &pg); err != nil {
				t.Fatal(err)
			}
			want := make([]string, 0, n+1)
			for i := range n {
				want = append(want, strconv.Itoa(i))
			}
			want = append(want, "last")
			if len(pg.Seq) != 2*n+1 {
				t.Fatalf("PHP ran %d requests of the session, want %d: %v", len(pg.Seq), 2*n+1, pg.Seq)
			}
			if got := pg.Seq[n:]; fmt.Sprint(got) != fmt.Sprint(want) { // after the burst's
				t.Errorf("PHP ran the requests in order %v, want arrival order %v", got, want)
			}
		})
	}
}

// TestQueueTimeoutRealPHP: a request waiting behind a slow one of its session
// past session.queue_timeout gets 503 with Retry-After; the slow one is
// unaffected, and requests without a session, or on bypass paths, are never
// queued.
func TestQueueTimeoutRealPHP(t *testing.T) {
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(h, func(t *testing.T) {
			p := onePHP(t, h)
			g := p.gate(t, "  queue_timeout: 300ms\n  bypass_paths: [/peek.php, '*.css']\n")
			u := p.newUser(t)
			u.visit(t, front(g), "/visit.php")
			slow := make(chan int, 1)
			go func() { s, _ := u.status(t, front(g)+"/slow.php?ms=3000"); slow <- s }()
			p.waitLocked(t, u.id)
			if s, retry := u.status(t, front(g)+"/visit.php"); s != http.StatusServiceUnavailable || retry == "" {
				t.Errorf("waiter past queue_timeout: %d, Retry-After %q; want 503 with Retry-After", s, retry)
			}
			if s, _ := u.status(t, front(g)+"/peek.php"); s != http.StatusOK {
				t.Errorf("bypass path of the session while its slot is taken: %d, want 200", s)
			}
			anon := p.newUser(t)
			if s, _ := anon.status(t, front(g)+"/peek.php?x=1"); s != http.StatusOK {
				t.Errorf("request without a session: %d", s)
			}
			if s := <-slow; s != http.StatusOK {
				t.Errorf("the slow request: %d, want 200", s)
			}
			if n := queueWaiters(t, g); n != 0 {
				t.Errorf("%d waiters left", n)
			}
		})
	}
}

// TestQueueFloodRealPHP: a flood of one session's requests stays within
// session.max_queue (the rest get 503 at once, none reaches PHP to spin on
// the lock) while other users are served.
func TestQueueFloodRealPHP(t *testing.T) {
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(h, func(t *testing.T) {
			p := onePHP(t, h)
			g := p.gate(t, "  max_queue: 4\n")
			u := p.newUser(t)
			u.visit(t, front(g), "/visit.php")
			slow := make(chan int, 1)
			go func() { s, _ := u.status(t, front(g)+"/seq.php?ms=3000&n=slow"); slow <- s }()
			p.waitLocked(t, u.id)
			const flood = 20
			var mu sync.Mutex
			counts := map[int]int{}
			var wg sync.WaitGroup
			for i := range flood {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, _ := u.status(t, fmt.Sprintf("%s/seq.php?n=f%d", front(g), i))
					mu.Lock()
					counts[s]++
					mu.Unlock()
				}()
			}
			waitWaiters(t, g, 4)
			// Other users are served meanwhile, by the same 4 PHP workers.
			for range 5 {
				other := p.newUser(t)
				if pg := other.visit(t, front(g), "/visit.php"); pg.Visits != 1 {
					t.Errorf("other user during the flood: %+v", pg)
				}
			}
			wg.Wait()
			if s := <-slow; s != http.StatusOK {
				t.Errorf("the slow request: %d", s)
			}
			if counts[http.StatusOK] != 4 || counts[http.StatusServiceUnavailable] != flood-4 {
				t.Errorf("flood of %d with max_queue 4 behind a slow request: %v, want 4×200 and %d×503", flood, counts, flood-4)
			}
			var pg struct{ Seq []string }
			if _, err := u.get(front(g)+"/seq.php?n=last", &pg); err != nil {
				t.Fatal(err)
			}
			if len(pg.Seq) != 6 {
				t.Errorf("PHP ran %d requests of the session (%v), want 6: the slow one, 4 queued, the last", len(pg.Seq), pg.Seq)
			}
		})
	}
}

// TestQueueTwoInstancesRealPHP: a session's burst split over two sessiongate
// instances (each bounding only its own requests) all succeeds: PHP's lock
// orders the requests that reach it together, as it does without the queue.
func TestQueueTwoInstancesRealPHP(t *testing.T) {
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(h, func(t *testing.T) {
			p := onePHP(t, h)
			gates := []*running{p.gate(t, ""), p.gate(t, "")}
			u := p.newUser(t)
			u.visit(t, front(gates[0]), "/visit.php")
			const n = 16
			var wg sync.WaitGroup
			statuses := make([]int, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					statuses[i], _ = u.status(t, fmt.Sprintf("%s/seq.php?ms=20&n=%d", front(gates[i%2]), i))
				}()
			}
			wg.Wait()
			for i, s := range statuses {
				if s != http.StatusOK {
					t.Errorf("request %d (instance %d): status %d", i, i%2, s)
				}
			}
			var pg struct{ Seq []string }
			if _, err := u.get(front(gates[1])+"/seq.php?n=last", &pg); err != nil {
				t.Fatal(err)
			}
			if len(pg.Seq) != n+1 {
				t.Errorf("PHP recorded %d requests of the session, want %d (none lost to a race): %v", len(pg.Seq), n+1, pg.Seq)
			}
		})
	}
}
