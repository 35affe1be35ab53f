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

// ratios are the comparisons issue 6 asks for, with its targets. Paced
// p99 is the median over the paced rounds; a contender with any paced
// round below 90% of the offered load was not at the same load: its p99
// ratios are NaN.
func ratios(started []*contender, offered int) []ratioRow {
	cs := make([]*contender, numContenders) // by kind; nil if not run
	for _, c := range started {
		cs[c.kind] = c
	}
	h, sg, ss, cd := cs[cHAProxy], cs[cPlain], cs[cSessions], cs[cCaddy]
	pacedP99 := func(c *contender) float64 {
		if len(c.paced) == 0 || slices.Min(c.eachPaced(rps)) < 0.9*float64(offered) {
			return math.NaN()
		}
		return median(c.eachPaced(p99Of))
	}
	rows := []ratioRow{
		{"sessiongate ÷ HAProxy, CPU per request", ratio(cpu(sg), cpu(h)), 2.0, "×", false},
		{"sessiongate+sessions ÷ sessiongate, CPU per request", ratio(cpu(ss), cpu(sg)), 1.3, "×", false},
		{"Caddy ÷ sessiongate, CPU per request", ratio(cpu(cd), cpu(sg)), 2.0, "×", true},
		{"sessiongate ÷ HAProxy, p99 at the same offered load", ratio(pacedP99(sg), pacedP99(h)), 1.5, "×", false},
		{"sessiongate+sessions ÷ HAProxy, p99 at the same offered load", ratio(pacedP99(ss), pacedP99(h)), 0, "×", false},
		{"sessiongate ÷ HAProxy, p99 at full load (closed loop)", ratio(p99(sg), p99(h)), 0, "×", false},
		{"sessiongate, RSS per idle keep-alive connection", sg.idle.PerConn() / 1000, 20, "kB", false},
		{"sessiongate+sessions, RSS per idle keep-alive connection", ss.idle.PerConn() / 1000, 20, "kB", false},
	}
	if cs[cNetHTTP] != nil {
		// What proxy/h1 and proxy/internal/sockio buy.
		rows = append(rows, []ratioRow{
			{"sessiongate (net/http engine) ÷ sessiongate, CPU per request", ratio(cpu(cs[cNetHTTP]), cpu(sg)), 0, "×", false},
			{"sessiongate (no sockio) ÷ sessiongate, CPU per request", ratio(cpu(cs[cNoSockio]), cpu(sg)), 0, "×", false},
			{"sessiongate (net/http engine), RSS per idle keep-alive connection", cs[cNetHTTP].idle.PerConn() / 1000, 0, "kB", false},
		}...)
	}
	if cs[cPlainLog] == nil {
		return rows
	}
	// What an access log to a file costs each proxy.
	return append(rows, []ratioRow{
		{"HAProxy+log ÷ HAProxy, CPU per request", ratio(cpu(cs[cHAProxyLog]), cpu(h)), 0, "×", false},
		{"nginx+log ÷ nginx, CPU per request", ratio(cpu(cs[cNginxLog]), cpu(cs[cNginx])), 0, "×", false},
		{"Caddy+log ÷ Caddy, CPU per request", ratio(cpu(cs[cCaddyLog]), cpu(cd)), 0, "×", false},
		{"sessiongate+log ÷ sessiongate, CPU per request", ratio(cpu(cs[cPlainLog]), cpu(sg)), 0, "×", false},
	}...)
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
	for _, c := range r.cs {
		us := c.each(sample.usPerReq)
		idle := num(c.idle.PerConn()/1000, 1) + " kB"
		if c.logged {
			idle = "—" // not measured: as its twin without the log
		}
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
	for _, c := range r.cs {
		p99s := c.eachPaced(p99Of)
		w("| %s | %s | %s | %s | %s (%s–%s) | %s | %s |\n", c.name, num(median(c.eachPaced(rps)), 0),
			num(median(c.eachPaced(sample.usPerReq)), 1), ms(median(c.eachPaced(p50Of))), ms(median(p99s)),
			ms(slices.Min(p99s)), ms(slices.Max(p99s)), errorsText(wrkOf(c.paced)), num(median(c.eachPaced(sample.othersPct)), 0))
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
		for _, c := range r.cs {
			s := c.rounds[i]
			w("| %d | %s | %.0f | %.1f | %.0f | %s | %s | %s | %.0f |\n", i+1, c.name, s.wrk.RPS, s.usPerReq(),
				s.cpuPct(), ms(float64(s.wrk.P50)), ms(float64(s.wrk.P99)), errorsText([]wrkResult{s.wrk}), s.othersPct())
		}
	}
	for i := range o.rounds {
		for _, c := range r.cs {
			s := c.paced[i]
			w("| paced %d | %s | %.0f | %.1f | %.0f | %s | %s | %s | %.0f |\n", i+1, c.name, s.wrk.RPS, s.usPerReq(),
				s.cpuPct(), ms(float64(s.wrk.P50)), ms(float64(s.wrk.P99)), errorsText([]wrkResult{s.wrk}), s.othersPct())
		}
	}

	w("\n## Setup\n\n")
	w("- Backends: three nginx processes (one process each, access log off) answering every request " +
		"with a 21-byte body (`hello from lamp01 ok\\n`).\n")
	w("- Every contender balances round robin over them with keep-alive upstream connections, no access "+
		"log, one worker: HAProxy `nbthread 1`, `http-reuse always`; nginx `master_process off`, "+
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
		"cycling through the ids.\n", sessionCount)
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
		for _, s := range append(slices.Clone(c.rounds), c.paced...) {
			n += s.wrk.Requests
			bad += s.wrk.Errors()
		}
		if bad*100 > n {
			notes = append(notes, fmt.Sprintf("**%s failed %d of %d requests: its figures are not comparable.**",
				c.name, bad, n))
		}
	}
	return notes
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
