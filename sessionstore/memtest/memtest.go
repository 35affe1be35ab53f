//go:build unix

// Package memtest runs real memcached processes for tests: each on a free loopback
// port, killed and waited for when the test ends. Nodes can be stopped, restarted
// empty on the same port, paused (SIGSTOP) and resumed (SIGCONT).
package memtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a memcached may take to accept connections.
const startTimeout = 5 * time.Second

// Cluster is a set of memcached processes owned by one test.
type Cluster struct {
	t     testing.TB
	bin   string
	extra []string   // more memcached arguments
	mu    sync.Mutex // guards nodes' proc fields
	nodes []*proc
}

type proc struct {
	port int
	cmd  *exec.Cmd     // nil while stopped
	done chan struct{} // closed when cmd has been waited for
	out  *bytes.Buffer // memcached's output, read only after done
}

// Start launches n memcached nodes and waits until each accepts connections. It fails
// the test (naming the Debian package to install) if memcached is missing.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartArgs(t, n)
}

// StartArgs is Start with more memcached arguments after the defaults (a
// later -m wins over the default 16 MB), kept for restarts.
func StartArgs(t testing.TB, n int, extra ...string) *Cluster {
	t.Helper()
	bin, err := exec.LookPath("memcached")
	if err != nil {
		bin = "/usr/bin/memcached"
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("memtest: memcached binary not found: install the Debian package 'memcached' (apt-get install memcached)")
		}
	}
	c := &Cluster{t: t, bin: bin, extra: extra}
	t.Cleanup(c.stopAll)
	for range n {
		c.nodes = append(c.nodes, c.startFree())
	}
	return c
}

// Addrs returns the nodes' "127.0.0.1:port" addresses, in order.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i := range c.nodes {
		out[i] = c.Addr(i)
	}
	return out
}

// Addr returns node i's address.
func (c *Cluster) Addr(i int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.nodes[i].port))
}

// Pid returns node i's process id, 0 while stopped.
func (c *Cluster) Pid(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.nodes[i]; p.cmd != nil {
		return p.cmd.Process.Pid
	}
	return 0
}

// Stop kills node i (SIGKILL, like a crash) and waits for it to exit.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kill(c.nodes[i])
}

// Output returns what node i's memcached printed, once it has been stopped
// (Stop; "" while it runs): with -vv, every command it ran.
func (c *Cluster) Output(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.nodes[i]; p.cmd == nil && p.out != nil {
		return p.out.String()
	}
	return ""
}

// Restart stops node i if it runs and starts a new, empty memcached on the same port.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.nodes[i]
	c.kill(p)
	if err := c.launch(p); err != nil {
		c.t.Fatalf("memtest: restart node %d: %v", i, err)
	}
}

// Pause stops node i with SIGSTOP: it keeps its sockets but answers nothing.
//
// It returns once the process is stopped, where /proc tells (Linux): kill
// returns before a busy process has stopped, and a command it answers in
// between would make a test's pause no pause.
func (c *Cluster) Pause(i int) {
	c.signal(i, syscall.SIGSTOP)
	c.mu.Lock()
	pid := c.nodes[i].cmd.Process.Pid
	c.mu.Unlock()
	stat := fmt.Sprintf("/proc/%d/stat", pid)
	for range 2000 { // at most ~2 s
		b, err := os.ReadFile(stat)
		if err != nil {
			return // no /proc: not Linux
		}
		// The state follows the command name in parentheses.
		if j := bytes.LastIndexByte(b, ')'); j >= 0 && j+2 < len(b) && (b[j+2] == 'T' || b[j+2] == 't') {
			return
		}
		time.Sleep(time.Millisecond)
	}
	c.t.Fatalf("memtest: node %d did not stop within 2s of SIGSTOP", i)
}

// Resume continues a paused node i with SIGCONT.
func (c *Cluster) Resume(i int) { c.signal(i, syscall.SIGCONT) }

func (c *Cluster) signal(i int, sig syscall.Signal) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.nodes[i]
	if p.cmd == nil {
		c.t.Fatalf("memtest: node %d is not running", i)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("memtest: signal node %d: %v", i, err)
	}
}

// startFree starts a node on a free port, retrying a few times in case another
// process takes the port between probing and memcached binding it.
func (c *Cluster) startFree() *proc {
	c.t.Helper()
	var err error
	for range 5 {
		p := &proc{}
		if p.port, err = freePort(); err != nil {
			continue
		}
		c.mu.Lock()
		err = c.launch(p)
		c.mu.Unlock()
		if err == nil {
			return p
		}
	}
	c.t.Fatalf("memtest: start memcached: %v", err)
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// launch starts memcached for p and waits until it accepts; c.mu must be held.
func (c *Cluster) launch(p *proc) error {
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "0", "-m", "16", "-t", "1", "-c", "256"}
	args = append(args, c.extra...)
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody") // memcached refuses to run as root otherwise
	}
	cmd := exec.Command(c.bin, args...)
	p.out = new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		cmd.Wait()
		close(done)
	}(p.done)

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			p.cmd = nil
			return fmt.Errorf("memcached on %s exited: %s", addr, bytes.TrimSpace(p.out.Bytes()))
		default:
		}
		if conn, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			conn.Close()
			return nil
		}
		time.Sleep(5 * time.Millisecond) // polling a port that is about to open
	}
	c.kill(p)
	return fmt.Errorf("memcached on %s did not accept within %v", addr, startTimeout)
}

// kill stops p if it runs and waits for it; c.mu must be held.
func (c *Cluster) kill(p *proc) {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill() // SIGKILL also ends a SIGSTOPped process
	<-p.done
	p.cmd = nil
}

func (c *Cluster) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.nodes {
		c.kill(p)
	}
}
