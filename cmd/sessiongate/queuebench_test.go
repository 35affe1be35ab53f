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
//
// Beside the goal it reports the floor for the browsing users' p99: the same
// users through the queue-on sessiongate while another client sends the
// burst's 16 requests one after another straight at PHP, at the same bursts
// per second. Any scheme that runs a session's requests one at a time keeps
// one of the 4 PHP workers busy that long, whatever the front does. The same
// serial burst through sessiongate adds what proxying it costs the others on
// this 2-core machine (the proxy, PHP and the clients share the CPUs); what
// the queue adds beyond that is its own cost.

import (
	"cmp"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

const (
	qbUsers    = 20
	qbBurst    = 16
	qbWorkMS   = 20
	qbPhaseLen = 4 * time.Second
	qbRounds   = 8
	qbThink    = 50 * time.Millisecond
	// A burst starts every qbBurstEvery, or qbBurstGap after the previous
	// one ended if that is later (bursts of one session never overlap): the
	// queue-on and the floor phases send the same bursts per second as long
	// as their bursts take under 450 ms.
	qbBurstEvery = 750 * time.Millisecond
	qbBurstGap   = 300 * time.Millisecond
)

type qbPhase struct {
	others       []time.Duration // browsing users' latencies
	othersFailed int
	bursts       []time.Duration // completion time of each burst
	burstFailed  int
	burstReqs    int
	span         time.Duration // from the phase's start until the users stopped
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*99/100)]
}

func median[T cmp.Ordered](xs []T) T {
	var zero T
	if len(xs) == 0 {
		return zero
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// burstFunc sends one burst of qbBurst requests and returns how many failed.
type burstFunc func() (failed int)

// parallelBurst sends the burst as a page fires it: all at once, through url.
func parallelBurst(t *testing.T, url string, u *user) burstFunc {
	return func() int {
		var wg sync.WaitGroup
		var failed atomic.Int32
		for range qbBurst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if s, _ := u.status(t, url); s != http.StatusOK {
					failed.Add(1)
				}
			}()
		}
		wg.Wait()
		return int(failed.Load())
	}
}

// serialBurst sends the burst's requests one after another to url.
func serialBurst(t *testing.T, url string, u *user) burstFunc {
	return func() int {
		failed := 0
		for range qbBurst {
			if s, _ := u.status(t, url); s != http.StatusOK {
				failed++
			}
		}
		return failed
	}
}

// slowURL is slow.php on base doing ms of work.
func slowURL(base string, ms int) string { return fmt.Sprintf("%s/slow.php?ms=%d", base, ms) }

// runPhase has the users browse through base for qbPhaseLen, with bursts if
// burst is not nil. The users go on browsing until the last burst is done,
// so that every burst meets the same traffic.
func runPhase(t *testing.T, base string, users []*user, burst burstFunc) qbPhase {
	var ph qbPhase
	var mu sync.Mutex
	begin := time.Now()
	stop := begin.Add(qbPhaseLen)
	var bursting atomic.Bool
	bursting.Store(burst != nil)
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) || bursting.Load() {
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
	if burst != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer bursting.Store(false)
			for next := begin; next.Before(stop); {
				time.Sleep(time.Until(next))
				start := time.Now()
				failed := burst()
				end := time.Now()
				mu.Lock()
				ph.bursts = append(ph.bursts, end.Sub(start))
				ph.burstFailed += failed
				ph.burstReqs += qbBurst
				mu.Unlock()
				next = start.Add(qbBurstEvery)
				if gap := end.Add(qbBurstGap); gap.After(next) {
					next = gap
				}
			}
		}()
	}
	wg.Wait()
	ph.span = time.Since(begin)
	return ph
}

// userOwnConns is a user with connections of its own, as each browser has. With
// one pool shared by all users, the burst's 16 connections went to the
// browsing users between bursts, idle long enough for sessiongate to have
// parked them (proxy/h1, parkAfter): the others' p99 with bursts through the
// queue read 1.4-2.4 ms above the same bursts one at a time, 0-1.1 ms with
// a pool each.
func userOwnConns(t *testing.T, p *pool) *user {
	u := p.newUser(t)
	tr := p.tr.Clone()
	t.Cleanup(tr.CloseIdleConnections)
	u.c.Transport = tr
	return u
}

// medianRun is the median time of 5 bursts, one after the other, with nobody
// else browsing.
func medianRun(burst burstFunc) time.Duration {
	var runs []time.Duration
	for range 5 {
		start := time.Now()
		burst()
		runs = append(runs, time.Since(start))
	}
	return median(runs)
}

// floors are one handler's reference times for the burst's requests, nobody
// else browsing: one after another through sessiongate and straight at PHP
// (what PHP itself needs for them back to back, the floor for any edge queue
// that runs a session's requests one at a time), the same with no work, and
// the parallel burst through the queue.
type floors struct {
	gate, direct, directNoWork, alone time.Duration
}

// qbSeries is one kind of phase, one entry per round.
type qbSeries []qbPhase

func (s qbSeries) all() qbPhase {
	var a qbPhase
	for _, b := range s {
		a.others = append(a.others, b.others...)
		a.othersFailed += b.othersFailed
		a.bursts = append(a.bursts, b.bursts...)
		a.burstFailed += b.burstFailed
		a.burstReqs += b.burstReqs
		a.span += b.span
	}
	return a
}

// spread is the median of per-round values and their range: a p99 of one
// 4 s phase moves with whatever else the machine runs, so the table shows
// how far the rounds agree.
type spread[T cmp.Ordered] struct{ med, lo, hi T }

func spreadOf[T cmp.Ordered](xs []T) spread[T] {
	return spread[T]{median(xs), slices.Min(xs), slices.Max(xs)}
}

// p99s is the browsing users' p99 of each round, in ms.
func (s qbSeries) p99s() []float64 {
	var out []float64
	for _, ph := range s {
		out = append(out, ms(p99(ph.others)))
	}
	return out
}

// perRound applies f to the rounds' values of a and b, pairwise: rounds next
// to each other in time share the machine's load.
func perRound(a, b []float64, f func(a, b float64) float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = f(a[i], b[i])
	}
	return out
}

func fmtPct(s spread[float64]) string {
	return fmt.Sprintf("%+.0f %% (%+.0f to %+.0f)", s.med, s.lo, s.hi)
}

func TestQueueBench(t *testing.T) {
	var out strings.Builder
	fmt.Fprintf(&out, "# Session queue at the edge (issue 16): `make bench-queue`\n\n")
	fmt.Fprintf(&out, "%s. One `php -S` backend, PHP_CLI_SERVER_WORKERS=4; %d browsing users (visit.php, %v think time), each with connections of its own, as the burst's page has; "+
		"bursts of %d requests of one session doing %d ms each (slow.php), one every %v or %v after the previous one ended "+
		"if later; %d rounds of %v phases (the users browse on until the last burst is done), alternating "+
		"sessiongate with `max_in_flight: 1` (queue on) and `0` (off) in front of the same PHP. "+
		"Goal: burst ≤ %d ms (1.1 × %d × %d ms), others' p99 within 10 %% of the same gate without bursts, 0 failed.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), qbUsers, qbThink, qbBurst, qbWorkMS, qbBurstEvery, qbBurstGap,
		qbRounds, qbPhaseLen, 11*qbBurst*qbWorkMS/10, qbBurst, qbWorkMS)
	fmt.Fprintf(&out, "The floor row: the same users through the queue-on sessiongate while another client sends the burst's "+
		"%d requests one after another straight at PHP (its own session, bypassing sessiongate), at the same bursts per second; its \"alone\" is the queue-on gate's. "+
		"A session's requests run one at a time keep one of the 4 PHP workers busy for the whole burst whatever the front does, "+
		"so the others' p99 in that row is the floor for any one-at-a-time scheme. The serial row sends the same one at a time "+
		"through sessiongate (the burst's own session): the queue never holds a request there, so it adds what proxying "+
		"the burst costs the others on this machine, where the proxy, PHP and the clients share 2 CPUs.\n\n", qbBurst)
	fmt.Fprintf(&out, "Others' p99: of all rounds' requests pooled (a phase's p99 rests on its ~15 slowest requests and moves "+
		"with whatever else the machine runs); per round: the median of each round's change against the same round's phase "+
		"without bursts (lowest to highest round). Burst times and failures: all rounds.\n\n")
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&out, "Load average at start: %s\n\n", strings.TrimSpace(string(la)))
	}
	var beyond strings.Builder
	fmt.Fprintf(&out, "| handler | burst | burst median | burst max | burst failed | bursts/s | others p99 alone | others p99 with bursts | change (goal ≤ +10 %%) | change per round | others failed |\n")
	fmt.Fprintf(&out, "|---|---|---|---|---|---|---|---|---|---|---|\n")
	refs := map[string]floors{}
	for _, h := range []string{phptest.Memcache, phptest.Memcached} {
		p := onePHP(t, h)
		// Browsers keep their connections: without this, a burst's requests
		// would dial anew (the default keeps 2 per host).
		p.tr.MaxIdleConnsPerHost = 2 * qbBurst
		gates := map[string]*running{"on": p.gate(t, "  max_in_flight: 1\n"), "off": p.gate(t, "  max_in_flight: 0\n")}
		users := make([]*user, qbUsers)
		for i := range users {
			users[i] = userOwnConns(t, p)
			users[i].visit(t, front(gates["on"]), "/visit.php") // sessions live on the shared pool
		}
		burster := userOwnConns(t, p)
		burster.visit(t, front(gates["on"]), "/visit.php")
		direct := userOwnConns(t, p) // its own session, straight from PHP
		direct.visit(t, p.php.URL(0), "/visit.php")
		refs[h] = floors{
			gate:         medianRun(serialBurst(t, slowURL(front(gates["off"]), qbWorkMS), burster)),
			direct:       medianRun(serialBurst(t, slowURL(p.php.URL(0), qbWorkMS), direct)),
			directNoWork: medianRun(serialBurst(t, slowURL(p.php.URL(0), 0), direct)),
			alone:        medianRun(parallelBurst(t, slowURL(front(gates["on"]), qbWorkMS), burster)),
		}
		bursts := map[string]burstFunc{
			"off":   parallelBurst(t, slowURL(front(gates["off"]), qbWorkMS), burster),
			"on":    parallelBurst(t, slowURL(front(gates["on"]), qbWorkMS), burster),
			"floor": serialBurst(t, slowURL(p.php.URL(0), qbWorkMS), direct),
			// The same one at a time, but through sessiongate: what
			// proxying the burst costs the others on this machine, apart
			// from the queue.
			"serial": serialBurst(t, slowURL(front(gates["on"]), qbWorkMS), burster),
		}
		alone := map[string]qbSeries{}
		burst := map[string]qbSeries{}
		for r := range qbRounds {
			alone["off"] = append(alone["off"], runPhase(t, front(gates["off"]), users, nil))
			burst["off"] = append(burst["off"], runPhase(t, front(gates["off"]), users, bursts["off"]))
			alone["on"] = append(alone["on"], runPhase(t, front(gates["on"]), users, nil))
			// The floor's users browse through the queue-on gate too; the
			// queue, serial and floor phases take turns going first, so that
			// none always follows the same phase.
			order := []string{"on", "serial", "floor"}
			for i := range order {
				mode := order[(i+r)%len(order)]
				burst[mode] = append(burst[mode], runPhase(t, front(gates["on"]), users, bursts[mode]))
			}
		}
		alone["floor"], alone["serial"] = alone["on"], alone["on"]
		change := func(a, b float64) float64 { return 100 * (b - a) / a }
		for _, mode := range []string{"off", "on", "serial", "floor"} {
			a, b := alone[mode].all(), burst[mode].all()
			kind := map[string]string{"off": "parallel, queue off", "on": "parallel, queue on",
				"serial": "one after another through sessiongate", "floor": "one after another straight at PHP (floor)"}[mode]
			pa, pb := ms(p99(a.others)), ms(p99(b.others))
			fmt.Fprintf(&out, "| %s | %s | %v | %v | %d of %d | %.2f | %.1f ms | %.1f ms | %+.0f %% | %s | %d of %d |\n", h, kind,
				median(b.bursts).Round(time.Millisecond), slices.Max(b.bursts).Round(time.Millisecond),
				b.burstFailed, b.burstReqs, float64(len(b.bursts))/b.span.Seconds(),
				pa, pb, change(pa, pb), fmtPct(spreadOf(perRound(alone[mode].p99s(), burst[mode].p99s(), change))),
				a.othersFailed+b.othersFailed, len(a.others)+len(b.others))
		}
		pooled := func(mode string) float64 { return ms(p99(burst[mode].all().others)) }
		on, serial, floor := pooled("on"), pooled("serial"), pooled("floor")
		fmt.Fprintf(&beyond, "| %s | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %+.0f %% | %.1f ms | %+.0f %% |\n", h, on, serial, floor,
			on-serial, change(serial, on), on-floor, change(pooled("floor"), pooled("serial")))
	}
	fmt.Fprintf(&out, "\nThe queue beyond the floor: others' p99 with bursts through the queue against the same round's "+
		"serial bursts through sessiongate (what the queue itself adds) and straight at PHP (what proxying the burst adds too), "+
		"all rounds pooled.\n\n")
	fmt.Fprintf(&out, "| handler | others p99, bursts through the queue | serial bursts through sessiongate | serial bursts straight at PHP (floor) | queue − serial | queue over serial | queue − floor | serial through sessiongate over the floor |\n|---|---|---|---|---|---|---|---|\n")
	out.WriteString(beyond.String())
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
