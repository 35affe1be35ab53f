//go:build linux

package h1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// parkedMemoryBudget is heap and goroutine stack, in bytes, one parked
// keep-alive connection keeps (its client's end in this process
// included): measured 1.5-2.8 kB, and over 6 kB with a goroutine per idle
// connection (4 KiB of stack and its g).
const parkedMemoryBudget = 3500

// TestParkedConnMemory: a parked connection has no goroutine: its memory
// is its heap alone.
func TestParkedConnMemory(t *testing.T) {
	s := &Server{ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute, parkAfter: 10 * time.Millisecond}
	per := idleMemory(t, s, 400, true, parkedMemoryBudget, func() bool { return parkedCount(s) == 400 })
	t.Logf("%.0f bytes of heap and stack per parked connection", per)
	if per > parkedMemoryBudget {
		t.Errorf("a parked connection keeps %.0f bytes of heap and stack, budget %d", per, parkedMemoryBudget)
	}
}

// waitFor polls cond every 5ms for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not within 5s", what)
}

// parkedCount is how many connections s's parker holds.
func parkedCount(s *Server) int {
	s.mu.Lock()
	p := s.parked
	s.mu.Unlock()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.fds)
}

func connCount(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// parkServer serves a handler that answers each request with its path and
// the connection's request count.
func parkServer(t *testing.T, idle, parkAfter time.Duration) (*Server, string) {
	t.Helper()
	var n atomic.Int64
	s := &Server{ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idle, parkAfter: parkAfter,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %d", r.URL.Path, n.Add(1))
		})}
	addr, _, _ := startServer(t, s)
	return s, addr
}

type client struct {
	net.Conn
	br *bufio.Reader
}

func dialClient(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{c, bufio.NewReader(c)}
}

// get sends requests for paths in one write (pipelined) and returns the
// bodies of the answers.
func (c *client) get(t *testing.T, paths ...string) []string {
	t.Helper()
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: front\r\n\r\n", p)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for range paths {
		res, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		bodies = append(bodies, string(body))
	}
	return bodies
}

// TestParkedConnectionsServe: connections idle for parkAfter are parked
// (their goroutines end), and each is served again when its next request
// comes, pipelined requests included, and parked again after it.
func TestParkedConnectionsServe(t *testing.T) {
	s, addr := parkServer(t, time.Minute, 10*time.Millisecond)
	before := runtime.NumGoroutine()
	const n = 20
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dialClient(t, addr)
		if got := clients[i].get(t, "/a"); !strings.HasPrefix(got[0], "/a ") {
			t.Fatalf("first answer %q", got)
		}
	}
	waitFor(t, "all parked", func() bool { return parkedCount(s) == n })
	// The parker's goroutine is the only new one (a few test goroutines
	// may still be ending: a margin of 5, far under one per connection).
	waitFor(t, "the connections' goroutines end", func() bool { return runtime.NumGoroutine() <= before+1+5 })

	for i, c := range clients {
		path := fmt.Sprintf("/b%d", i)
		reqs := []string{path}
		if i%2 == 1 {
			reqs = append(reqs, path+"x", path+"y")
		}
		got := c.get(t, reqs...)
		for j, body := range got {
			if !strings.HasPrefix(body, reqs[j]+" ") {
				t.Fatalf("client %d, answer %d after parking: %q, want one for %s", i, j, body, reqs[j])
			}
		}
	}
	waitFor(t, "parked again", func() bool { return parkedCount(s) == n })
	if got := clients[0].get(t, "/c"); !strings.HasPrefix(got[0], "/c ") {
		t.Fatalf("answer after the second park: %q", got)
	}
}

// TestParkedConnectionsEnd: a parked connection is closed when its client
// hangs up, when its idle timeout ends, and by Shutdown, which returns at
// once; the parker's goroutine ends with it.
func TestParkedConnectionsEnd(t *testing.T) {
	s, addr := parkServer(t, 300*time.Millisecond, 10*time.Millisecond)
	a, b := dialClient(t, addr), dialClient(t, addr)
	a.get(t, "/")
	b.get(t, "/")
	waitFor(t, "both parked", func() bool { return parkedCount(s) == 2 })
	a.Close()
	waitFor(t, "the hung-up connection closed", func() bool { return parkedCount(s) == 1 && connCount(s) == 1 })

	// The idle timeout: the server closes b.
	if _, err := b.br.ReadByte(); err != io.EOF {
		t.Fatalf("parked past its idle timeout: read %v, want EOF", err)
	}
	waitFor(t, "the timed-out connection forgotten", func() bool { return parkedCount(s) == 0 && connCount(s) == 0 })

	// Shutdown with a parked connection: closed at once.
	s, addr = parkServer(t, time.Minute, 10*time.Millisecond)
	c := dialClient(t, addr)
	c.get(t, "/")
	waitFor(t, "parked", func() bool { return parkedCount(s) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("parked at Shutdown: read %v, want EOF", err)
	}
	select {
	case <-s.parked.done:
	default:
		t.Fatal("the parker still runs after Shutdown")
	}
}

// TestParkingRaces: clients whose pauses straddle parkAfter, so that
// connections park and wake all the time, some while their next request
// is already on its way, get every answer.
func TestParkingRaces(t *testing.T) {
	_, addr := parkServer(t, time.Minute, 2*time.Millisecond)
	const clients, requests = 30, 30
	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			errs <- func() error {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				br := bufio.NewReader(c)
				for j := range requests {
					time.Sleep(time.Duration((i+j)%5) * time.Millisecond)
					path := fmt.Sprintf("/%d/%d", i, j)
					if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: front\r\n\r\n", path); err != nil {
						return err
					}
					res, err := http.ReadResponse(br, nil)
					if err != nil {
						return fmt.Errorf("request %d of client %d: %v", j, i, err)
					}
					body, err := io.ReadAll(res.Body)
					res.Body.Close()
					if err != nil || !strings.HasPrefix(string(body), path+" ") {
						return fmt.Errorf("request %d of client %d: %q, %v", j, i, body, err)
					}
				}
				return nil
			}()
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
