package main

// What Debian's pecl memcache does when a node hangs between answering the
// session lock and answering the read: the PHP-internal loss the zero-loss
// test excuses for a request already at PHP when a node hung.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

// TestMemcacheHungReadIsEmpty: pecl memcache reads a session from the
// first node in its probe order that answers, sending `incr <id>.lock`,
// `add <id>.lock` and `get <id>` together. When the node takes the lock and
// then hangs before it answers the get (a SIGSTOP landing between the two),
// Debian's build (4.0.5.2, tag 8.0 of pecl-memcache) returns the session as
// empty once its 1 s read timeout runs out, instead of reading the next
// copy: PS_READ_FUNC starts the get's result as an empty string
// (ZVAL_EMPTY_STRING), and an empty string after a taken lock means "found
// and empty". The write then overwrites the good copy on every other node.
// (Upstream's 8.0.1 and 8.2 start it as NULL, which skips to the next
// node.) The request was at PHP before the hang began, so nothing at the
// edge can hold it. A fake node plays the hang (a real one cannot stop
// between two commands on demand); the good copy is on a real memcached.
func TestMemcacheHungReadIsEmpty(t *testing.T) {
	fake := startHungGetNode(t)
	mc := memtest.Start(t, 1)
	php := phptest.Start(t, phptest.Options{N: 1, Handler: phptest.Memcache, Servers: []string{fake.addr, mc.Addr(0)}})
	const stored = "visits|i:5;"
	var hung, read int
	// About half of all ids have the fake node first; 24 tries leave
	// 1 in 16 million to see none.
	for i := 0; i < 24 && (hung == 0 || read == 0); i++ {
		id := fmt.Sprintf("hungread%018d", i) // 26 characters of PHP's sid alphabet
		if got := mcDo(t, mc.Addr(0), fmt.Sprintf("set %s 0 600 %d\r\n%s\r\n", id, len(stored), stored)); got != "STORED" {
			t.Fatalf("set %s: %q", id, got)
		}
		began := time.Now()
		visits := countVisit(t, php.URL(0), id)
		took := time.Since(began)
		after := mcValue(t, mc.Addr(0), id)
		switch cmds := fake.commands(id); {
		case strings.HasPrefix(cmds, "incr "+id+".lock 1|add "+id+".lock 768 15 1|get "+id):
			// The fake node came first: it took the lock, then hung.
			hung++
			if visits != 1 || after != "visits|i:1;" {
				t.Errorf("%s: lock taken, get unanswered: PHP counted %d and left %q on the real node, want 1 and \"visits|i:1;\" (read empty, good copy overwritten)", id, visits, after)
			}
			t.Logf("%s: fake node got %s; PHP answered after %v with visits=%d; the real node's copy went from %q to %q",
				id, cmds, took.Round(time.Millisecond), visits, stored, after)
		default:
			// The real node came first: PHP read the copy.
			read++
			if visits != 6 {
				t.Errorf("%s: read from the real node: PHP counted %d, want 6 (fake node saw %q)", id, visits, cmds)
			}
		}
	}
	if hung == 0 || read == 0 {
		t.Fatalf("in 24 ids the fake node came first %d times and second %d times, want both", hung, read)
	}
}

// countVisit sends count.php with session id and returns the count PHP
// answered.
func countVisit(t *testing.T, base, id string) int {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	jar.SetCookies(u, []*http.Cookie{{Name: "PHPSESSID", Value: id}})
	pg, err := zlGet(&http.Client{Jar: jar, Timeout: 10 * time.Second}, base+"/count.php")
	if err != nil {
		t.Fatal(err)
	}
	if pg.ID != id {
		t.Fatalf("PHP answered id %q, want %q (error %q)", pg.ID, id, pg.Error)
	}
	return pg.Visits
}

// mcValue is key's value on the memcached at addr, "" if none.
func mcValue(t *testing.T, addr, key string) string {
	t.Helper()
	c := mcDial(t, addr)
	defer c.Close()
	io.WriteString(c, "get "+key+"\r\n")
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(head)
	if len(f) != 4 || f[0] != "VALUE" {
		return ""
	}
	n, err := strconv.Atoi(f[3])
	if err != nil || n > 1<<20 {
		t.Fatalf("get %s: %q", key, head)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// hungGetNode is a memcached stand-in that takes every lock and stores
// every write, but never answers a get: on that connection it then goes
// silent, as a node stopped right after the lock does.
type hungGetNode struct {
	addr string
	mu   sync.Mutex
	log  []string // command lines, in order
}

func startHungGetNode(t *testing.T) *hungGetNode {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &hungGetNode{addr: l.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.serve(c)
			}()
		}
	}()
	return n
}

// serve answers one connection for at most 10 s: PHP gives up on a hung
// node after its 1 s timeout and closes the connection.
func (n *hungGetNode) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	silent := false
	for range 100 {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		n.mu.Lock()
		n.log = append(n.log, line)
		n.mu.Unlock()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		reply := "ERROR"
		switch f[0] {
		case "incr":
			reply = "1"
		case "add", "set":
			if len(f) < 5 {
				return
			}
			size, err := strconv.Atoi(f[4])
			if err != nil || size < 0 || size > 1<<20 {
				return
			}
			if _, err := io.CopyN(io.Discard, r, int64(size)+2); err != nil {
				return
			}
			reply = "STORED"
			if f[0] == "add" {
				reply = "NOT_STORED" // the incr above took the lock
			}
		case "get":
			silent = true
		case "delete":
			reply = "DELETED"
		}
		if !silent {
			io.WriteString(c, reply+"\r\n")
		}
	}
}

// commands are the command lines the node got that name id, "|" apart.
func (n *hungGetNode) commands(id string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, l := range n.log {
		if strings.Contains(l, id) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "|")
}
