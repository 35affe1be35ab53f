//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one child process the bench started.
type proc struct {
	name string
	cmd  *exec.Cmd
	env  []string      // added to the bench's environment
	log  string        // file holding its stdout and stderr
	done chan struct{} // closed once the process has exited and been waited for
	err  error         // Wait's result; read only after done is closed
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process is gone, with the tail of its log.
func (p *proc) exited() error {
	select {
	case <-p.done:
		b, _ := os.ReadFile(p.log)
		if len(b) > 600 {
			b = b[len(b)-600:]
		}
		return fmt.Errorf("%s exited (%v); its log %s ends:\n%s", p.name, p.err, p.log, b)
	default:
		return nil
	}
}

// procs starts child processes, logging into dir, and stops them all.
type procs struct {
	dir  string
	list []*proc
}

// start runs argv with env added to the bench's own environment. Its
// output goes to <dir>/<name>.log.
func (ps *procs) start(name string, env []string, argv ...string) (*proc, error) {
	logPath := filepath.Join(ps.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child holds its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// An own process group keeps a terminal's ^C away from the children: the
	// bench gets it and stops them itself, in order. Pdeathsig is the safety
	// net when the bench dies without cleaning up (kill -9).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, env: env, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	ps.list = append(ps.list, p)
	return p, nil
}

// stopAll kills every process started and waits for each.
func (ps *procs) stopAll() {
	for _, p := range ps.list {
		_ = p.cmd.Process.Kill() // fails only if it has already exited
	}
	for _, p := range ps.list {
		<-p.done
	}
	ps.list = nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls check until it succeeds, p exits, ctx ends or 15 s pass.
func waitReady(ctx context.Context, p *proc, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if e := p.exited(); e != nil {
			return e
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %v (log: %s)", p.name, err, p.log)
		case <-tick.C:
		}
	}
}

// httpCheck returns a check that GETs url and wants a 200 whose body
// contains want (so a stranger that grabbed the port is not mistaken for
// ours). An https url's certificate is not checked: it is the bench's
// own, self-signed.
func httpCheck(url, want string) func() error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	return func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			return fmt.Errorf("GET %s: %s %q", url, resp.Status, b)
		}
		return nil
	}
}

// tcpCheck returns a check that connects to addr.
func tcpCheck(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// cpuTicks is utime+stime of a whole process (all threads) in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStat(string(b))
}

// selfTicks is cpuTicks of the bench itself (the Go TLS client's time).
func selfTicks() (int64, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	return parseStat(string(b))
}

// parseStat returns utime+stime (fields 14 and 15) from /proc/<pid>/stat.
// The command name (field 2) may contain spaces and parentheses, so fields
// are counted from its closing parenthesis.
func parseStat(s string) (int64, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, errors.New("stat: too few fields")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	return u + st, nil
}

// rssBytes is a process's resident set size.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseVmRSS(string(b))
}

// parseVmRSS reads the "VmRSS:  1234 kB" line of /proc/<pid>/status.
func parseVmRSS(s string) (int64, error) {
	for line := range strings.Lines(s) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status: odd VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		return kb * 1024, err
	}
	return 0, errors.New("status: no VmRSS line")
}

// machineBusy is the CPU time all CPUs spent not idle (steal included), in
// clock ticks, from /proc/stat.
func machineBusy() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseProcStat(string(b))
}

// parseProcStat sums user, nice, system, irq, softirq and steal of the
// "cpu" line of /proc/stat (guest time is already inside user).
func parseProcStat(s string) (int64, error) {
	f := strings.Fields(firstLine(s, "cpu "))
	if len(f) < 9 {
		return 0, errors.New("/proc/stat: no cpu line")
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += n
	}
	return busy, nil
}
