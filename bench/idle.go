//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// idleResult is a contender's RSS before and after it holds idle
// keep-alive client connections.
type idleResult struct {
	Conns         int   // connections held when the second reading was taken
	Before, After int64 // VmRSS, bytes
	Err           error // why fewer connections than asked for were held
}

// PerConn is the RSS growth per held connection, in bytes.
func (r idleResult) PerConn() float64 {
	if r.Conns == 0 {
		return 0
	}
	return float64(r.After-r.Before) / float64(r.Conns)
}

// idleDialers is how many connections are being opened at once; it stays
// below every contender's listen backlog.
const idleDialers = 16

// measureIdle opens n connections to addr, each sending request(i) once and
// reading the answer, reads pid's RSS before and after, then closes them.
func measureIdle(ctx context.Context, pid int, addr string, n int, request func(i int) string) (idleResult, error) {
	var r idleResult
	var err error
	if r.Before, err = rssBytes(pid); err != nil {
		return r, err
	}
	conns, openErr := openIdle(ctx, addr, n, request)
	defer closeAll(conns)
	r.Conns, r.Err = len(conns), openErr
	// Let the contender finish whatever the last answers started (a Go
	// server parks each connection's goroutine after its response is out).
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(500 * time.Millisecond):
	}
	r.After, err = rssBytes(pid)
	return r, err
}

// openIdle opens up to n keep-alive connections that have each completed
// one request. It stops at the first failure and returns what it holds.
func openIdle(ctx context.Context, addr string, n int, request func(i int) string) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var (
		wg       sync.WaitGroup
		failed   atomic.Bool
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	for range idleDialers {
		wg.Go(func() {
			for i := range next {
				c, err := idleConn(ctx, addr, request(i))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i+1, err)
					}
					mu.Unlock()
					failed.Store(true)
					continue
				}
				conns[i] = c
			}
		})
	}
feed:
	for i := range n {
		if failed.Load() {
			break
		}
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	held := conns[:0]
	for _, c := range conns {
		if c != nil {
			held = append(held, c)
		}
	}
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return held, firstErr
}

// idleConn dials addr, sends req, reads a 200 answer and leaves the
// connection open and idle.
func idleConn(ctx context.Context, addr, req string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	err = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err == nil {
		_, err = io.WriteString(c, req)
	}
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(bufio.NewReaderSize(c, 1024), nil)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
	}
	if err == nil {
		err = c.SetDeadline(time.Time{})
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// closeAll closes conns with a reset, so that tens of thousands of closed
// connections leave no TIME_WAIT sockets holding loopback ports.
func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
}

// idleRequest is the one request each idle connection sends.
func idleRequest(cookie string) string {
	s := "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: sessiongate-bench\r\n"
	if cookie != "" {
		s += "Cookie: " + cookie + "\r\n"
	}
	return s + "\r\n"
}
