//go:build linux

package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/config"
)

// wrk 4.1.0's report for a run whose every answer was an error.
const wrkErrors = `Running 1s test @ http://127.0.0.1:18090/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   419.45us  842.69us   8.25ms   89.68%
    Req/Sec    52.87k     6.59k   64.18k    81.82%
  Latency Distribution
     50%  116.00us
     75%  221.00us
     90%    1.32ms
     99%    3.99ms
  57732 requests in 1.10s, 14.59MB read
  Socket errors: connect 0, read 3, write 1, timeout 12
  Non-2xx or 3xx responses: 57732
Requests/sec:  52496.52
Transfer/sec:     13.27MB
`

func TestParseWrk(t *testing.T) {
	got, err := parseWrk(wrkErrors)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 57732, RPS: 52496.52, P50: 116 * time.Microsecond,
		P99: 3990 * time.Microsecond, Non2xx: 57732, SocketErr: 16}
	if got != want {
		t.Errorf("parseWrk = %+v, want %+v", got, want)
	}
	if got.Errors() != 57748 {
		t.Errorf("Errors() = %d, want 57748", got.Errors())
	}
}

func TestParseWrkClean(t *testing.T) {
	out := `  Latency Distribution
     50%    1.10ms
     99%    2.00s
  87577 requests in 1.00s, 14.11MB read
Requests/sec:  87561.50
`
	got, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if got.Requests != 87577 || got.P50 != 1100*time.Microsecond || got.P99 != 2*time.Second || got.Errors() != 0 {
		t.Errorf("parseWrk = %+v", got)
	}
}

func TestParseWrkRejectsIncompleteOutput(t *testing.T) {
	for _, out := range []string{
		"",
		"unable to connect to 127.0.0.1:1 Connection refused\n",
		"  87577 requests in 1.00s, 14.11MB read\nRequests/sec:  87561.50\n", // no --latency
		"     50%   12.00xs\n",
	} {
		if r, err := parseWrk(out); err == nil {
			t.Errorf("parseWrk(%q) = %+v, want an error", out, r)
		}
	}
}

func TestParseStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	stat := "4242 (odd) name) S 1 4242 4242 0 -1 4194560 1516 0 0 0 1234 567 0 0 20 0 3 0 99 1000 200\n"
	got, err := parseStat(stat)
	if err != nil || got != 1234+567 {
		t.Errorf("parseStat = %d, %v; want 1801", got, err)
	}
	if _, err := parseStat("4242 (x) S 1 2"); err == nil {
		t.Error("parseStat accepted a short line")
	}
}

func TestParseStatOwnProcess(t *testing.T) {
	if _, err := cpuTicks(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	rss, err := rssBytes(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Errorf("rssBytes(self) = %d, %v; want at least 1 MiB", rss, err)
	}
}

func TestParseVmRSS(t *testing.T) {
	got, err := parseVmRSS("Name:\tnginx\nVmPeak:\t  20000 kB\nVmRSS:\t   15360 kB\nRssAnon:\t 1 kB\n")
	if err != nil || got != 15360*1024 {
		t.Errorf("parseVmRSS = %d, %v; want %d", got, err, 15360*1024)
	}
	if _, err := parseVmRSS("Name:\tkthreadd\n"); err == nil {
		t.Error("parseVmRSS found VmRSS in a kernel thread's status")
	}
}

func TestRatioMath(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median odd = %v", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median even = %v", got)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
	if got := ratio(36, 18); got != 2 {
		t.Errorf("ratio = %v", got)
	}
	if !math.IsNaN(ratio(1, 0)) || !math.IsNaN(ratio(math.NaN(), 1)) {
		t.Error("ratio over zero or NaN is not NaN")
	}
	for _, c := range []struct {
		v, target float64
		atLeast   bool
		want      string
	}{
		{2.0, 2.0, false, "met"}, {2.01, 2.0, false, "**missed**"}, {5, 0, false, ""},
		{math.NaN(), 1.3, false, "not comparable (see notes)"},
		{2.0, 2.0, true, "met"}, {1.99, 2.0, true, "**missed**"}, {0.5, 2.0, false, "met"},
	} {
		if got := verdict(c.v, c.target, c.atLeast); got != c.want {
			t.Errorf("verdict(%v, %v, %v) = %q, want %q", c.v, c.target, c.atLeast, got, c.want)
		}
	}
}

func TestSampleCPU(t *testing.T) {
	s := sample{wrk: wrkResult{Requests: 100_000}, cpu: 1800 * time.Millisecond, wall: 2 * time.Second}
	if got := s.usPerReq(); got != 18 {
		t.Errorf("usPerReq = %v, want 18", got)
	}
	if got := s.cpuPct(); got != 90 {
		t.Errorf("cpuPct = %v, want 90", got)
	}
	if (sample{}).usPerReq() != 0 {
		t.Error("usPerReq with no requests is not 0")
	}
}

// TestPoolCPUIsReported: the memcached nodes' CPU per request during
// sessiongate+sessions' runs (full load, paced, cold) is in the report,
// with what it used while the other contenders ran.
func TestPoolCPUIsReported(t *testing.T) {
	// ms of pool CPU for 1000 requests: µs per request.
	s := func(poolMS float64) sample {
		return sample{wrk: wrkResult{Requests: 1000}, pool: time.Duration(poolMS * 1e6)}
	}
	ha := &contender{name: "HAProxy", kind: cHAProxy, rounds: []sample{s(0.2), s(0.1)}, paced: []sample{s(0.4)}}
	ss := &contender{name: "sessiongate+sessions", kind: cSessions,
		rounds: []sample{s(2), s(3), s(9)}, paced: []sample{s(5), s(6), s(7)},
		extra: map[string][]sample{"cold": {s(20), s(22), s(30)}}}
	r := &report{cs: []*contender{ha, ss}}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	r.plainTables(w)
	r.extraTables(w, []row{{id: "cold", kinds: []int{cSessions}}})
	for _, want := range []string{
		"used 3.0 µs per request during sessiongate+sessions' full-load rounds and 6.0 µs in its paced runs, " +
			"against 0.2 µs during the other contenders' runs",
		"In the cold rows the memcached nodes used 22.0 µs of CPU per request",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	if got := s(2).poolUsPerReq(); got != 2 {
		t.Errorf("poolUsPerReq = %v, want 2", got)
	}
}

func TestRatiosUseMediansAndPacedP99(t *testing.T) {
	mk := func(us []float64, pacedP99 time.Duration, idle int64) *contender {
		c := &contender{idle: idleResult{Conns: 1000, Before: 0, After: idle * 1000}}
		for _, u := range us {
			c.rounds = append(c.rounds, sample{wrk: wrkResult{Requests: 1000}, cpu: time.Duration(u * 1e6)})
		}
		// Paced rounds: the median is pacedP99, the others far off it.
		for _, p := range []time.Duration{pacedP99 / 2, pacedP99, 10 * pacedP99} {
			c.paced = append(c.paced, sample{wrk: wrkResult{P99: p, RPS: 4600}})
		}
		return c
	}
	cs := make([]*contender, numContenders)
	cs[cHAProxy] = mk([]float64{17, 18, 90}, time.Millisecond, 1000)
	cs[cNginx] = mk([]float64{17}, time.Millisecond, 1000)
	cs[cCaddy] = mk([]float64{80}, time.Millisecond, 1000)
	cs[cPlain] = mk([]float64{40, 36, 30}, 2*time.Millisecond, 15_000)
	cs[cSessions] = mk([]float64{45}, 2*time.Millisecond, 15_000)
	cs[cNetHTTP] = mk([]float64{54}, 2*time.Millisecond, 25_000)
	cs[cNoSockio] = mk([]float64{45}, 2*time.Millisecond, 15_000)
	for k := cHAProxyLog; k <= cPlainLog; k++ {
		cs[k] = &contender{logged: true}
	}
	// The log workload's rounds: each proxy's twin that logs.
	for k, us := range map[int][]float64{cHAProxyLog: {19, 20, 99}, cNginxLog: {34}, cCaddyLog: {120}, cPlainLog: {45, 50, 44}} {
		for _, u := range us {
			if cs[k].extra == nil {
				cs[k].extra = map[string][]sample{}
			}
			cs[k].extra["log"] = append(cs[k].extra["log"], sample{wrk: wrkResult{Requests: 1000}, cpu: time.Duration(u * 1e6)})
		}
	}
	for k, c := range cs {
		c.kind = k
	}
	got := map[string]float64{}
	for _, r := range ratios(cs, 5000) {
		got[r.name] = r.value
	}
	for name, want := range map[string]float64{
		"sessiongate ÷ HAProxy, CPU per request":                            2,
		"sessiongate+sessions ÷ sessiongate, CPU per request":               1.25,
		"Caddy ÷ sessiongate, CPU per request":                              80.0 / 36,
		"sessiongate ÷ HAProxy, p99 at the same offered load":               2,
		"sessiongate, RSS per idle keep-alive connection":                   15,
		"sessiongate (net/http engine) ÷ sessiongate, CPU per request":      1.5,
		"sessiongate (no sockio) ÷ sessiongate, CPU per request":            1.25,
		"sessiongate (net/http engine), RSS per idle keep-alive connection": 25,
		"access log: HAProxy+log ÷ HAProxy, CPU per request":                20.0 / 18,
		"access log: nginx+log ÷ nginx, CPU per request":                    2,
		"access log: Caddy+log ÷ Caddy, CPU per request":                    1.5,
		"access log: sessiongate+log ÷ sessiongate, CPU per request":        1.25,
		"access log: sessiongate+log ÷ HAProxy+log, CPU per request":        45.0 / 20,
		"access log: sessiongate+log ÷ nginx+log, CPU per request":          45.0 / 34,
	} {
		if math.Abs(got[name]-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	cs[cHAProxy].paced[2].wrk.RPS = 4400 // one round short of 90% of 5000: not the same load
	for _, r := range ratios(cs, 5000) {
		if strings.Contains(r.name, "same offered load") && !math.IsNaN(r.value) {
			t.Errorf("%s = %v from a paced run short of the offered load", r.name, r.value)
		}
	}
}

func TestAutoRate(t *testing.T) {
	c := func(rps ...float64) *contender {
		x := &contender{}
		for _, r := range rps {
			x.rounds = append(x.rounds, sample{wrk: wrkResult{RPS: r}})
		}
		return x
	}
	if got := autoRate([]*contender{c(30000, 31000), c(10250, 9000, 11000), c(20000)}); got != 5100 {
		t.Errorf("autoRate = %d, want 5100 (half of the slowest median, 10250)", got)
	}
}

func TestSessionIDs(t *testing.T) {
	ids := sessionIDs(1000, rand.New(rand.NewPCG(1, 2)))
	re := regexp.MustCompile(`^[0-9a-v]{26}$`)
	seen := map[string]bool{}
	for _, id := range ids {
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
	if len(ids) != 1000 {
		t.Fatalf("%d ids", len(ids))
	}
	if again := sessionIDs(1000, rand.New(rand.NewPCG(1, 2))); !slices.Equal(ids, again) {
		t.Error("the same seed gave other ids")
	}
}

// TestWarmSessionsVisitsEachOnce: the pass before each run of
// sessiongate+sessions sends every session id once, as its session
// cookie, and reports a request that failed.
func TestWarmSessionsVisitsEachOnce(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("PHPSESSID")
		if err != nil || len(r.Cookies()) != 1 || c.Value == "bad" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		seen[c.Value]++
		mu.Unlock()
	}))
	defer srv.Close()
	ids := sessionIDs(1000, rand.New(rand.NewPCG(3, 4)))
	if err := warmSessions(t.Context(), srv.URL+"/", ids); err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(ids) {
		t.Fatalf("%d ids sent, want %d", len(seen), len(ids))
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("id %s sent %d times, want once", id, seen[id])
		}
	}
	if err := warmSessions(t.Context(), srv.URL+"/", []string{"bad"}); err == nil {
		t.Fatal("a request answered 400 was not reported")
	}
}

func TestMachineParsers(t *testing.T) {
	if kb, err := parseMemTotal("MemTotal:       24684096 kB\nMemFree: 1 kB\n"); err != nil || kb != 24684096 {
		t.Errorf("parseMemTotal = %d, %v", kb, err)
	}
	if m := cpuModel("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"); m != "AMD EPYC 7B13" {
		t.Errorf("cpuModel = %q", m)
	}
}

func TestParseProcStat(t *testing.T) {
	stat := "cpu  100 2 30 5000 7 1 4 9 50 0\ncpu0 50 1 15 2500 3 0 2 4 25 0\nintr 1\n"
	if got, err := parseProcStat(stat); err != nil || got != 100+2+30+1+4+9 {
		t.Errorf("parseProcStat = %d, %v; want 146", got, err)
	}
	if _, err := parseProcStat("intr 1\n"); err == nil {
		t.Error("parseProcStat found no cpu line but no error")
	}
}

func TestNoiseNotes(t *testing.T) {
	c := func(rps float64, others time.Duration) *contender {
		return &contender{rounds: []sample{{wall: time.Second, others: others}}, paced: []sample{{wrk: wrkResult{RPS: rps}}}}
	}
	if n := noiseNotes([]*contender{c(4900, 100*time.Millisecond), c(4600, 0)}, 5000); len(n) != 0 {
		t.Errorf("quiet run flagged: %q", n)
	}
	n := noiseNotes([]*contender{c(4900, 600*time.Millisecond), c(300, 500*time.Millisecond)}, 5000)
	if len(n) != 2 || !strings.Contains(n[0], "55%") || !strings.Contains(n[1], "300") {
		t.Errorf("busy run notes = %q", n)
	}
}

func TestBackendBodyIs21Bytes(t *testing.T) {
	for i := 1; i <= 3; i++ {
		if n := len(backendBody(i)); n != 21 {
			t.Errorf("backend %d body is %d bytes", i, n)
		}
	}
}

func TestWrkCommandLine(t *testing.T) {
	l := load{conns: 64, duration: 10 * time.Second, script: "bench/sessions.lua", ids: "/tmp/ids", delayMS: 13}
	want := "SESSIONS_FILE=/tmp/ids DELAY_MS=13 wrk -t1 -c64 -d10s --latency -s bench/sessions.lua http://x/"
	if got := l.command("http://x/"); got != want {
		t.Errorf("command =\n%s\nwant\n%s", got, want)
	}
	if got := (load{conns: 8, duration: 2 * time.Second}).command("http://x/"); got != "wrk -t1 -c8 -d2s --latency http://x/" {
		t.Errorf("plain command = %s", got)
	}
	closeLoad := load{conns: 8, duration: 2 * time.Second, headers: []string{"Connection: close"}}
	if got := closeLoad.args("http://x/"); !slices.Equal(got, []string{"-t1", "-c8", "-d2s", "--latency", "-H", "Connection: close", "http://x/"}) {
		t.Errorf("Connection: close args = %q", got)
	}
	if got := closeLoad.command("http://x/"); got != "wrk -t1 -c8 -d2s --latency -H 'Connection: close' http://x/" {
		t.Errorf("Connection: close command = %s", got)
	}
}

// The sessiongate configs the bench writes must pass sessiongate's own
// strict loader, so a schema change breaks this test rather than a bench run.
func TestSessiongateConfigsLoad(t *testing.T) {
	backends := []string{"127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"}
	servers := map[string]string{"nethttp": "  engine: net/http\n", "nosockio": "  sockio: false\n"}
	files, err := writeTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, pool := range map[string][]string{"plain": nil, "sessions": {"127.0.0.1:11211", "127.0.0.1:11212"}, "log": nil,
		"nethttp": nil, "nosockio": nil, "tls": nil} {
		dir := t.TempDir()
		p := filepath.Join(dir, name+".yaml")
		sg := sgConf{port: 8080, adminPort: 9090, backends: backends, memcached: pool, server: servers[name]}
		switch name {
		case "log":
			sg.accessLog = filepath.Join(dir, "access.log")
		case "tls":
			sg.cert, sg.key, sg.token = files.cert, files.key, "0123456789abcdef0123456789abcdef"
		}
		if err := os.WriteFile(p, []byte(sessiongateConf(sg)), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if (cfg.Session != nil) != (pool != nil) {
			t.Errorf("%s: session layer on = %v", name, cfg.Session != nil)
		}
		if cfg.AccessLog.Off != (sg.accessLog == "") || cfg.AccessLog.Path != sg.accessLog {
			t.Errorf("%s: access_log = %+v", name, cfg.AccessLog)
		}
		if (cfg.Server.Engine == "net/http") != (name == "nethttp") || cfg.Server.Sockio != (name != "nosockio") {
			t.Errorf("%s: engine %q, sockio %v", name, cfg.Server.Engine, cfg.Server.Sockio)
		}
		if (cfg.TLS != nil) != (sg.cert != "") || cfg.TLS != nil && (cfg.TLS.Cert != sg.cert || cfg.TLS.Key != sg.key) ||
			cfg.Admin.Token != sg.token {
			t.Errorf("%s: tls %+v, admin token %q", name, cfg.TLS, cfg.Admin.Token)
		}
	}
}

// The certificate is ECDSA P-256 for localhost and 127.0.0.1, and the
// combined file HAProxy reads holds both parts.
func TestWriteTLSFiles(t *testing.T) {
	f, err := writeTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf := pair.Leaf
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if err := leaf.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	both, err := os.ReadFile(f.combined)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(both), "BEGIN CERTIFICATE") || !strings.Contains(string(both), "BEGIN PRIVATE KEY") {
		t.Errorf("combined file:\n%s", both)
	}
}

// Each proxy's config listens with TLS only when asked to, on the port and
// with the files given.
func TestProxyConfigsTLS(t *testing.T) {
	backends := []string{"127.0.0.1:8081"}
	f := tlsFiles{port: 8443, cert: "/t/cert.pem", key: "/t/key.pem", combined: "/t/cert+key.pem"}
	h := haproxyConf(8080, backends, 100, 1000, false, f)
	if !strings.Contains(h, "bind 127.0.0.1:8443 ssl crt /t/cert+key.pem alpn h2,http/1.1\n") {
		t.Errorf("haproxy:\n%s", h)
	}
	n := nginxConf("/t", "nginx", 8080, backends, 100, "", f)
	for _, want := range []string{"listen 127.0.0.1:8443 ssl http2;", "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_certificate /t/cert.pem;", "ssl_certificate_key /t/key.pem;"} {
		if !strings.Contains(n, want) {
			t.Errorf("nginx lacks %q:\n%s", want, n)
		}
	}
	js, err := caddyConf(8080, backends, "", f)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen    []string `json:"listen"`
					Protocols []string `json:"protocols"`
					Policies  []any    `json:"tls_connection_policies"`
				} `json:"servers"`
			} `json:"http"`
			TLS struct {
				Certificates struct {
					LoadFiles []struct{ Certificate, Key string } `json:"load_files"`
				} `json:"certificates"`
			} `json:"tls"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(js, &cfg); err != nil {
		t.Fatal(err)
	}
	ts := cfg.Apps.HTTP.Servers["benchtls"]
	if !slices.Equal(ts.Listen, []string{"127.0.0.1:8443"}) || len(ts.Policies) != 1 || !slices.Contains(ts.Protocols, "h2") {
		t.Errorf("caddy TLS server = %+v", ts)
	}
	if lf := cfg.Apps.TLS.Certificates.LoadFiles; len(lf) != 1 || lf[0].Certificate != f.cert || lf[0].Key != f.key {
		t.Errorf("caddy load_files = %+v", lf)
	}
	for name, conf := range map[string]string{"haproxy": haproxyConf(8080, backends, 100, 1000, false, tlsFiles{}),
		"nginx": nginxConf("/t", "nginx", 8080, backends, 100, "", tlsFiles{})} {
		if strings.Contains(conf, "ssl") {
			t.Errorf("%s without TLS:\n%s", name, conf)
		}
	}
	if js, _ := caddyConf(8080, backends, "", tlsFiles{}); strings.Contains(string(js), "benchtls") {
		t.Errorf("caddy without TLS:\n%s", js)
	}
}

// h2load 1.52's report.
const h2loadOut = `starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.00s, 20373.50 req/s, 713.45KB/s
requests: 40747 total, 40875 started, 40747 done, 40740 succeeded, 7 failed, 0 errored, 0 timeout
status codes: 40740 2xx, 0 3xx, 3 4xx, 4 5xx
traffic: 1.39MB (1461158) total, 279.23KB (285929) headers (space savings 81.61%), 835.63KB (855687) data
                     min         max         mean         sd        +/- sd
time for request:      344us     29.61ms      6.19ms      2.69ms    70.57%
time for connect:     3.63ms      7.79ms      5.82ms      1.22ms    62.50%
time to 1st byte:     9.13ms     15.13ms     12.05ms      1.85ms    62.50%
req/s           :    1221.87     1325.72     1273.35       32.13    68.75%
`

func TestParseH2load(t *testing.T) {
	r, err := parseH2load(h2loadOut)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 40747, RPS: 20373.50, Non2xx: 7, SocketErr: 7, Mean: 6190 * time.Microsecond, H2load: true}
	if r != want {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
	if _, err := parseH2load("finished in 2.00s, 20373.50 req/s, 713.45KB/s\n"); err == nil {
		t.Error("incomplete h2load output accepted")
	}
}

func TestParseFlagsWorkloads(t *testing.T) {
	o, err := parseFlags([]string{"-workloads", "tls,cold"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !o.wants("tls") || !o.wants("cold") || o.wants("plain") || o.wants("h2") || !o.wantsTLS() {
		t.Errorf("workloads = %v", o.workloads)
	}
	var ids []string
	for _, r := range rows(o) {
		ids = append(ids, r.id)
	}
	if !slices.Equal(ids, []string{"tls", "cold"}) {
		t.Errorf("rows = %v", ids)
	}
	if _, err := parseFlags([]string{"-workloads", "tls,quic"}, io.Discard); err == nil {
		t.Error("unknown workload accepted")
	}
	def, _ := parseFlags(nil, io.Discard)
	if len(def.workloads) != 8 {
		t.Errorf("default workloads = %v", def.workloads)
	}
}

func TestParseFlagsQuick(t *testing.T) {
	o, err := parseFlags([]string{"-quick", "-rounds", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.rounds != 2 || o.duration != 2*time.Second || o.idle != 1000 || o.out != "" {
		t.Errorf("quick options = %+v", o)
	}
	if o.budget() > 5*time.Minute {
		t.Errorf("quick budget %s", o.budget())
	}
	def, _ := parseFlags(nil, io.Discard)
	if def.budget() > 10*time.Minute {
		t.Errorf("default run may take %s, over issue 19's 10 minutes", def.budget())
	}
	if _, err := parseFlags([]string{"-duration", "1500ms"}, io.Discard); err == nil {
		t.Error("fractional -duration accepted")
	}
}
