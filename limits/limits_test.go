package limits

import (
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func addr(s string) netip.Addr          { return netip.MustParseAddr(s) }
func allowed(l *Limiter, a string) bool { ok, _ := l.Allow(addr(a)); return ok }

// TestRateAndBurst: a client gets burst requests at once, then rate per
// second; the refusal says when the next one will pass.
func TestRateAndBurst(t *testing.T) {
	c := newClock()
	l := New(Options{Rate: 2, Burst: 5, Now: c.now})
	for i := range 5 {
		if !allowed(l, "192.0.2.1") {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, after := l.Allow(addr("192.0.2.1"))
	if ok || after != 500*time.Millisecond {
		t.Fatalf("6th request: %v, retry after %v; want refused, 500ms", ok, after)
	}
	if !allowed(l, "192.0.2.2") {
		t.Fatal("another client was limited too")
	}
	c.add(500 * time.Millisecond)
	if !allowed(l, "192.0.2.1") || allowed(l, "192.0.2.1") {
		t.Fatal("after 500ms at 2/s: want exactly one more request")
	}
	c.add(time.Hour) // refills to the burst, not beyond
	n := 0
	for allowed(l, "192.0.2.1") {
		n++
	}
	if n != 5 {
		t.Fatalf("after an hour idle: %d requests at once, want the burst 5", n)
	}
}

// TestIPv6GroupedBy64AndExempt: addresses in one /64 share a bucket, other
// /64s do not; exempt clients are never limited; IPv4-mapped IPv6 is IPv4.
func TestIPv6GroupedBy64AndExempt(t *testing.T) {
	c := newClock()
	l := New(Options{Rate: 1, Burst: 1, Conns: 1, Exempt: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Now: c.now})
	if !allowed(l, "2001:db8:1:2::1") || allowed(l, "2001:db8:1:2:ffff::9") {
		t.Error("two addresses of one /64 are not one client")
	}
	if !allowed(l, "2001:db8:1:3::1") {
		t.Error("the next /64 was limited too")
	}
	if !allowed(l, "198.51.100.1") || allowed(l, "::ffff:198.51.100.1") {
		t.Error("IPv4-mapped IPv6 is not the IPv4 client")
	}
	for range 100 {
		if !allowed(l, "10.1.2.3") {
			t.Fatal("exempt client limited")
		}
		if ok, _ := l.Open(addr("10.1.2.3")); !ok {
			t.Fatal("exempt client's connection refused")
		}
	}
}

// TestConnections: a client may hold Conns connections; one more is
// refused until one closes; releasing twice frees one slot only.
func TestConnections(t *testing.T) {
	l := New(Options{Conns: 2})
	ok1, r1 := l.Open(addr("192.0.2.1"))
	ok2, _ := l.Open(addr("192.0.2.1"))
	if !ok1 || !ok2 {
		t.Fatal("connections within the limit refused")
	}
	if ok, _ := l.Open(addr("192.0.2.1")); ok {
		t.Fatal("third connection allowed")
	}
	if ok, _ := l.Open(addr("192.0.2.2")); !ok {
		t.Fatal("other client refused")
	}
	r1()
	if ok, _ := l.Open(addr("192.0.2.1")); !ok {
		t.Fatal("refused after a close")
	}
	if ok, _ := l.Allow(addr("192.0.2.1")); !ok {
		t.Fatal("rate limited without a rate")
	}
}

// TestEvictionKeepsConnections: under a spray of distinct clients the
// table stays at its size, and clients holding connections keep their
// count.
func TestEvictionKeepsConnections(t *testing.T) {
	c := newClock()
	l := New(Options{Rate: 1, Conns: 1, Size: 640, Now: c.now})
	if ok, _ := l.Open(addr("192.0.2.1")); !ok {
		t.Fatal("refused")
	}
	for i := range 100000 {
		l.Allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if n := l.Tracked(); n > 640 {
		t.Errorf("tracking %d clients, size 640", n)
	}
	if ok, _ := l.Open(addr("192.0.2.1")); ok {
		t.Error("the connected client's count was evicted")
	}
}

// TestMemoryBoundedUnderSpray: one million distinct addresses (sprayN;
// half IPv4, half IPv6 /64s) leave the heap within a bound, with the table
// full.
func TestMemoryBoundedUnderSpray(t *testing.T) {
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	l := New(Options{Rate: 10, Conns: 10})
	full := heap() - before
	for i := range sprayN {
		var a netip.Addr
		if i%2 == 0 {
			a = netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
		} else {
			var b [16]byte
			b[0], b[1], b[4], b[5], b[6], b[7] = 0x20, 0x01, byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
			a = netip.AddrFrom16(b)
		}
		l.Allow(a)
		if ok, release := l.Open(a); ok {
			release()
		}
	}
	after := heap() - before
	if n := l.Tracked(); n != DefaultSize {
		t.Errorf("tracking %d clients, want the table full (%d)", n, DefaultSize)
	}
	t.Logf("heap: %d KB with the table built, %d KB after %d distinct clients", full>>10, after>>10, sprayN)
	if after > 16<<20 {
		t.Errorf("heap grew %d MB under the spray, want under 16 MB", after>>20)
	}
	runtime.KeepAlive(l)
}

func BenchmarkAllow(b *testing.B) {
	l := New(Options{Rate: 1 << 20, Burst: 1 << 20})
	a := addr("192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(a)
	}
}
