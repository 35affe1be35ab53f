//go:build linux

package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// report is what a run found, with what it ran on.
type report struct {
	start, end         time.Time
	loadStart, loadEnd string
	o                  options
	notes              []string
	machine, tools     [][2]string // label, value
	cs                 []*contender
	rate               int // requested paced rate, req/s
	delayMS            int // mean pause per connection in the paced runs
	verdicts           []string
	commands           []string
}

// offered is the paced request rate conns connections make.
func (r *report) offered(conns int) int {
	if r.delayMS == 0 {
		return 0
	}
	return conns * 1000 / r.delayMS
}

// each applies f to every full-load round of c.
func (c *contender) each(f func(sample) float64) []float64 { return apply(c.rounds, f) }

// eachPaced applies f to every paced round of c.
func (c *contender) eachPaced(f func(sample) float64) []float64 { return apply(c.paced, f) }

func apply(ss []sample, f func(sample) float64) []float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	return v
}

func rps(s sample) float64   { return s.wrk.RPS }
func p50Of(s sample) float64 { return float64(s.wrk.P50) }
func p99Of(s sample) float64 { return float64(s.wrk.P99) }
func wrkOf(ss []sample) []wrkResult {
	w := make([]wrkResult, len(ss))
	for i, s := range ss {
		w[i] = s.wrk
	}
	return w
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// ratio is a/b, NaN when b is not positive.
func ratio(a, b float64) float64 {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}

// verdict says whether value meets target (0 = no target): an upper
// bound, or a lower bound when atLeast is set.
func verdict(value, target float64, atLeast bool) string {
	switch {
	case target == 0:
		return ""
	case math.IsNaN(value):
		return "not comparable (see notes)"
	case !atLeast && value <= target, atLeast && value >= target:
		return "met"
	}
	return "**missed**"
}

func ms(d float64) string { return fmt.Sprintf("%.2f ms", d/1e6) }

func num(v float64, prec int) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// latency medians over the rounds, in ns.
func p50(c *contender) float64 { return median(c.each(p50Of)) }
func p99(c *contender) float64 { return median(c.each(p99Of)) }
func cpu(c *contender) float64 { return median(c.each(sample.usPerReq)) }

func errorsText(w []wrkResult) string {
	var non2xx, sock int64
	for _, r := range w {
		non2xx += r.Non2xx
		sock += r.SocketErr
	}
	if non2xx+sock == 0 {
		return "0"
	}
	return fmt.Sprintf("%d non-2xx, %d socket", non2xx, sock)
}

type ratioRow struct {
	name          string
	value, target float64
	unit          string
	atLeast       bool // target is a lower bound
}

// ratios are the comparisons issues 6 and 19 ask for, with their targets
// (issue 19's where it sets one). Paced p99 is the median over the paced
// rounds; a contender with any paced round below 90% of the offered load
// was not at the same load: its p99 ratios are NaN.
func ratios(started []*contender, offered int) []ratioRow {
	cs := make([]*contender, numContenders) // by kind; nil if not run
	for _, c := range started {
		cs[c.kind] = c
	}
	rows := plainRatios(cs, offered)
	return append(rows, extraRatios(cs)...)
}

// plainRatios are the plain workload's; none if it did not run.
func plainRatios(cs []*contender, offered int) []ratioRow {
	h, sg, ss, cd := cs[cHAProxy], cs[cPlain], cs[cSessions], cs[cCaddy]
	if sg == nil || len(sg.rounds) == 0 {
		return nil
	}
	pacedP99 := func(c *contender) float64 {
		if len(c.paced) == 0 || slices.Min(c.eachPaced(rps)) < 0.9*float64(offered) {
			return math.NaN()
		}
		return median(c.eachPaced(p99Of))
	}
	rows := []ratioRow{
		{"sessiongate ÷ HAProxy, CPU per request", ratio(cpu(sg), cpu(h)), 1.2, "×", false},
		{"sessiongate+sessions ÷ sessiongate, CPU per request", ratio(cpu(ss), cpu(sg)), 1.1, "×", false},
		{"Caddy ÷ sessiongate, CPU per request", ratio(cpu(cd), cpu(sg)), 2.0, "×", true},
		{"sessiongate ÷ HAProxy, p99 at the same offered load", ratio(pacedP99(sg), pacedP99(h)), 1.5, "×", false},
		{"sessiongate+sessions ÷ HAProxy, p99 at the same offered load", ratio(pacedP99(ss), pacedP99(h)), 1.2, "×", false},
		{"sessiongate ÷ HAProxy, p99 at full load (closed loop)", ratio(p99(sg), p99(h)), 1.5, "×", false},
		{"sessiongate, RSS per idle keep-alive connection", sg.idle.PerConn() / 1000, 4, "kB", false},
		{"sessiongate+sessions, RSS per idle keep-alive connection", ss.idle.PerConn() / 1000, 4, "kB", false},
	}
	if cs[cNetHTTP] != nil {
		// What proxy/h1 and internal/sockio buy.
		rows = append(rows, []ratioRow{
			{"sessiongate (net/http engine) ÷ sessiongate, CPU per request", ratio(cpu(cs[cNetHTTP]), cpu(sg)), 0, "×", false},
			{"sessiongate (no sockio) ÷ sessiongate, CPU per request", ratio(cpu(cs[cNoSockio]), cpu(sg)), 0, "×", false},
			{"sessiongate (net/http engine), RSS per idle keep-alive connection", cs[cNetHTTP].idle.PerConn() / 1000, 0, "kB", false},
		}...)
	}
	return rows
}

// xcpu is c's median CPU per request in row id; NaN if it did not run it.
func xcpu(c *contender, id string) float64 {
	if c == nil {
		return math.NaN()
	}
	return median(apply(c.extra[id], sample.usPerReq))
}

// xrps and xp99 are c's median req/s and p99 in row id.
func xrps(c *contender, id string) float64 {
	if c == nil {
		return math.NaN()
	}
	return median(apply(c.extra[id], rps))
}

func xp99(c *contender, id string) float64 {
	if c == nil {
		return math.NaN()
	}
	return median(apply(c.extra[id], p99Of))
}

// extraRatios compare sessiongate with the others in the other workloads,
// with issue 19's goals; rows of workloads that did not run are left out.
func extraRatios(cs []*contender) []ratioRow {
	h, n, cd, sg, ss := cs[cHAProxy], cs[cNginx], cs[cCaddy], cs[cPlain], cs[cSessions]
	ran := func(id string) bool { return sg != nil && len(sg.extra[id]) > 0 }
	var rows []ratioRow
	if ran("tls") {
		rows = append(rows,
			ratioRow{"TLS keep-alive: sessiongate ÷ HAProxy, CPU per request", ratio(xcpu(sg, "tls"), xcpu(h, "tls")), 1.3, "×", false},
			ratioRow{"TLS keep-alive: sessiongate ÷ nginx, CPU per request", ratio(xcpu(sg, "tls"), xcpu(n, "tls")), 0, "×", false},
			ratioRow{"TLS keep-alive: sessiongate ÷ Caddy, CPU per request", ratio(xcpu(sg, "tls"), xcpu(cd, "tls")), 0, "×", false})
	}
	for _, id := range []string{"tlsnew-full", "tlsnew-resumed"} {
		if !ran(id) {
			continue
		}
		kind := "full"
		if id == "tlsnew-resumed" {
			kind = "resumed"
		}
		rows = append(rows,
			ratioRow{"new TLS connections, " + kind + " handshake: sessiongate ÷ HAProxy, CPU per handshake",
				ratio(xcpu(sg, id), xcpu(h, id)), 1.5, "×", false},
			ratioRow{"new TLS connections, " + kind + " handshake: sessiongate ÷ nginx, CPU per handshake",
				ratio(xcpu(sg, id), xcpu(n, id)), 0, "×", false},
			ratioRow{"new TLS connections, " + kind + " handshake: sessiongate ÷ Caddy, CPU per handshake",
				ratio(xcpu(sg, id), xcpu(cd, id)), 0, "×", false})
	}
	if ran("h2") {
		rows = append(rows,
			ratioRow{"HTTP/2: sessiongate ÷ HAProxy, CPU per request", ratio(xcpu(sg, "h2"), xcpu(h, "h2")), 0, "×", false},
			ratioRow{"HTTP/2: sessiongate ÷ nginx, CPU per request", ratio(xcpu(sg, "h2"), xcpu(n, "h2")), 0, "×", false},
			ratioRow{"HTTP/2: sessiongate ÷ Caddy, CPU per request", ratio(xcpu(sg, "h2"), xcpu(cd, "h2")), 0, "×", false})
	}
	if ran("close") {
		rows = append(rows,
			ratioRow{"new TCP connection per request: sessiongate ÷ HAProxy, CPU per request",
				ratio(xcpu(sg, "close"), xcpu(h, "close")), 0, "×", false})
	}
	if ran("large") {
		rows = append(rows,
			ratioRow{"1 MiB responses: sessiongate ÷ HAProxy, throughput", ratio(xrps(sg, "large"), xrps(h, "large")), 0.9, "×", true},
			ratioRow{"1 MiB responses: sessiongate ÷ HAProxy, CPU per byte", ratio(xcpu(sg, "large"), xcpu(h, "large")), 0, "×", false})
	}
	if lg := cs[cPlainLog]; lg != nil && len(lg.extra["log"]) > 0 {
		rows = append(rows,
			ratioRow{"access log: sessiongate+log ÷ HAProxy+log, CPU per request",
				ratio(xcpu(lg, "log"), xcpu(cs[cHAProxyLog], "log")), 0, "×", false},
			ratioRow{"access log: sessiongate+log ÷ nginx+log, CPU per request",
				ratio(xcpu(lg, "log"), xcpu(cs[cNginxLog], "log")), 0, "×", false})
	}
	if lg := cs[cPlainLog]; lg != nil && len(lg.extra["log"]) > 0 && sg != nil && len(sg.rounds) > 0 {
		// What the log costs each proxy, against its twin's plain workload
		// rounds: the same load, in 10 s runs instead of 2 s ones.
		rows = append(rows,
			ratioRow{"access log: HAProxy+log ÷ HAProxy, CPU per request", ratio(xcpu(cs[cHAProxyLog], "log"), cpu(h)), 0, "×", false},
			ratioRow{"access log: nginx+log ÷ nginx, CPU per request", ratio(xcpu(cs[cNginxLog], "log"), cpu(n)), 0, "×", false},
			ratioRow{"access log: Caddy+log ÷ Caddy, CPU per request", ratio(xcpu(cs[cCaddyLog], "log"), cpu(cd)), 0, "×", false},
			ratioRow{"access log: sessiongate+log ÷ sessiongate, CPU per request", ratio(xcpu(lg, "log"), cpu(sg)), 0, "×", false})
	}
	if ran("cold") || (ss != nil && len(ss.extra["cold"]) > 0) {
		rows = append(rows,
			ratioRow{"cold sessions: sessiongate+sessions ÷ sessiongate, CPU per request",
				ratio(xcpu(ss, "cold"), xcpu(sg, "cold")), 0, "×", false},
			ratioRow{"cold sessions: sessiongate+sessions ÷ HAProxy, CPU per request",
				ratio(xcpu(ss, "cold"), xcpu(h, "cold")), 0, "×", false},
			ratioRow{"cold sessions: sessiongate+sessions ÷ sessiongate, p99 at full load",
				ratio(xp99(ss, "cold"), xp99(sg, "cold")), 0, "×", false},
			ratioRow{"cold sessions: sessiongate+sessions ÷ HAProxy, p99 at full load",
				ratio(xp99(ss, "cold"), xp99(h, "cold")), 0, "×", false})
	}
	return rows
}

// plainTables are the plain workload's full-load and paced results.
func (r *report) plainTables(w func(format string, a ...any)) {
	o := r.o
	w("\n## Results\n\n")
	w("Median of %d round(s) of `wrk -t1 -c%d -d%s --latency` against each contender, the contenders "+
		"alternating within each round. **CPU** is the proxy process's user+system time (all threads, "+
		"`/proc/<pid>/stat`) during the run divided by the requests wrk completed; **CPU %%** is that time "+
		"over the run's wall time (100 = one core). **RSS per idle conn** is the growth of VmRSS while the "+
		"proxy holds %d idle keep-alive client connections that have each made one request, measured after "+
		"the load rounds (kB = 1000 bytes). **Others' CPU %%** is the CPU time processes the bench did not "+
		"start used during the run (the machine is shared): the higher, the noisier the figures.\n\n",
		o.rounds, o.conns, o.duration, o.idle)
	w("| contender | CPU µs/req (min–max) | CPU %% | req/s | p50 | p99 | errors | RSS per idle conn | others' CPU %% |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range plainOnes(r.cs) {
		us := c.each(sample.usPerReq)
		idle := num(c.idle.PerConn()/1000, 1) + " kB"
		w("| %s | %s (%s–%s) | %s | %s | %s | %s | %s | %s | %s |\n", c.name, num(median(us), 1),
			num(slices.Min(us), 1), num(slices.Max(us), 1), num(median(c.each(sample.cpuPct)), 0),
			num(median(c.each(rps)), 0), ms(p50(c)), ms(p99(c)),
			errorsText(wrkOf(c.rounds)), idle, num(median(c.each(sample.othersPct)), 0))
	}

	w("\n## Same offered load\n\n")
	w("Every contender gets the same paced load, %d round(s) of %s each, the contenders alternating "+
		"within each round: each of the %d connections waits a random "+
		"0–%d ms (mean %d ms) before each request, about %d req/s in all (half the slowest contender's "+
		"full-load rate unless `-rate` is given; asked: %d req/s). Medians over the rounds, p99's range "+
		"in brackets.\n\n",
		o.rounds, o.paced(), o.conns, 2*r.delayMS, r.delayMS, r.offered(o.conns), r.rate)
	w("| contender | req/s | CPU µs/req | p50 | p99 (min–max) | errors | others' CPU %% |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range plainOnes(r.cs) {
		p99s := c.eachPaced(p99Of)
		w("| %s | %s | %s | %s | %s (%s–%s) | %s | %s |\n", c.name, num(median(c.eachPaced(rps)), 0),
			num(median(c.eachPaced(sample.usPerReq)), 1), ms(median(c.eachPaced(p50Of))), ms(median(p99s)),
			ms(slices.Min(p99s)), ms(slices.Max(p99s)), errorsText(wrkOf(c.paced)), num(median(c.eachPaced(sample.othersPct)), 0))
	}
	if ss := r.byKind(cSessions); ss != nil && len(ss.rounds) > 0 {
		var idle []float64 // the pool's CPU while the others ran
		for _, c := range plainOnes(r.cs) {
			if c != ss {
				idle = append(append(idle, c.each(sample.poolUsPerReq)...), c.eachPaced(sample.poolUsPerReq)...)
			}
		}
		w("\n**The memcached pool's CPU**, which no CPU column above counts: the three nodes used %s µs per "+
			"request during sessiongate+sessions' full-load rounds and %s µs in its paced runs, against %s µs "+
			"during the other contenders' runs, which send them nothing (the idle sessiongate+sessions "+
			"instance's reads and memcached's own housekeeping); medians.\n",
			num(median(ss.each(sample.poolUsPerReq)), 1), num(median(ss.eachPaced(sample.poolUsPerReq)), 1),
			num(median(idle), 1))
	}
}

// extraTables are the other workloads' results, one table for all.
func (r *report) extraTables(w func(format string, a ...any), rs []row) {
	o := r.o
	w("\n## Other workloads\n\n")
	w("Median of %d round(s) of %s per workload and contender, in the same alternating way (a round runs "+
		"every workload against every contender that takes part), after a 1 s warm-up run each. CPU as above; "+
		"**per CPU-s** is requests (handshakes, for new TLS connections) per second of the proxy's CPU time. "+
		"The TLS workloads use an ECDSA P-256 certificate made for the run (what each side agreed to is "+
		"under the table). h2load reports no latency percentiles: its mean time per request "+
		"is in the p50 column, marked mean.\n\n", o.rounds, o.wduration)
	w("| workload | contender | CPU µs/req (min–max) | per CPU-s | CPU %% | req/s | p50 | p99 | errors | others' CPU %% |\n")
	w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range rs {
		for _, k := range x.kinds {
			c := r.byKind(k)
			ss := c.extra[x.id]
			if len(ss) == 0 {
				w("| %s | %s | not run: %s |  |  |  |  |  |  |  |\n", x.id, c.name, "see notes")
				continue
			}
			us := apply(ss, sample.usPerReq)
			p50, p99 := ms(median(apply(ss, p50Of))), ms(median(apply(ss, p99Of)))
			if ss[0].wrk.H2load {
				p50 = ms(median(apply(ss, func(s sample) float64 { return float64(s.wrk.Mean) }))) + " mean"
				p99 = "—"
			}
			w("| %s | %s | %s (%s–%s) | %s | %s | %s | %s | %s | %s | %s |\n", x.id, c.name, num(median(us), 1),
				num(slices.Min(us), 1), num(slices.Max(us), 1), num(1e6/median(us), 0),
				num(median(apply(ss, sample.cpuPct)), 0), num(median(apply(ss, rps)), 0), p50, p99,
				errorsText(wrkOf(ss)), num(median(apply(ss, sample.othersPct)), 0))
		}
	}
	if ss := r.byKind(cSessions); ss != nil && len(ss.extra["cold"]) > 0 {
		w("\nIn the cold rows the memcached nodes used %s µs of CPU per request during sessiongate+sessions' "+
			"runs (median), besides its CPU column.\n", num(median(apply(ss.extra["cold"], sample.poolUsPerReq)), 1))
	}
	w("\nWorkloads:\n\n")
	for _, x := range rs {
		w("- **%s**: %s; %d connections.%s\n", x.id, x.title, x.conns, r.negotiated(x))
	}
}

// negotiated is what TLS each contender agreed to in row x, where the load
// generator reports it (the Go client and h2load; wrk does not).
func (r *report) negotiated(x row) string {
	var by []string
	for _, k := range x.kinds {
		c := r.byKind(k)
		var n, resumed int64
		agreed := ""
		for _, s := range c.extra[x.id] {
			n, resumed = n+s.wrk.Requests, resumed+s.wrk.Resumed
			if agreed == "" {
				agreed = s.wrk.TLS
			}
		}
		if agreed == "" {
			continue
		}
		if x.id == "tlsnew-resumed" {
			agreed += fmt.Sprintf(", %d of %d connections resumed", resumed, n)
		}
		by = append(by, c.name+": "+agreed)
	}
	if len(by) == 0 {
		return ""
	}
	return " Negotiated: " + strings.Join(by, "; ") + "."
}

// byKind is the contender of kind k.
func (r *report) byKind(k int) *contender {
	for _, c := range r.cs {
		if c.kind == k {
			return c
		}
	}
	return nil
}

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	o := r.o
	w("# sessiongate beside HAProxy, nginx and Caddy\n\n")
	w("`make bench` (`go run ./bench`), %s, %s in all.", r.start.UTC().Format("2006-01-02 15:04 MST"),
		r.end.Sub(r.start).Round(time.Second))
	if o.quick {
		w(" **Smoke run (-quick): indicative only.**")
	}
	w("\n\n## Machine\n\n| | |\n|---|---|\n")
	for _, kv := range r.machine {
		w("| %s | %s |\n", kv[0], kv[1])
	}
	w("| load average at start / end | %s / %s |\n", r.loadStart, r.loadEnd)
	for _, kv := range r.tools {
		w("| %s | `%s` |\n", kv[0], kv[1])
	}

	if o.wants("plain") {
		r.plainTables(w)
	}
	if rs := rows(o); len(rs) > 0 {
		r.extraTables(w, rs)
	}

	w("\n## Ratios\n\n| ratio | value | target | |\n|---|---:|---:|---|\n")
	for _, x := range ratios(r.cs, r.offered(o.conns)) {
		target := "—"
		if x.target > 0 {
			bound := "≤"
			if x.atLeast {
				bound = "≥"
			}
			target = fmt.Sprintf("%s %g %s", bound, x.target, x.unit)
		}
		w("| %s | %s %s | %s | %s |\n", x.name, num(x.value, 2), x.unit, target, verdict(x.value, x.target, x.atLeast))
	}

	w("\n## Session checks\n\nsessiongate+sessions' lookup counters after the run (from its `/metrics`); " +
		"`verified` and `cached` mean the request's session was found on the pool:\n\n```\n")
	for _, v := range r.verdicts {
		w("%s\n", v)
	}
	w("```\n\n## Every round\n\n")
	w("| round | contender | req/s | CPU µs/req | CPU %% | p50 | p99 | errors | others' CPU %% |\n" +
		"|---:|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for i := range o.rounds {
		for _, c := range plainOnes(r.cs) {
			if !o.wants("plain") {
				break
			}
			s := c.rounds[i]
			w("| %d | %s | %.0f | %.1f | %.0f | %s | %s | %s | %.0f |\n", i+1, c.name, s.wrk.RPS, s.usPerReq(),
				s.cpuPct(), ms(float64(s.wrk.P50)), ms(float64(s.wrk.P99)), errorsText([]wrkResult{s.wrk}), s.othersPct())
		}
	}
	for i := range o.rounds {
		for _, c := range plainOnes(r.cs) {
			if !o.wants("plain") {
				break
			}
			s := c.paced[i]
			w("| paced %d | %s | %.0f | %.1f | %.0f | %s | %s | %s | %.0f |\n", i+1, c.name, s.wrk.RPS, s.usPerReq(),
				s.cpuPct(), ms(float64(s.wrk.P50)), ms(float64(s.wrk.P99)), errorsText([]wrkResult{s.wrk}), s.othersPct())
		}
	}
	for i := range o.rounds {
		for _, x := range rows(o) {
			for _, k := range x.kinds {
				c := r.byKind(k)
				if i >= len(c.extra[x.id]) {
					continue
				}
				s := c.extra[x.id][i]
				p50, p99 := ms(float64(s.wrk.P50)), ms(float64(s.wrk.P99))
				if s.wrk.H2load {
					p50, p99 = ms(float64(s.wrk.Mean))+" mean", "—"
				}
				w("| %s %d | %s | %.0f | %.1f | %.0f | %s | %s | %s | %.0f |\n", x.id, i+1, c.name, s.wrk.RPS, s.usPerReq(),
					s.cpuPct(), p50, p99, errorsText([]wrkResult{s.wrk}), s.othersPct())
			}
		}
	}

	w("\n## Setup\n\n")
	w("- Backends: three nginx processes (one process each, access log off) answering every request " +
		"with a 21-byte body (`hello from lamp01 ok\\n`).\n")
	w("- Every contender balances round robin over them with keep-alive upstream connections, no access "+
		"log (but the +log twins of the log workload, a file each: HAProxy's stdout, nginx through a 64 kB "+
		"buffer flushed every second, Caddy and sessiongate through their own writers; see bench/configs.go), one worker: HAProxy `nbthread 1`, `http-reuse always`; nginx `master_process off`, "+
		"`worker_processes 1`, `keepalive 64`; Caddy and sessiongate with `GOMAXPROCS=%d` (both Go, so "+
		"the same setting; the Go runtime's GC workers still run on other threads, and their CPU time "+
		"is counted).\n", o.gomaxprocs)
	w("- Health checks: HAProxy, Caddy and sessiongate probe `GET /` on each backend every second, " +
		"with no passive checks (sessiongate: `health.passive.failures: 0`, see bench/configs.go); " +
		"nginx (open source) has only its passive `max_fails=1`.\n")
	w("- sessiongate+sessions: three memcached (`-t 1`) nodes; %d session ids (26 chars "+
		"[0-9a-v]) stored on every node as PHP's memcache handler stores them (key = id, value "+
		"`visits|i:1;`, TTL 3600 s); `session.handler: memcache`, `strict: true`, other keys at their "+
		"defaults (verify_ttl 2s). wrk's `bench/sessions.lua` sends `Cookie: PHPSESSID=<id>`, "+
		"cycling through the ids. Right before each of its runs (unmeasured) the bench sends one request per "+
		"id, as the other contenders' runs in between outlast verify_ttl: the row measures warm sessions "+
		"(the cold row, the other case).\n", sessionCount)
	if o.wantsTLS() {
		w("- TLS: one self-signed ECDSA P-256 certificate (localhost, 127.0.0.1) made for the run with Go's " +
			"crypto/x509. HAProxy `bind ... ssl crt <cert+key> alpn h2,http/1.1`, nginx `listen ... ssl http2`, " +
			"Caddy a second server with the certificate from the files and protocols h1, h2, sessiongate " +
			"a second process with `tls.cert`/`tls.key` (HTTP/1.1 over TLS served by its own h1 engine, " +
			"HTTP/2 by net/http's); the other settings are as above, session tickets at each one's default (on). " +
			"Every contender offers TLS 1.2 and 1.3 (nginx 1.22 only with `ssl_protocols TLSv1.2 TLSv1.3`: its " +
			"default stops at 1.2), so every client here gets 1.3. wrk and h2load use OpenSSL. " +
			"New connections use a Go client (crypto/tls, a fresh session " +
			"cache per worker for the resumed row) inside the bench process, whose CPU time is never " +
			"charged to a proxy: wrk with `Connection: close` would resume every connection after its first " +
			"(checked with nginx's `$ssl_session_reused`), so it can drive neither a full-handshake run nor a " +
			"controlled resumed one. The Go client offers only X25519 for the key exchange, as OpenSSL 3.0's " +
			"clients do (Go's default adds X25519MLKEM768, which sessiongate would pick and the OpenSSL " +
			"servers cannot: an ML-KEM encapsulation more per handshake). Every request over TLS goes to the backends in plain HTTP/1.1.\n")
	}
	if o.wants("large") {
		w("- 1 MiB responses: the backends send `/large` from a file with `sendfile on`; nginx has " +
			"`proxy_max_temp_file_size 0` so that it passes responses larger than its buffers on as they come " +
			"instead of spooling them to a temp file first (nothing else has such responses).\n")
	}
	if o.wants("cold") {
		w("- Cold sessions: %d more session ids stored on every node the same way; the cold rows "+
			"send them with `bench/sessions.lua`, each request another id; a run reaches an id again only after "+
			"more than verify_ttl, so sessiongate+sessions verifies each request on the pool. HAProxy and plain "+
			"sessiongate get the same requests (they ignore the cookie). memcached's CPU time is not in the CPU column; it is under the table.\n",
			coldCount)
	}
	w("- Loopback only; all processes on the same %d cores as wrk, unpinned.\n", runtime.NumCPU())
	for _, n := range r.notes {
		w("- %s\n", n)
	}
	w("\n## Commands\n\n```\n")
	for _, c := range r.commands {
		w("%s\n", c)
	}
	w("```\n")
	return b.String()
}

// errorNotes flags contenders that failed more than 1% of requests: their
// CPU per request is then not comparable.
func errorNotes(cs []*contender) []string {
	var notes []string
	for _, c := range cs {
		var n, bad int64
		all := append(slices.Clone(c.rounds), c.paced...)
		for _, x := range c.extra {
			all = append(all, x...)
		}
		for _, s := range all {
			n += s.wrk.Requests
			bad += s.wrk.Errors()
		}
		if bad*100 > n {
			notes = append(notes, fmt.Sprintf("**%s failed %d of %d requests: its figures are not comparable.**%s",
				c.name, bad, n, firstErr(all)))
		}
	}
	return notes
}

// firstErr is the Go TLS client's first failure among ss, if any, as a
// sentence.
func firstErr(ss []sample) string {
	for _, s := range ss {
		if s.wrk.FirstErr != "" {
			return fmt.Sprintf(" The first new-TLS-connection failure: %q.", s.wrk.FirstErr)
		}
	}
	return ""
}

// noiseNotes flags a busy machine and paced runs that fell short of the
// offered load (then their latencies are not at the same load).
func noiseNotes(cs []*contender, offered int) []string {
	var notes, short []string
	var others []float64
	for _, c := range cs {
		others = append(others, c.each(sample.othersPct)...)
		for _, got := range c.eachPaced(rps) {
			if got < 0.9*float64(offered) {
				short = append(short, fmt.Sprintf("%s %.0f", c.name, got))
			}
		}
	}
	if m := median(others); m > 25 {
		notes = append(notes, fmt.Sprintf("**The machine was busy: processes outside the bench used a median "+
			"%.0f%% of a core during the full-load runs. Figures are noisy; rerun on a quiet machine.**", m))
	}
	if len(short) > 0 {
		notes = append(notes, fmt.Sprintf("**Paced runs below 90%% of the offered %d req/s (%s req/s): "+
			"their p99 is not at the same load.**", offered, strings.Join(short, ", ")))
	}
	return notes
}

// machineInfo describes the machine from /proc and /etc/os-release.
func machineInfo() [][2]string {
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	mem := "?"
	if kb, err := parseMemTotal(read("/proc/meminfo")); err == nil {
		mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	return [][2]string{
		{"CPU", fmt.Sprintf("%s × %d", cpuModel(read("/proc/cpuinfo")), runtime.NumCPU())},
		{"memory", mem},
		{"kernel", "Linux " + strings.TrimSpace(read("/proc/sys/kernel/osrelease"))},
		{"OS", strings.Trim(strings.TrimPrefix(firstLine(read("/etc/os-release"), "PRETTY_NAME="), "PRETTY_NAME="), `"`+"\n")},
	}
}

// parseMemTotal reads "MemTotal:  24684096 kB" from /proc/meminfo.
func parseMemTotal(meminfo string) (int64, error) {
	f := strings.Fields(firstLine(meminfo, "MemTotal:"))
	if len(f) != 3 {
		return 0, fmt.Errorf("meminfo: no MemTotal")
	}
	return strconv.ParseInt(f[1], 10, 64)
}

// cpuModel is the first "model name" in /proc/cpuinfo.
func cpuModel(cpuinfo string) string {
	_, v, ok := strings.Cut(firstLine(cpuinfo, "model name"), ":")
	if !ok {
		return "unknown CPU"
	}
	return strings.TrimSpace(v)
}

// firstLine is the first line of s starting with prefix, or "".
func firstLine(s, prefix string) string {
	for line := range strings.Lines(s) {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimRight(line, "\n")
		}
	}
	return ""
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// toolVersions is each tool's own version line.
func toolVersions(ctx context.Context, sessiongate string) [][2]string {
	var out [][2]string
	for _, t := range [][]string{
		{"HAProxy", "haproxy", "-v"}, {"nginx", "nginx", "-v"}, {"Caddy", "caddy", "version"},
		{"wrk", "wrk", "-v"}, {"memcached", "memcached", "-V"}, {"Go", "go", "version"},
		{"sessiongate", sessiongate, "version"},
	} {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		b, _ := exec.CommandContext(ctx, t[1], t[2:]...).CombinedOutput() // wrk -v exits 1
		cancel()
		v := strings.TrimSpace(firstLine(strings.TrimSpace(string(b)), ""))
		if t[0] == "Go" && v == "" {
			v = runtime.Version() + " (the bench's own)"
		}
		out = append(out, [2]string{t[0], v})
	}
	return out
}
