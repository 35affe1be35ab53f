//go:build queuebench

package main

// `make bench-queue` (issue 16's measurement; a benchmark, so it reports and
// asserts nothing about speed): one PHP backend with 4 workers
// (PHP_CLI_SERVER_WORKERS=4, php -S), real memcached, two sessiongate
// instances in front of it, one with the session queue (max_in_flight 1) and
// one without (0). For each handler, in alternating phases of the same run:
// 20 users browse (visit.php, 50 ms think time) alone, then while a page of
// another user fires bursts of 16 parallel requests of its session, each
// doing 20 ms of work (slow.php?ms=20). It reports the bursts' completion
// time (goal ≤ 1.1 × 16 × 20 ms = 352 ms), the browsing users' p99 with and
// without bursts (goal: within 10 %) and failed requests (goal 0).

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

const (
	qbUsers    = 20
	qbBurst    = 16
	qbWorkMS   = 20
	qbPhaseLen = 4 * time.Second
	qbRounds   = 5
	qbThink    = 50 * time.Millisecond
	qbBurstGap = 300 * time.Millisecond
)

type qbPhase struct {
	others       []time.Duration // browsing users' latencies
	othersFailed int
	bursts       []time.Duration // completion time of each burst
	burstFailed  int
	burstReqs    int
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*99/100)]
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// runPhase has the users browse through base for qbPhaseLen, with bursts from
// burster if it is not nil.
func runPhase(t *testing.T, base string, users []*user, burster *user) qbPhase {
	var ph qbPhase
	var mu sync.Mutex
	stop := time.Now().Add(qbPhaseLen)
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				start := time.Now()
				s, _ := u.status(t, base+"/visit.php")
				d := time.Since(start)
				mu.Lock()
				ph.others = append(ph.others, d)
				if s != http.StatusOK {
					ph.othersFailed++
				}
				mu.Unlock()
				time.Sleep(qbThink)
			}
		}()
	}
	if burster != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Add(2 * time.Second).Before(stop) {
				var bw sync.WaitGroup
				start := time.Now()
				failed := 0
				var fmu sync.Mutex
				for range qbBurst {
					bw.Add(1)
					go func() {
						defer bw.Done()
						if s, _ := burster.status(t, fmt.Sprintf("%s/slow.php?ms=%d", base, qbWorkMS)); s != http.StatusOK {
							fmu.Lock()
							failed++
							fmu.Unlock()
						}
					}()
				}
				bw.Wait()
				d := time.Since(start)
				mu.Lock()
				ph.bursts = append(ph.bursts, d)
				ph.burstFailed += failed
				ph.burstReqs += qbBurst
				mu.Unlock()
				time.Sleep(qbBurstGap)
			}
		}()
	}
	wg.Wait()
	return ph
}

// serialFloor is the median time of the burst's requests, each doing ms of
// work, sent one after another by one client through base, with nobody else
// browsing: what PHP itself needs for them back to back, the floor for any
// edge queue that runs a session's requests one at a time.
func serialFloor(t *testing.T, base string, u *user, ms int) time.Duration {
	var runs []time.Duration
	for range 5 {
		start := time.Now()
		for range qbBurst {
			u.status(t, fmt.Sprintf("%s/slow.php?ms=%d", base, ms))
		}
		runs = append(runs, time.Since(start))
	}
	return median(runs)
}

// burstAlone is the median completion time of bursts through base with
// nobody else browsing: the queue's own cost over the serial floor.
func burstAlone(t *testing.T, base string, burster *user) time.Duration {
	var runs []time.Duration
	for range 5 {
		var wg sync.WaitGroup
		start := time.Now()
		for range qbBurst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				burster.status(t, fmt.Sprintf("%s/slow.php?ms=%d", base, qbWorkMS))
			}()
		}
		wg.Wait()
		runs = append(runs, time.Since(start))
	}
	return median(runs)
}

// floors are one handler's reference times for the burst's requests.
type floors struct {
	gate, direct, directNoWork, alone time.Duration
}

func (a *qbPhase) add(b qbPhase) {
	a.others = append(a.others, b.others...)
	a.othersFailed += b.othersFailed
	a.bursts = append(a.bursts, b.bursts...)
	a.burstFailed += b.burstFailed
	a.burstReqs += b.burstReqs
}

func TestQueueBench(t *testing.T) {
	var out strings.Builder
	fmt.Fprintf(&out, "# Session queue at the edge (issue 16): `make bench-queue`\n\n")
	fmt.Fprintf(&out, "%s. One `php -S` backend, PHP_CLI_SERVER_WORKERS=4; %d browsing users (visit.php, %v think time); "+
		"bursts of %d parallel requests of one session doing %d ms each (slow.php); %d rounds of %v phases, alternating "+
		"sessiongate with `max_in_flight: 1` (queue on) and `0` (off) in front of the same PHP. "+
		"Goal: burst ≤ %d ms (1.1 × %d × %d ms), others' p99 within 10 %% of the same gate without bursts, 0 failed.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), qbUsers, qbThink, qbBurst, qbWorkMS, qbRounds, qbPhaseLen,
		11*qbBurst*qbWorkMS/10, qbBurst, qbWorkMS)
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&out, "Load average at start: %s\n", strings.TrimSpace(string(la)))
	}
	fmt.Fprintf(&out, "| handler | queue | burst median | burst max | burst failed | others p99 alone | others p99 with bursts | change | others failed |\n")
	fmt.Fprintf(&out, "|---|---|---|---|---|---|---|---|---|\n")
	refs := map[string]floors{}
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		p := onePHP(t, h)
		gates := map[string]*running{"on": p.gate(t, "  max_in_flight: 1\n"), "off": p.gate(t, "  max_in_flight: 0\n")}
		users := make([]*user, qbUsers)
		for i := range users {
			users[i] = p.newUser(t)
			users[i].visit(t, front(gates["on"]), "/visit.php") // sessions live on the shared pool
		}
		burster := p.newUser(t)
		burster.visit(t, front(gates["on"]), "/visit.php")
		direct := p.newUser(t) // its own session, straight from PHP
		direct.visit(t, p.php.URL(0), "/visit.php")
		refs[h] = floors{
			gate:         serialFloor(t, front(gates["off"]), burster, qbWorkMS),
			direct:       serialFloor(t, p.php.URL(0), direct, qbWorkMS),
			directNoWork: serialFloor(t, p.php.URL(0), direct, 0),
			alone:        burstAlone(t, front(gates["on"]), burster),
		}
		alone := map[string]*qbPhase{"on": {}, "off": {}}
		burst := map[string]*qbPhase{"on": {}, "off": {}}
		for range qbRounds {
			for _, mode := range []string{"off", "on"} {
				alone[mode].add(runPhase(t, front(gates[mode]), users, nil))
				burst[mode].add(runPhase(t, front(gates[mode]), users, burster))
			}
		}
		for _, mode := range []string{"off", "on"} {
			a, b := alone[mode], burst[mode]
			change := 100 * (float64(p99(b.others)) - float64(p99(a.others))) / float64(p99(a.others))
			fmt.Fprintf(&out, "| %s | %s | %v | %v | %d of %d | %v | %v | %+.0f %% | %d of %d |\n", h, mode,
				median(b.bursts).Round(time.Millisecond), slices.Max(b.bursts).Round(time.Millisecond),
				b.burstFailed, b.burstReqs, p99(a.others).Round(time.Millisecond), p99(b.others).Round(time.Millisecond),
				change, a.othersFailed+b.othersFailed, len(a.others)+len(b.others))
		}
	}
	fmt.Fprintf(&out, "\nFloors, nobody else browsing (median of 5): the same %d requests one after another by one client "+
		"show what PHP itself needs for them back to back; no scheme that runs a session's requests one at a time can finish a burst faster.\n\n", qbBurst)
	fmt.Fprintf(&out, "| handler | burst, queue on, alone | one after another through sessiongate | one after another straight at PHP | the same with `ms=0` (PHP's own cost) |\n|---|---|---|---|---|\n")
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		f := refs[h]
		fmt.Fprintf(&out, "| %s | %v | %v | %v | %v |\n", h, f.alone.Round(time.Millisecond), f.gate.Round(time.Millisecond),
			f.direct.Round(time.Millisecond), f.directNoWork.Round(time.Millisecond))
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&out, "\nLoad average at end: %s\n", strings.TrimSpace(string(la)))
	}
	t.Log("\n" + out.String())
	if path := os.Getenv("QUEUEBENCH_OUT"); path != "" {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}
