package upstream

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// allocBudgetLean is TestLeanAllocsPerRequest's: one round trip through
// the lean upstream, body read and closed.
const allocBudgetLean = 6

// cannedBackend starts a backend on loopback that answers every request on
// its keep-alive connection alike, allocating nothing itself, and returns
// a round trip to it through a Lean (body read and closed).
func cannedBackend(t testing.TB) func() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	answer := []byte(headCorpus[0].raw)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var buf [4096]byte
		for n := 0; ; {
			m, err := c.Read(buf[n:])
			if err != nil {
				return
			}
			n += m
			if bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")) {
				if _, err := c.Write(answer); err != nil {
					return
				}
				n = 0
			} else if n == len(buf) {
				return
			}
		}
	}()
	l := NewLean(TransportOptions{DialTimeout: time.Second, ResponseTimeout: 5 * time.Second, MaxIdleConns: 4})
	t.Cleanup(l.CloseIdleConnections)
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/index.php", nil)
	req.Header.Set("User-Agent", "test")
	roundTrip := func() {
		res, err := l.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	roundTrip() // dial outside the count
	return roundTrip
}

// TestLeanAllocsPerRequest counts what the upstream client allocates per
// request against a backend on loopback that allocates nothing itself.
func TestLeanAllocsPerRequest(t *testing.T) {
	n := testing.AllocsPerRun(200, cannedBackend(t))
	t.Logf("lean upstream: %.0f allocs per request (budget %d)", n, allocBudgetLean)
	if n > allocBudgetLean {
		t.Errorf("lean upstream allocates %.0f times per request, budget %d", n, allocBudgetLean)
	}
}

// BenchmarkLeanRoundTrip is one keep-alive round trip through Lean alone:
// the reuse checks' cost shows here first.
func BenchmarkLeanRoundTrip(b *testing.B) {
	roundTrip := cannedBackend(b)
	b.ReportAllocs()
	for b.Loop() {
		roundTrip()
	}
}
