//go:build linux

// Command bench is `make bench`: it runs sessiongate side by side with
// HAProxy, nginx and Caddy in front of the same three fast nginx backends,
// drives each with the same wrk load in alternating rounds of one run, and
// reports each proxy's CPU time per request, throughput, latency, errors and
// RSS per idle keep-alive connection, with the ratios issues 6 and 19 set
// targets for. Everything runs on loopback, in a temporary directory, and every
// process it starts is killed and waited for when it ends (also on ^C).
//
// Beside that plain workload (small keep-alive GETs) it runs, each in
// alternating rounds of -wduration: TLS keep-alive (wrk over https), a new
// TLS connection per request with a full or a resumed handshake (a Go
// client, tlsload.go), HTTP/2 over TLS (h2load), a new TCP connection per
// request (wrk, Connection: close), 1 MiB responses, and sessions with a
// cold verification cache (100 000 live sessions, each request another);
// -workloads selects them.
//
// Run it from the repository root, after `make build`:
//
//	go run ./bench [-quick] [-rounds 3] [-duration 10s] [-wduration 2s] [-conns 64] [-idle 10000]
//	               [-rate 0] [-gomaxprocs 1] [-out bench/results.md]
//	               [-workloads plain,tls,tlsnew,h2,close,large,cold,log]
//	               [-sessiongate bin/sessiongate] [-variants] [-profile DIR]
//
// -profile DIR takes a CPU profile of sessiongate under each selected
// workload after the measurements (one more run each, not counted) into
// DIR/<workload>.pprof, for `go tool pprof -top`.
//
// The log workload runs each proxy again with an access log to a file in
// its native format (HAProxy+log, nginx+log, Caddy+log, sessiongate+log),
// beside its twin without one: what logging costs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// luaScript is the wrk script for session cookies and pacing, relative to
// the repository root.
const luaScript = "bench/sessions.lua"

// sessionCount is how many live sessions the session-mode requests cycle
// through.
const sessionCount = 1000

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	rounds      int
	duration    time.Duration // one wrk run at full load
	conns       int           // wrk connections
	idle        int           // idle keep-alive connections for the RSS test
	rate        int           // offered req/s for the paced runs; 0 = half the slowest contender's
	gomaxprocs  int           // for both Go contenders, Caddy and sessiongate
	out         string
	sessiongate string
	quick       bool
	variants    bool // also run sessiongate on net/http and without sockio
	wduration   time.Duration
	workloads   map[string]bool // of allWorkloads
	profile     string          // directory for CPU profiles; "" for none
}

// wants reports whether workload key was selected.
func (o options) wants(key string) bool { return o.workloads[key] }

// wantsTLS reports whether a TLS listener is needed.
func (o options) wantsTLS() bool { return o.wants("tls") || o.wants("tlsnew") || o.wants("h2") }

// profileRun is the length of a -profile run.
const profileRun = 10 * time.Second

// contenders are the kinds of contender the run starts, in order.
func (o options) contenders() []int {
	var ks []int
	for k := range numContenders {
		switch {
		case k >= cHAProxyLog && !o.wants("log"), (k == cNetHTTP || k == cNoSockio) && !o.variants:
			continue
		}
		ks = append(ks, k)
	}
	return ks
}

// paced is the length of one paced run.
func (o options) paced() time.Duration {
	return max(2*time.Second, (o.duration / 2).Truncate(time.Second))
}

// budget bounds the whole run: the time wrk and the other load generators
// are asked to run (every round, paced run and warm-up), a tenth of that
// for starting and reading them, the idle-connection tests (5 s each),
// storing the cold sessions (20 s) and start-up (40 s). A default run of
// 7m22s (before the log workload) spent 28 s outside its load runs.
func (o options) budget() time.Duration {
	var d time.Duration
	if o.wants("plain") {
		n := time.Duration(len(plainKinds(o.contenders())))
		d = n * (time.Duration(o.rounds)*(o.duration+o.paced()) + time.Second)
	}
	runs := 0
	for _, r := range rows(o) {
		runs += len(r.kinds)
	}
	d += time.Duration(runs) * (time.Duration(o.rounds)*o.wduration + time.Second)
	d += d / 10
	if o.wants("plain") {
		d += time.Duration(len(plainKinds(o.contenders()))) * 5 * time.Second
	}
	if o.wants("cold") {
		d += 20 * time.Second
	}
	if o.profile != "" {
		d += time.Duration(len(rows(o))+2) * (profileRun + 5*time.Second)
	}
	return d + 40*time.Second
}

// plainKinds are the kinds of the plain workload's contenders: those that
// do not log (see plainOnes).
func plainKinds(ks []int) []int {
	return slices.DeleteFunc(ks, func(k int) bool { return k >= cHAProxyLog })
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs wrk once against every contender")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of one wrk run (whole seconds)")
	fs.IntVar(&o.conns, "conns", 64, "wrk connections")
	fs.IntVar(&o.idle, "idle", 10000, "idle keep-alive connections for the RSS test")
	fs.IntVar(&o.rate, "rate", 0, "req/s offered in the paced runs (0: half the slowest contender's rate)")
	fs.IntVar(&o.gomaxprocs, "gomaxprocs", 1, "GOMAXPROCS for Caddy and sessiongate (1: one thread, like the others)")
	fs.StringVar(&o.out, "out", "bench/results.md", "markdown report file (\"\": stdout only)")
	fs.StringVar(&o.sessiongate, "sessiongate", "bin/sessiongate", "sessiongate binary (make build)")
	fs.BoolVar(&o.quick, "quick", false, "smoke run: -rounds 1 -duration 2s -wduration 1s -idle 1000, and -out only if given")
	fs.DurationVar(&o.wduration, "wduration", 2*time.Second, "length of one run of the other workloads (whole seconds)")
	wl := fs.String("workloads", allWorkloads, "workloads to run, comma-separated, of "+allWorkloads)
	fs.StringVar(&o.profile, "profile", "", "directory to write CPU profiles of sessiongate under each workload into")
	fs.BoolVar(&o.variants, "variants", false, "also run sessiongate with server.engine: net/http and with server.sockio: false "+
		"(2 more contenders): what proxy/h1 and sockio buy")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.workloads = map[string]bool{}
	for _, k := range strings.Split(*wl, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains(strings.Split(allWorkloads, ","), k) {
			return o, fmt.Errorf("-workloads: unknown workload %q (known: %s)", k, allWorkloads)
		}
		o.workloads[k] = true
	}
	if len(o.workloads) == 0 {
		return o, errors.New("-workloads: none selected")
	}
	if o.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["rounds"] {
			o.rounds = 1
		}
		if !set["duration"] {
			o.duration = 2 * time.Second
		}
		if !set["idle"] {
			o.idle = 1000
		}
		if !set["wduration"] {
			o.wduration = time.Second
		}
		if !set["out"] {
			o.out = "" // a smoke run does not replace the committed results
		}
	}
	switch {
	case o.rounds < 1:
		return o, errors.New("-rounds must be at least 1")
	case o.duration < time.Second || o.duration%time.Second != 0:
		return o, errors.New("-duration must be whole seconds, at least 1s")
	case o.wduration < time.Second || o.wduration%time.Second != 0:
		return o, errors.New("-wduration must be whole seconds, at least 1s")
	case o.conns < 1 || o.idle < 1 || o.gomaxprocs < 1 || o.rate < 0:
		return o, errors.New("-conns, -idle and -gomaxprocs must be positive, -rate not negative")
	}
	return o, nil
}

// bench is one run's state.
type bench struct {
	o        options
	dir      string // temp dir: configs, logs, the ids file
	ps       *procs
	clk      int64 // clock ticks per second (CLK_TCK)
	nofile   int   // open-files limit every process runs with
	backends []string
	pool     []string // memcached nodes
	poolPs   []*proc  // their processes
	ids      []string
	idsFile  string
	lua      string // absolute path of luaScript
	coldFile string // the cold workload's session ids
	tls      tlsFiles
	token    string // sessiongate's admin token, for -profile
	cs       []*contender
	say      func(format string, a ...any)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	b := &bench{o: o, say: func(format string, a ...any) {
		fmt.Fprintf(stderr, "bench: "+format+"\n", a...)
	}}
	if err := b.checkTools(); err != nil {
		return err
	}
	rep := &report{start: time.Now(), loadStart: loadAvg()}
	if b.nofile, err = raiseNofile(40000); err != nil {
		return fmt.Errorf("open-files limit: %w", err)
	}
	if b.nofile < 40000 {
		rep.notes = append(rep.notes, fmt.Sprintf("Every process ran with an open-files limit of %d "+
			"(the hard limit here; 40000 was asked for). HAProxy gets `no strict-limits` so that it accepts "+
			"a maxconn above half of it.", b.nofile))
	}
	if most := b.nofile - 500; b.o.idle > most {
		rep.notes = append(rep.notes, fmt.Sprintf("The open-files hard limit is %d and could not be raised: "+
			"the idle test holds %d connections instead of %d.", b.nofile, most, b.o.idle))
		b.o.idle = most
	}
	if b.clk, err = clockTicks(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, b.o.budget())
	defer cancel()
	defer func() {
		switch {
		case err == nil:
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			err = fmt.Errorf("run went over its bound of %s: %w", b.o.budget(), err)
		case ctx.Err() != nil:
			err = fmt.Errorf("interrupted: %w", err)
		}
	}()

	if b.dir, err = os.MkdirTemp("", "sessiongate-bench-"); err != nil {
		return err
	}
	defer func() {
		if err == nil {
			os.RemoveAll(b.dir)
		} else {
			b.say("configs and logs kept in %s", b.dir)
		}
	}()
	b.ps = &procs{dir: b.dir}
	defer b.ps.stopAll() // runs before the directory is removed

	rep.machine, rep.tools = machineInfo(), toolVersions(ctx, b.o.sessiongate)
	b.say("run bounded by %s; temp dir %s", b.o.budget(), b.dir)
	if b.o.wantsTLS() {
		if b.tls, err = writeTLSFiles(b.dir); err != nil {
			return err
		}
	}
	if b.o.profile != "" {
		b.token = fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64())
	}
	if err := b.startFarm(ctx); err != nil {
		return err
	}
	if err := b.startContenders(ctx); err != nil {
		return err
	}
	if b.o.wants("plain") {
		if err := b.measureAll(ctx, rep); err != nil {
			return err
		}
	}
	if err := b.measureRows(ctx); err != nil {
		return err
	}
	if b.o.profile != "" {
		if err := b.profiles(ctx); err != nil {
			return err
		}
	}
	rep.verdicts, err = sessionVerdicts(b.cs[cSessions].admin)
	if err != nil {
		return err
	}
	rep.end, rep.loadEnd = time.Now(), loadAvg()
	rep.o, rep.cs = b.o, b.cs
	rep.notes = append(rep.notes, errorNotes(b.cs)...)
	rep.notes = append(rep.notes, resumeNotes(b.cs)...)
	rep.notes = append(rep.notes, noiseNotes(b.cs, rep.offered(b.o.conns))...)
	rep.commands = b.commands(rep)

	md := rep.markdown()
	fmt.Fprint(stdout, md)
	if b.o.out != "" {
		if err := os.WriteFile(b.o.out, []byte(md), 0o644); err != nil {
			return err
		}
		b.say("wrote %s", b.o.out)
	}
	return nil
}

// checkTools fails with the Debian packages to install when a tool is missing.
func (b *bench) checkTools() error {
	var pkgs []string
	for _, t := range [][2]string{{"haproxy", "haproxy"}, {"nginx", "nginx-light"}, {"caddy", "caddy"},
		{"wrk", "wrk"}, {"memcached", "memcached"}, {"getconf", "libc-bin"}, {"h2load", "nghttp2-client"}} {
		if t[0] == "h2load" && !b.o.wants("h2") {
			continue
		}
		if _, err := exec.LookPath(t[0]); err != nil {
			pkgs = append(pkgs, t[1])
		}
	}
	if len(pkgs) > 0 {
		return fmt.Errorf("missing tools; run scripts/deps.sh bench, or: apt-get install -y %s", strings.Join(pkgs, " "))
	}
	if _, err := os.Stat(b.o.sessiongate); err != nil {
		return fmt.Errorf("sessiongate binary: %w (run make build, or pass -sessiongate)", err)
	}
	lua, err := filepath.Abs(luaScript)
	if err == nil {
		_, err = os.Stat(lua)
	}
	if err != nil {
		return fmt.Errorf("%w: run the bench from the repository root (go run ./bench)", err)
	}
	b.lua = lua
	return nil
}

// raiseNofile lifts the open-files limit towards want (the hard limit too,
// which needs CAP_SYS_RESOURCE) and returns the soft limit now in force.
// Children inherit it: calling Setrlimit also stops Go from restoring the
// original soft limit in the processes it starts.
func raiseNofile(want uint64) (int, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: max(want, rl.Max)}); err != nil {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, err
		}
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	return int(min(rl.Cur, 1<<30)), nil
}

// clockTicks is CLK_TCK, the unit of /proc/<pid>/stat CPU times.
func clockTicks() (int64, error) {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 0, fmt.Errorf("getconf CLK_TCK: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("getconf CLK_TCK: %q", out)
	}
	return n, nil
}

// writeFile writes content into the temp dir and returns its path.
func (b *bench) writeFile(name string, content []byte) (string, error) {
	p := filepath.Join(b.dir, name)
	return p, os.WriteFile(p, content, 0o644)
}

// startFarm starts the three backends and the memcached pool, and stores
// the sessions on every node.
func (b *bench) startFarm(ctx context.Context) error {
	large, err := b.writeFile("large.bin", make([]byte, largeBody))
	if err != nil {
		return err
	}
	for i := 1; i <= 3; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		name := fmt.Sprintf("lamp%02d", i)
		conf, err := b.writeFile(name+".conf", []byte(backendConf(b.dir, name, port, i, large)))
		if err != nil {
			return err
		}
		p, err := b.ps.start(name, nil, "nginx", "-p", b.dir, "-e", filepath.Join(b.dir, name+".err"), "-c", conf)
		if err != nil {
			return err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if err := waitReady(ctx, p, httpCheck("http://"+addr+"/", backendBody(i))); err != nil {
			return err
		}
		b.backends = append(b.backends, addr)
	}
	for i := 1; i <= 3; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		argv := []string{"memcached", "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-t", "1", "-m", "64"}
		if os.Geteuid() == 0 {
			argv = append(argv, "-u", "nobody") // memcached refuses to run as root
		}
		p, err := b.ps.start(fmt.Sprintf("memcached%d", i), nil, argv...)
		if err != nil {
			return err
		}
		if err := waitReady(ctx, p, tcpCheck(addr)); err != nil {
			return err
		}
		b.pool, b.poolPs = append(b.pool, addr), append(b.poolPs, p)
	}
	b.ids = sessionIDs(sessionCount, rand.New(rand.NewPCG(6, 6)))
	if b.idsFile, err = b.writeFile("sessions.txt", []byte(strings.Join(b.ids, "\n")+"\n")); err != nil {
		return err
	}
	if err := storeSessions(b.pool, b.ids); err != nil {
		return err
	}
	if !b.o.wants("cold") {
		return nil
	}
	// Another seed: the warm ids are never among them (a clash of two
	// random 130-bit ids is not going to happen).
	cold := sessionIDs(coldCount, rand.New(rand.NewPCG(19, 19)))
	if b.coldFile, err = b.writeFile("cold-sessions.txt", []byte(strings.Join(cold, "\n")+"\n")); err != nil {
		return err
	}
	b.say("storing %d cold sessions on every node", coldCount)
	return storeColdSessions(ctx, b.pool, cold)
}

// sessionIDs makes n distinct ids as PHP generates them by default
// (session.sid_length 26, sid_bits_per_character 5: [0-9a-v]).
func sessionIDs(n int, r *rand.Rand) []string {
	const chars = "0123456789abcdefghijklmnopqrstuv"
	seen := make(map[string]bool, n)
	ids := make([]string, 0, n)
	for len(ids) < n {
		var id [26]byte
		for i := range id {
			id[i] = chars[r.IntN(len(chars))]
		}
		if s := string(id[:]); !seen[s] {
			seen[s] = true
			ids = append(ids, s)
		}
	}
	return ids
}

// storeSessions writes every session onto every node the way PHP's
// memcache handler does (key = id, raw serializer output, flags 0).
func storeSessions(pool, ids []string) error {
	for _, addr := range pool {
		mc := memcache.New(addr)
		for _, id := range ids {
			if err := mc.Set(&memcache.Item{Key: id, Value: []byte("visits|i:1;"), Expiration: 3600}); err != nil {
				mc.Close()
				return fmt.Errorf("store session on %s: %w", addr, err)
			}
		}
		mc.Close()
	}
	return nil
}

// sessionVerdicts returns sessiongate's session lookup counters, which show
// whether the session-mode requests were really checked.
func sessionVerdicts(admin string) ([]string, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + admin + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("sessiongate metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("sessiongate metrics: %w", err)
	}
	var lines []string
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "sessiongate_session_") && !strings.HasPrefix(line, "#") {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines, nil
}
