//go:build unix

package memtest

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// ask sends one command line to addr and returns the first response line.
func ask(addr, cmd string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func TestCluster(t *testing.T) {
	c := Start(t, 2)
	addrs := c.Addrs()
	if len(addrs) != 2 || addrs[0] == addrs[1] || !strings.HasPrefix(addrs[0], "127.0.0.1:") {
		t.Fatalf("Addrs = %v", addrs)
	}
	for i, a := range addrs {
		if got, err := ask(a, "set k 0 0 1\r\nx\r\n", time.Second); got != "STORED" {
			t.Fatalf("node %d set: %q %v", i, got, err)
		}
	}

	pid := c.Pid(0)
	c.Restart(0)
	if c.Pid(0) == pid || c.Pid(0) == 0 {
		t.Errorf("pid %d -> %d after Restart", pid, c.Pid(0))
	}
	if got, err := ask(addrs[0], "get k\r\n", time.Second); got != "END" {
		t.Errorf("restarted node not empty: %q %v", got, err)
	}

	c.Pause(1)
	if _, err := ask(addrs[1], "get k\r\n", 100*time.Millisecond); err == nil {
		t.Error("paused node answered")
	}
	c.Resume(1)
	if got, err := ask(addrs[1], "get k\r\n", time.Second); !strings.HasPrefix(got, "VALUE k") {
		t.Errorf("resumed node: %q %v", got, err)
	}

	c.Stop(1)
	if c.Pid(1) != 0 {
		t.Error("Pid of a stopped node")
	}
	if _, err := ask(addrs[1], "get k\r\n", time.Second); err == nil {
		t.Error("stopped node answered")
	}
}
