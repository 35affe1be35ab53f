package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func stats(pid, uptime int) map[string]string {
	return map[string]string{"pid": strconv.Itoa(pid), "uptime": strconv.Itoa(uptime),
		"curr_items": "7", "evictions": "1", "bytes": "900", "limit_maxbytes": "67108864"}
}

func TestNodeApply(t *testing.T) {
	type probe struct {
		stats map[string]string
		err   error
	}
	down := probe{err: errors.New("connection refused")}
	tests := []struct {
		name         string
		probes       []probe
		wantEvents   []nodeEvent
		wantRestarts int
		wantWhy      string // reason of the last event
	}{
		{"first contact", []probe{{stats: stats(10, 5)}}, []nodeEvent{nodeUp}, 0, ""},
		{"steady", []probe{{stats: stats(10, 5)}, {stats: stats(10, 6)}, {stats: stats(10, 6)}},
			[]nodeEvent{nodeUp, nodeSame, nodeSame}, 0, ""},
		{"pid changed", []probe{{stats: stats(10, 5)}, {stats: stats(11, 9)}},
			[]nodeEvent{nodeUp, nodeRestarted}, 1, "pid changed from 10 to 11"},
		{"uptime backwards", []probe{{stats: stats(10, 500)}, {stats: stats(10, 2)}},
			[]nodeEvent{nodeUp, nodeRestarted}, 1, "uptime went backwards from 500s to 2s"},
		{"down once logged once", []probe{{stats: stats(10, 5)}, down, down},
			[]nodeEvent{nodeUp, nodeDown, nodeSame}, 0, ""},
		{"first probe fails", []probe{down, down}, []nodeEvent{nodeDown, nodeSame}, 0, ""},
		{"never seen, then up", []probe{down, {stats: stats(10, 5)}}, []nodeEvent{nodeDown, nodeUp}, 0, ""},
		{"back after down", []probe{{stats: stats(10, 5)}, down, {stats: stats(10, 9)}},
			[]nodeEvent{nodeUp, nodeDown, nodeRestarted}, 1, "came back after being down"},
		{"back with new pid", []probe{{stats: stats(10, 5)}, down, {stats: stats(12, 1)}},
			[]nodeEvent{nodeUp, nodeDown, nodeRestarted}, 1, "pid changed from 10 to 12"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &node{}
			now := time.Unix(1000, 0)
			var events []nodeEvent
			var why string
			for _, p := range tt.probes {
				now = now.Add(time.Second)
				var ev nodeEvent
				ev, why = n.apply(p.stats, p.err, now)
				events = append(events, ev)
			}
			if !slices.Equal(events, tt.wantEvents) || n.Restarts != tt.wantRestarts {
				t.Fatalf("events %v restarts %d, want %v and %d", events, n.Restarts, tt.wantEvents, tt.wantRestarts)
			}
			if tt.wantWhy != "" && why != tt.wantWhy {
				t.Fatalf("reason %q, want %q", why, tt.wantWhy)
			}
			if tt.wantRestarts > 0 && !n.LastRestart.Equal(now) {
				t.Fatalf("LastRestart = %v, want %v", n.LastRestart, now)
			}
		})
	}
}

// TestNodeCheckerFakeProbe drives a node through a restart and an outage
// with a scripted probe and a hand-stepped clock.
func TestNodeCheckerFakeProbe(t *testing.T) {
	script := []struct {
		stats map[string]string
		err   error
	}{
		{stats: stats(100, 10)},
		{stats: stats(100, 11)},
		{stats: stats(200, 1)}, // restarted
		{err: errors.New("connection refused")},
		{err: errors.New("connection refused")},
		{stats: stats(200, 5)}, // back after being down
	}
	var mu sync.Mutex // guards calls
	calls := 0
	probe := func(ctx context.Context, addr string) (map[string]string, error) {
		if _, ok := ctx.Deadline(); !ok || addr != "mc1:11211" {
			t.Errorf("probe(%q) without its own deadline", addr)
		}
		mu.Lock()
		defer mu.Unlock()
		s := script[min(calls, len(script)-1)]
		calls++
		return s.stats, s.err
	}
	clk := newStepClock()
	rep := nodeReporter{newRecorder[nodeObs]()}
	logger, logs := newLogger()
	c := NewNodeChecker(NodeOptions{Interval: time.Second}, []string{"mc1:11211"}, probe, rep, logger, WithClock(clk))
	runChecker(t, c.Run)
	for range len(script) - 1 {
		clk.wait(t, time.Second)
		clk.fire()
	}
	clk.wait(t, time.Second)

	want := []nodeObs{
		{"mc1:11211", true, 100, 10}, {"mc1:11211", true, 100, 11}, {"mc1:11211", true, 200, 1},
		{"mc1:11211", false, 0, 0}, {"mc1:11211", false, 0, 0}, {"mc1:11211", true, 200, 5},
	}
	if got := rep.all(); !slices.Equal(got, want) {
		t.Fatalf("observations\n got %v\nwant %v", got, want)
	}
	st := c.Status()[0]
	if !st.Up || st.Restarts != 2 || st.Pid != 200 || st.Uptime != 5*time.Second || st.Items != 7 ||
		st.Evictions != 1 || st.BytesUsed != 900 || st.LimitBytes != 64<<20 || st.LastError != "" {
		t.Fatalf("status = %+v", st)
	}
	if r, d, u := logs.count("memcached node restarted"), logs.count("memcached node down"), logs.count("memcached node up"); r != 2 || d != 1 || u != 1 {
		t.Fatalf("logged restarted %d, down %d, up %d times; want 2, 1, 1", r, d, u)
	}
}

// TestNodeCheckerUpdate adds and removes nodes while running.
func TestNodeCheckerUpdate(t *testing.T) {
	var mu sync.Mutex // guards probed
	probed := map[string]int{}
	probe := func(ctx context.Context, addr string) (map[string]string, error) {
		mu.Lock()
		defer mu.Unlock()
		probed[addr]++
		return stats(1, probed[addr]), nil
	}
	count := func(addr string) int {
		mu.Lock()
		defer mu.Unlock()
		return probed[addr]
	}
	rep := nodeReporter{newRecorder[nodeObs]()}
	o := NodeOptions{Interval: 5 * time.Millisecond}
	c := NewNodeChecker(o, []string{"a", "b"}, probe, rep, nil)
	runChecker(t, c.Run)
	seen := func(addr string, n int) func([]nodeObs) bool {
		return func(obs []nodeObs) bool {
			return len(slices.DeleteFunc(obs, func(x nodeObs) bool { return x.addr != addr })) >= n
		}
	}
	rep.waitFor(t, "b probed", seen("b", 1))
	c.Update(o, []string{"a", "c"})
	bCount := count("b")
	rep.waitFor(t, "c probed", seen("c", 1))
	aObs := len(slices.DeleteFunc(rep.all(), func(x nodeObs) bool { return x.addr != "a" }))
	rep.waitFor(t, "a probed 3 more times", seen("a", aObs+3))
	if got := count("b"); got != bCount {
		t.Fatalf("removed node probed %d more times", got-bCount)
	}
	var addrs []string
	for _, st := range c.Status() {
		addrs = append(addrs, st.Addr)
	}
	if !slices.Equal(addrs, []string{"a", "c"}) {
		t.Fatalf("Status addrs = %v", addrs)
	}
}

// memcachedStats is a minimal `stats` client for the real-memcached test.
func memcachedStats(ctx context.Context, addr string) (map[string]string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("stats\r\n")); err != nil {
		return nil, err
	}
	out := map[string]string{}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 1 && f[0] == "END":
			return out, nil
		case len(f) == 3 && f[0] == "STAT":
			out[f[1]] = f[2]
		default:
			return nil, fmt.Errorf("unexpected stats line %q", sc.Text())
		}
	}
	return nil, fmt.Errorf("stats: %v", sc.Err())
}

// startMemcached starts a real memcached on 127.0.0.1:port and returns a
// stop function (kill + wait) that cleanup also calls.
func startMemcached(t *testing.T, port int) (pid int, stop func()) {
	t.Helper()
	const bin = "/usr/bin/memcached"
	if _, err := exec.LookPath(bin); err != nil {
		t.Fatalf("%s not found: install the Debian package memcached", bin)
	}
	cmd := exec.Command(bin, "-u", "nobody", "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "64")
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting memcached: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	t.Cleanup(stop)
	return cmd.Process.Pid, stop
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestNodeCheckerRealMemcached: a real memcached is seen up with its pid,
// then down when killed, then restarted when started again.
func TestNodeCheckerRealMemcached(t *testing.T) {
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	pid1, stop1 := startMemcached(t, port)

	rep := nodeReporter{newRecorder[nodeObs]()}
	logger, logs := newLogger()
	c := NewNodeChecker(NodeOptions{Interval: 20 * time.Millisecond, Timeout: time.Second}, []string{addr}, memcachedStats, rep, logger)
	runChecker(t, c.Run)

	last := func(match func(nodeObs) bool) func([]nodeObs) bool {
		return func(obs []nodeObs) bool { return len(obs) > 0 && match(obs[len(obs)-1]) }
	}
	rep.waitFor(t, "up with the first pid", last(func(o nodeObs) bool { return o.up && o.pid == int64(pid1) }))
	if st := c.Status()[0]; st.LimitBytes != 64<<20 || st.Latency <= 0 || st.Restarts != 0 {
		t.Fatalf("status = %+v", st)
	}
	stop1()
	rep.waitFor(t, "down", last(func(o nodeObs) bool { return !o.up }))
	pid2, _ := startMemcached(t, port)
	rep.waitFor(t, "up with the second pid", last(func(o nodeObs) bool { return o.up && o.pid == int64(pid2) }))
	if st := c.Status()[0]; st.Restarts != 1 || st.LastError != "" {
		t.Fatalf("status = %+v", st)
	}
	if r := logs.count("memcached node restarted"); r != 1 {
		t.Fatalf("restart logged %d times", r)
	}
}
