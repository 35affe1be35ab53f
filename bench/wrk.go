//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one wrk run reports.
type wrkResult struct {
	Requests  int64 // completed
	RPS       float64
	P50, P99  time.Duration
	Non2xx    int64 // "Non-2xx or 3xx responses"
	SocketErr int64 // connect + read + write + timeout
	// Set by the other load generators: h2load reports no percentiles,
	// only the mean; the Go TLS client counts resumed handshakes.
	Mean      time.Duration
	H2load    bool
	TLSClient bool
	Resumed   int64
	FirstErr  string // the Go TLS client's first failure, for the notes
	TLS       string // protocol and cipher, where the generator says
}

// Errors is every failed request wrk saw.
func (w wrkResult) Errors() int64 { return w.Non2xx + w.SocketErr }

// load is how wrk drives a contender.
type load struct {
	conns    int
	duration time.Duration
	script   string // wrk Lua script, "" for none
	ids      string // session ids file for the script, "" for none
	delayMS  int    // mean pause between a connection's requests, 0 for none
	headers  []string
}

// args is wrk's command line against url.
func (l load) args(url string) []string {
	a := []string{"-t1", "-c" + strconv.Itoa(l.conns), "-d" + strconv.Itoa(int(l.duration/time.Second)) + "s", "--latency"}
	for _, h := range l.headers {
		a = append(a, "-H", h)
	}
	if l.script != "" {
		a = append(a, "-s", l.script)
	}
	return append(a, url)
}

// env is what bench/sessions.lua reads (at load time, before wrk decides
// whether the script paces or rewrites requests).
func (l load) env() []string {
	var e []string
	if l.ids != "" {
		e = append(e, "SESSIONS_FILE="+l.ids)
	}
	if l.delayMS > 0 {
		e = append(e, "DELAY_MS="+strconv.Itoa(l.delayMS))
	}
	return e
}

// command is the run as a shell line, for the report.
func (l load) command(url string) string {
	args := l.args(url)
	for i, a := range args {
		if strings.Contains(a, " ") {
			args[i] = "'" + a + "'"
		}
	}
	return strings.TrimSpace(strings.Join(l.env(), " ") + " wrk " + strings.Join(args, " "))
}

// runWrk runs wrk once against url and parses its report. It also returns
// the CPU time wrk itself used.
func runWrk(ctx context.Context, url string, l load) (wrkResult, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, l.duration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", l.args(url)...)
	cmd.Env = append(os.Environ(), l.env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, 0, fmt.Errorf("wrk %s: %v\n%s", url, err, out)
	}
	used := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	r, err := parseWrk(string(out))
	if err != nil {
		return r, used, fmt.Errorf("%w in:\n%s", err, out)
	}
	return r, used, nil
}

// parseWrk reads wrk 4's --latency report.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveReq, haveRPS, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		var err error
		switch {
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.Requests, err = strconv.ParseInt(f[0], 10, 64)
			haveReq = true
		case strings.HasPrefix(line, "Requests/sec:") && len(f) == 2:
			r.RPS, err = strconv.ParseFloat(f[1], 64)
			haveRPS = true
		case len(f) == 2 && f[0] == "50%":
			r.P50, err = wrkDuration(f[1])
			have50 = true
		case len(f) == 2 && f[0] == "99%":
			r.P99, err = wrkDuration(f[1])
			have99 = true
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:") && len(f) == 5:
			r.Non2xx, err = strconv.ParseInt(f[4], 10, 64)
		case strings.HasPrefix(line, "Socket errors:"):
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, e := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				r.SocketErr += n
				err = errors.Join(err, e)
			}
		}
		if err != nil {
			return r, fmt.Errorf("wrk output: line %q: %w", line, err)
		}
	}
	if !haveReq || !haveRPS || !have50 || !have99 {
		return r, errors.New("wrk output: no requests, Requests/sec or 50%/99% latency lines")
	}
	return r, nil
}

// wrkDuration parses wrk's latency figures: 812.00us, 1.23ms, 2.00s, 1.50m.
func wrkDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad latency %q", s)
	}
	return d, nil
}
