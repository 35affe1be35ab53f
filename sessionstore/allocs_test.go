package sessionstore

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
)

// TestAllocsPerLookup is the allocation budget of a Check that looks the
// session up on every node (a cold verification cache, as with many
// distinct sessions): a regression check, not a goal. Allocations, never
// time (see proxy's TestAllocsPerRequest).
func TestAllocsPerLookup(t *testing.T) {
	mc := memtest.Start(t, 3)
	// Not Run: its watchers and pollers would allocate during the count.
	s, err := New(Options{Servers: mc.Addrs(), Timeout: 500 * time.Millisecond, Strict: true, VerifyTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	id := newID(t)
	data, _ := s.Keys(id)
	for i := range 3 {
		c, err := net.DialTimeout("tcp", mc.Addr(i), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "ms %s %d T1440\r\n%s\r\nmn\r\n", data, len(session), session)
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if b, _ := io.ReadAll(io.LimitReader(c, 8)); string(b) != "HD\r\nMN\r\n" {
			t.Fatalf("storing on node %d: %q", i, b)
		}
		c.Close()
	}
	const budget = 38 // 36 measured, 37 under -race (63 before readMeta parsed in place)
	n := testing.AllocsPerRun(200, func() {
		if r := s.Check(t.Context(), id); r.Verdict != Verified {
			t.Fatalf("Check = %+v, want Verified", r)
		}
	})
	t.Logf("%.0f allocs per looked-up Check (budget %d)", n, budget)
	if n > budget {
		t.Errorf("a looked-up Check allocates %.0f times, budget %d", n, budget)
	}
}
