package upstream

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/proxy/internal/canned"
)

// allocBudgetLean is TestLeanAllocsPerRequest's: one round trip through
// the lean upstream, body read and closed.
const allocBudgetLean = 6

// cannedBackend starts a backend on loopback that answers every request on
// its keep-alive connection alike, allocating nothing itself, and returns
// a round trip to it through a Lean (body read and closed).
func cannedBackend(t testing.TB) func() {
	addr := canned.Serve(t, headCorpus[0].raw)
	l := NewLean(TransportOptions{DialTimeout: time.Second, ResponseTimeout: 5 * time.Second, MaxIdleConns: 4})
	l.GatherWrites = true // as on one P, the bench's setting: the yield must cost no allocation
	t.Cleanup(l.CloseIdleConnections)
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/index.php", nil)
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
