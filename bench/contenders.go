//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The contenders, in the order they run in every round.
const (
	cHAProxy = iota
	cNginx
	cCaddy
	cPlain
	cSessions
	// sessiongate plain again on net/http's server, and with sockio off:
	// what proxy/h1 and internal/sockio buy.
	cNetHTTP
	cNoSockio
	// The same four proxies again, each writing an access log to a file in
	// its native format: what logging costs.
	cHAProxyLog
	cNginxLog
	cCaddyLog
	cPlainLog
	numContenders
)

// contender is one proxy under test.
type contender struct {
	name     string
	kind     int // cHAProxy...
	proc     *proc
	addr     string // client-facing host:port
	admin    string // sessiongate's admin host:port; "" for the others
	sessions bool   // requests carry one of the live session cookies
	logged   bool   // writes an access log: in the log workload only
	variant  bool   // sessiongate with a fast path off: not a candidate for the paced rate
	rounds   []sample
	paced    []sample // one per round, at the same offered load
	idle     idleResult
	// The TLS listener for the tls, tlsnew and h2 workloads: the same
	// process for HAProxy, nginx and Caddy; a second sessiongate, as its
	// listen is either plain or TLS.
	tlsAddr  string
	tlsProc  *proc
	tlsAdmin string              // the second sessiongate's admin host:port
	extra    map[string][]sample // the other workloads' rounds, by row id
}

func (c *contender) url() string { return "http://" + c.addr + "/" }

// sample is one wrk run against a contender and the CPU time the contender
// spent during it.
type sample struct {
	wrk    wrkResult
	cpu    time.Duration // contender's user+system time during the run
	wall   time.Duration
	others time.Duration // CPU time of processes the bench did not start
	pool   time.Duration // the memcached nodes' CPU time during the run
}

// othersPct is the CPU that processes outside the bench used during the
// run, per wall time (100 = one core).
func (s sample) othersPct() float64 {
	if s.wall <= 0 {
		return 0
	}
	return 100 * s.others.Seconds() / s.wall.Seconds()
}

// usPerReq is the contender's CPU time per completed request, in µs.
func (s sample) usPerReq() float64 { return s.perReq(s.cpu) }

// poolUsPerReq is the memcached nodes' CPU time per request, in µs.
func (s sample) poolUsPerReq() float64 { return s.perReq(s.pool) }

// perReq is d per request wrk completed, in µs (0 for none).
func (s sample) perReq(d time.Duration) float64 {
	if s.wrk.Requests == 0 {
		return 0
	}
	return float64(d.Nanoseconds()) / 1e3 / float64(s.wrk.Requests)
}

// cpuPct is the contender's CPU time over wall time (100 = one core).
func (s sample) cpuPct() float64 {
	if s.wall <= 0 {
		return 0
	}
	return 100 * s.cpu.Seconds() / s.wall.Seconds()
}

// startContenders starts the five contenders on free ports, each waited for
// until it proxies a request to a backend.
func (b *bench) startContenders(ctx context.Context) error {
	goEnv := []string{"GOMAXPROCS=" + strconv.Itoa(b.o.gomaxprocs)}
	for _, i := range b.o.contenders() {
		port, err := freePort()
		if err != nil {
			return err
		}
		c := &contender{kind: i, addr: fmt.Sprintf("127.0.0.1:%d", port)}
		var name string
		var env, argv []string
		// accessLog is the logged contenders' access log file.
		accessLog := ""
		switch i {
		case cHAProxyLog, cNginxLog, cCaddyLog, cPlainLog:
			c.logged = true
		}
		// tls is where HAProxy, nginx and Caddy listen with TLS too.
		var tls tlsFiles
		if b.o.wantsTLS() && (i == cHAProxy || i == cNginx || i == cCaddy) {
			tls = b.tls
			if tls.port, err = freePort(); err != nil {
				return err
			}
			c.tlsAddr = fmt.Sprintf("127.0.0.1:%d", tls.port)
		}
		switch i {
		case cHAProxy, cHAProxyLog:
			c.name, name = "HAProxy", "haproxy"
			if c.logged {
				// HAProxy logs to syslog or a stream, not a file: its stdout
				// is the file the bench keeps every process's output in.
				c.name, name = "HAProxy+log", "haproxy-log"
			}
			conf, err := b.writeFile(name+".cfg", []byte(haproxyConf(port, b.backends, b.o.idle+1000, b.nofile, c.logged, tls)))
			if err != nil {
				return err
			}
			argv = []string{"haproxy", "-db", "-f", conf}
		case cNginx, cNginxLog:
			c.name, name = "nginx", "nginx"
			if c.logged {
				c.name, name = "nginx+log", "nginx-log"
				accessLog = filepath.Join(b.dir, name+".access")
			}
			conf, err := b.writeFile(name+".conf", []byte(nginxConf(b.dir, name, port, b.backends, b.nofile-100, accessLog, tls)))
			if err != nil {
				return err
			}
			argv = []string{"nginx", "-p", b.dir, "-e", filepath.Join(b.dir, name+".err"), "-c", conf}
		case cCaddy, cCaddyLog:
			c.name, name = "Caddy", "caddy"
			if c.logged {
				c.name, name = "Caddy+log", "caddy-log"
				accessLog = filepath.Join(b.dir, name+".access")
			}
			js, err := caddyConf(port, b.backends, accessLog, tls)
			if err != nil {
				return err
			}
			conf, err := b.writeFile(name+".json", js)
			if err != nil {
				return err
			}
			// Caddy keeps state under $HOME/XDG dirs: keep it in the temp dir.
			env = append(goEnv, "HOME="+b.dir, "XDG_CONFIG_HOME="+filepath.Join(b.dir, "xdg"),
				"XDG_DATA_HOME="+filepath.Join(b.dir, "xdg"))
			argv = []string{"caddy", "run", "--config", conf}
		case cPlain, cSessions, cNetHTTP, cNoSockio, cPlainLog:
			c.name, name = "sessiongate", "sessiongate"
			var pool []string
			server := "" // server: keys
			switch i {
			case cSessions:
				c.name, name, pool, c.sessions = "sessiongate+sessions", "sessiongate-sessions", b.pool, true
			case cNetHTTP:
				c.name, name, server, c.variant = "sessiongate (net/http engine)", "sessiongate-nethttp", "  engine: net/http\n", true
			case cNoSockio:
				c.name, name, server, c.variant = "sessiongate (no sockio)", "sessiongate-nosockio", "  sockio: false\n", true
			}
			if c.logged {
				c.name, name = "sessiongate+log", "sessiongate-log"
				accessLog = filepath.Join(b.dir, name+".access")
			}
			adminPort, err := freePort()
			if err != nil {
				return err
			}
			c.admin = fmt.Sprintf("127.0.0.1:%d", adminPort)
			sg := sgConf{port: port, adminPort: adminPort, backends: b.backends, memcached: pool, accessLog: accessLog,
				server: server, token: b.token}
			conf, err := b.writeFile(name+".yaml", []byte(sessiongateConf(sg)))
			if err != nil {
				return err
			}
			env = goEnv
			argv = []string{b.o.sessiongate, "run", "-config", conf, "-log-level", "warn"}
			if i == cPlain && b.o.wantsTLS() {
				if err := b.startSessiongateTLS(ctx, c, sg, env); err != nil {
					return err
				}
			}
		}
		if c.proc, err = b.ps.start(name, env, argv...); err != nil {
			return err
		}
		if err := waitReady(ctx, c.proc, httpCheck(c.url(), "hello from lamp")); err != nil {
			return err
		}
		if c.tlsAddr != "" && c.tlsProc == nil {
			c.tlsProc = c.proc
		}
		if c.tlsAddr != "" {
			if err := waitReady(ctx, c.tlsProc, httpCheck("https://"+c.tlsAddr+"/", "hello from lamp")); err != nil {
				return err
			}
		}
		b.cs = append(b.cs, c)
	}
	return nil
}

// startSessiongateTLS starts plain sessiongate's twin with tls: set, c's
// TLS listener.
func (b *bench) startSessiongateTLS(ctx context.Context, c *contender, sg sgConf, env []string) error {
	var err error
	if sg.port, err = freePort(); err != nil {
		return err
	}
	if sg.adminPort, err = freePort(); err != nil {
		return err
	}
	sg.cert, sg.key = b.tls.cert, b.tls.key
	c.tlsAddr, c.tlsAdmin = fmt.Sprintf("127.0.0.1:%d", sg.port), fmt.Sprintf("127.0.0.1:%d", sg.adminPort)
	conf, err := b.writeFile("sessiongate-tls.yaml", []byte(sessiongateConf(sg)))
	if err != nil {
		return err
	}
	c.tlsProc, err = b.ps.start("sessiongate-tls", env, b.o.sessiongate, "run", "-config", conf, "-log-level", "warn")
	return err
}

// load is the wrk load for c: full speed when delayMS is 0, else paced.
func (b *bench) load(c *contender, d time.Duration, delayMS int) load {
	l := load{conns: b.o.conns, duration: d, delayMS: delayMS}
	if c.sessions {
		l.ids = b.idsFile
	}
	if l.ids != "" || delayMS > 0 {
		l.script = b.lua
	}
	return l
}

// measure runs one wrk load against c and charges c's CPU time to it. It
// also records how much CPU time processes outside the bench (not the
// contenders, backends, memcached or wrk) used meanwhile: the noise.
func (b *bench) measure(ctx context.Context, c *contender, l load) (sample, error) {
	if c.sessions {
		if err := warmSessions(ctx, c.url(), b.ids); err != nil {
			return sample{}, fmt.Errorf("%s: %w", c.name, err)
		}
	}
	s, err := b.measureProc(ctx, c.proc, func(ctx context.Context) (wrkResult, time.Duration, error) {
		return runWrk(ctx, c.url(), l)
	})
	if err != nil {
		return s, fmt.Errorf("%s: %w", c.name, err)
	}
	return s, nil
}

// warmSessions sends one request per session id in ids to url (unmeasured):
// the session rows are to measure warm sessions, but the other contenders'
// runs between two runs of sessiongate+sessions outlast verify_ttl (2 s), so
// without this every session's first request of a run waited for its
// lookup on the pool: 1000 of a 5 s paced run's ~25000 requests, all in its
// p99 (the cold row measures that case on purpose). Eight connections, so
// that it takes a fraction of a second.
func warmSessions(ctx context.Context, url string, ids []string) error {
	const conns = 8
	client := &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}}
	defer client.CloseIdleConnections()
	errs := make([]error, conns)
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			for i := w; i < len(ids) && errs[w] == nil; i += conns {
				errs[w] = warmOne(ctx, client, url, ids[i])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("warming the sessions: %w", err)
	}
	return nil
}

// warmOne sends one request with session id's cookie to url.
func warmOne(ctx context.Context, client *http.Client, url, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Cookie", "PHPSESSID="+id)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return err
}

// measureProc runs drive, which returns the load generator's result and
// CPU time, and charges p's CPU time to it.
func (b *bench) measureProc(ctx context.Context, p *proc, drive func(context.Context) (wrkResult, time.Duration, error)) (sample, error) {
	pid := p.pid()
	t0, err := cpuTicks(pid)
	if err != nil {
		return sample{}, err
	}
	ours0, pool0 := b.ourTicks(), b.poolTicks()
	busy0, err := machineBusy()
	if err != nil {
		return sample{}, err
	}
	start := time.Now()
	w, wrkCPU, err := drive(ctx)
	wall := time.Since(start)
	if e := p.exited(); e != nil {
		return sample{}, e
	}
	if err != nil {
		return sample{}, err
	}
	t1, err := cpuTicks(pid)
	if err != nil {
		return sample{}, err
	}
	busy1, err := machineBusy()
	if err != nil {
		return sample{}, err
	}
	if w.Requests == 0 {
		return sample{}, errors.New("the load generator completed no request")
	}
	others := b.ticks(busy1-busy0-(b.ourTicks()-ours0)) - wrkCPU
	pool := b.ticks(b.poolTicks() - pool0)
	return sample{wrk: w, cpu: b.ticks(t1 - t0), wall: wall, others: max(0, others), pool: pool}, nil
}

// ticks converts clock ticks to time.
func (b *bench) ticks(n int64) time.Duration { return time.Duration(n * int64(time.Second) / b.clk) }

// ourTicks is the CPU time of every process the bench started, in ticks.
func (b *bench) ourTicks() int64 { return sumTicks(b.ps.list) }

// poolTicks is the memcached nodes' CPU time, in ticks.
func (b *bench) poolTicks() int64 { return sumTicks(b.poolPs) }

// sumTicks is the CPU time of ps, in ticks.
func sumTicks(ps []*proc) int64 {
	var sum int64
	for _, p := range ps {
		n, _ := cpuTicks(p.pid()) // a process that is gone fails measure anyway
		sum += n
	}
	return sum
}

// measureAll warms every contender up, runs the alternating full-load
// rounds, the paced runs and the idle-connection test.
func (b *bench) measureAll(ctx context.Context, rep *report) error {
	cs := plainOnes(b.cs)
	b.say("warming up")
	for _, c := range cs {
		if _, err := b.measure(ctx, c, b.load(c, time.Second, 0)); err != nil {
			return err
		}
	}
	for r := 1; r <= b.o.rounds; r++ {
		for _, c := range cs {
			s, err := b.measure(ctx, c, b.load(c, b.o.duration, 0))
			if err != nil {
				return err
			}
			c.rounds = append(c.rounds, s)
			b.say("round %d/%d %-21s %7.0f req/s %6.1f µs/req CPU %3.0f%% p99 %-9s errors %d", r, b.o.rounds,
				c.name, s.wrk.RPS, s.usPerReq(), s.cpuPct(), s.wrk.P99, s.wrk.Errors())
		}
	}

	rep.rate = b.o.rate
	if rep.rate == 0 {
		rep.rate = autoRate(cs)
	}
	rep.delayMS = max(1, (b.o.conns*1000+rep.rate/2)/rep.rate)
	// As many paced rounds as full-load ones, alternating too: one paced
	// run's p99 moves by a third between runs on a shared machine.
	for r := 1; r <= b.o.rounds; r++ {
		for _, c := range cs {
			s, err := b.measure(ctx, c, b.load(c, b.o.paced(), rep.delayMS))
			if err != nil {
				return err
			}
			c.paced = append(c.paced, s)
			b.say("paced round %d/%d ~%d req/s %-21s %7.0f req/s %6.1f µs/req p99 %-9s errors %d", r, b.o.rounds,
				rep.offered(b.o.conns), c.name, s.wrk.RPS, s.usPerReq(), s.wrk.P99, s.wrk.Errors())
		}
	}

	for _, c := range cs {
		request := func(int) string { return idleRequest("") }
		if c.sessions {
			request = func(i int) string { return idleRequest("PHPSESSID=" + b.ids[i%len(b.ids)]) }
		}
		r, err := measureIdle(ctx, c.proc.pid(), c.addr, b.o.idle, request)
		if err != nil {
			return fmt.Errorf("%s idle test: %w", c.name, err)
		}
		if r.Err != nil {
			rep.notes = append(rep.notes, fmt.Sprintf("%s held only %d of %d idle connections: %v",
				c.name, r.Conns, b.o.idle, r.Err))
		}
		c.idle = r
		b.say("idle %-21s %d conns, RSS %.1f → %.1f MiB, %.1f kB/conn", c.name, r.Conns,
			float64(r.Before)/(1<<20), float64(r.After)/(1<<20), r.PerConn()/1000)
		if e := c.proc.exited(); e != nil {
			return e
		}
	}
	return nil
}

// plainOnes are the plain workload's contenders: all but those that log,
// which run in the log workload's rows.
func plainOnes(cs []*contender) []*contender {
	return slices.DeleteFunc(slices.Clone(cs), func(c *contender) bool { return c.logged })
}

// autoRate is half the slowest contender's median full-load rate, rounded
// down to 100 req/s: a load every contender handles without queueing.
func autoRate(cs []*contender) int {
	slowest := 0.0
	for i, c := range cs {
		if c.variant {
			continue // the paced load stays what it was before they were added
		}
		if rps := median(c.each(func(s sample) float64 { return s.wrk.RPS })); i == 0 || rps < slowest {
			slowest = rps
		}
	}
	return max(100, int(slowest/2)/100*100)
}

// commands lists every command the run used, with the temp dir as $TMP.
func (b *bench) commands(rep *report) []string {
	var out []string
	for _, p := range b.ps.list {
		out = append(out, strings.TrimSpace(strings.Join(p.env, " ")+" "+strings.Join(p.cmd.Args, " ")))
	}
	for _, c := range plainOnes(b.cs) {
		if b.o.wants("plain") {
			out = append(out, b.load(c, b.o.duration, 0).command(c.url())+"   # "+c.name+", each round")
		}
	}
	for _, c := range plainOnes(b.cs) {
		if b.o.wants("plain") {
			out = append(out, b.load(c, b.o.paced(), rep.delayMS).command(c.url())+"   # "+c.name+", paced, each round")
		}
	}
	out = append(out, b.rowCommands()...)
	for i := range out {
		out[i] = strings.ReplaceAll(out[i], b.dir, "$TMP")
		out[i] = strings.ReplaceAll(out[i], b.lua, luaScript)
	}
	return out
}
