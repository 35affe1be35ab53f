package main

// The edge against hostile clients, through the real wiring (serve()): what
// a client can make sessiongate hold, forward or blame on a backend.

import (
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestSilentConnectionsCutAtReadHeaderTimeout: a connection that never sends
// a byte is closed at read_header_timeout (1s), not idle_timeout (30s), which
// is for the time between requests of a keep-alive connection.
func TestSilentConnectionsCutAtReadHeaderTimeout(t *testing.T) {
	const silent = 50
	be := newRecordingBackend(t)
	baseline := runtime.NumGoroutine()
	g := startCaptured(t, plainGateYAML(be.URL, "  read_header_timeout: 1s\n  idle_timeout: 30s\n"))

	closedAfter := make([]time.Duration, silent)
	var wg sync.WaitGroup
	for i := range silent {
		c, err := net.DialTimeout("tcp", g.addrs.front, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		opened := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(opened.Add(5 * time.Second))
			io.Copy(io.Discard, c) // until the server closes it (or the deadline)
			closedAfter[i] = time.Since(opened)
		}()
	}
	wg.Wait()
	first, last := slices.Min(closedAfter), slices.Max(closedAfter)
	t.Logf("%d silent connections closed after %v..%v", silent, first.Round(time.Millisecond), last.Round(time.Millisecond))
	if first < 900*time.Millisecond || last > 3*time.Second {
		t.Errorf("silent connections closed after %v..%v, want about 1s (read_header_timeout)", first, last)
	}
	g.stop()
	waitGoroutines(t, baseline)
}
