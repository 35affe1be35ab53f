package balancer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// backends returns one backend per weight, named a, b, c, ... (then b26, b27, ...).
func backends(weights ...int) []*Backend {
	bs := make([]*Backend, len(weights))
	for i, w := range weights {
		name := string(rune('a' + i))
		if i >= 26 {
			name = fmt.Sprintf("b%d", i)
		}
		u := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", 8000+i)}
		bs[i] = NewBackend(name, u, w)
	}
	return bs
}

// testPool returns a pool with deterministic randomness over backends of the given weights.
func testPool(t testing.TB, policy string, weights ...int) (*Pool, []*Backend) {
	t.Helper()
	bs := backends(weights...)
	p, err := NewPool(policy, bs, WithRand(rand.New(rand.NewPCG(1, 2)).Uint64))
	if err != nil {
		t.Fatal(err)
	}
	return p, bs
}

// picks calls Pick(tried) n times and counts picks by name ("" for nil).
func picks(p *Pool, n int, tried ...*Backend) map[string]int {
	got := map[string]int{}
	for range n {
		name := ""
		if b := p.Pick(tried); b != nil {
			name = b.Name
		}
		got[name]++
	}
	return got
}

func TestSpreadWithEqualWeights(t *testing.T) {
	const n = 30000
	for _, tc := range []struct {
		policy string
		tol    float64 // allowed deviation from n/3, as a fraction
	}{
		{RoundRobin, 0},
		{WeightedRoundRobin, 0},
		{Random, 0.03},
		{LeastConn, 0.03}, // all idle: every pick is a random tie-break
		{P2C, 0.03},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			p, _ := testPool(t, tc.policy, 1, 1, 1)
			got := picks(p, n)
			for _, name := range []string{"a", "b", "c"} {
				if d := math.Abs(float64(got[name])-n/3) / (n / 3); d > tc.tol {
					t.Errorf("%s got %d of %d picks, off by %.1f%% (max %.1f%%)", name, got[name], n, 100*d, 100*tc.tol)
				}
			}
		})
	}
}

func TestWeightedRoundRobinCycle(t *testing.T) {
	for _, tc := range []struct {
		weights []int
		want    string // one full cycle
	}{
		{[]int{5, 1, 1}, "aabacaa"}, // smooth, not aaaaabc
		{[]int{1, 1, 1}, "abc"},
		{[]int{2, 1}, "aba"},
		{[]int{10, 20}, "bab"}, // reduced by the gcd: a cycle of 3, not 30
		{[]int{1, 3, 1}, "babcb"},
	} {
		t.Run(fmt.Sprint(tc.weights), func(t *testing.T) {
			p, _ := testPool(t, WeightedRoundRobin, tc.weights...)
			var got strings.Builder
			for range 2 * len(tc.want) {
				got.WriteString(p.Pick(nil).Name)
			}
			if want := strings.Repeat(tc.want, 2); got.String() != want {
				t.Errorf("picks %s, want %s", got.String(), want)
			}
		})
	}
}

func TestWeightedRoundRobinExactOverCycle(t *testing.T) {
	weights := []int{7, 3, 2, 1000, 1} // sum 1013, under maxCycle
	p, bs := testPool(t, WeightedRoundRobin, weights...)
	got := picks(p, 1013)
	for i, b := range bs {
		if got[b.Name] != weights[i] {
			t.Errorf("%s got %d picks in one cycle, want its weight %d", b.Name, got[b.Name], weights[i])
		}
	}
}

func TestWeightedRoundRobinLongCycleIsCapped(t *testing.T) {
	weights := make([]int, 64)
	sum := 0
	for i := range weights {
		weights[i] = MaxWeight - 15*i // 1000 down to 55: the exact cycle would be ~37,000 picks
		sum += weights[i]
	}
	weights[63], sum = 1, sum-55+1 // one tiny weight must still get picks
	bs := backends(weights...)
	cycle := smoothCycle(bs)
	if len(cycle) > maxCycle+len(bs) {
		t.Fatalf("cycle has %d entries, want at most %d", len(cycle), maxCycle+len(bs))
	}
	count := make([]int, len(bs))
	for _, i := range cycle {
		count[i]++
	}
	for i, w := range weights {
		want := float64(w) * float64(len(cycle)) / float64(sum)
		if math.Abs(float64(count[i])-want) > 1 || count[i] == 0 {
			t.Errorf("weight %d got %d of %d picks, want %.1f±1", w, count[i], len(cycle), want)
		}
	}
}

func TestLeastConnPrefersIdle(t *testing.T) {
	p, bs := testPool(t, LeastConn, 1, 1, 1)
	bs[0].Acquire()
	bs[0].Acquire()
	bs[1].Acquire()
	if got := picks(p, 100); got["c"] != 100 {
		t.Fatalf("picks %v, want all on the idle c", got)
	}
	for range 3 {
		bs[2].Acquire()
	}
	if got := picks(p, 100); got["b"] != 100 {
		t.Fatalf("picks %v, want all on b, the least loaded", got)
	}
}

func TestLeastConnSharesTies(t *testing.T) {
	p, bs := testPool(t, LeastConn, 1, 1, 1, 1, 1)
	bs[1].Acquire()
	bs[3].Acquire()
	got := picks(p, 300)
	if got["b"] != 0 || got["d"] != 0 || got["a"] == 0 || got["c"] == 0 || got["e"] == 0 {
		t.Fatalf("picks %v, want all idle backends (a, c, e) picked and none of b, d", got)
	}
}

func TestP2CAvoidsLoaded(t *testing.T) {
	for _, n := range []int{2, 3, 8} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			weights := make([]int, n)
			for i := range weights {
				weights[i] = 1
			}
			p, bs := testPool(t, P2C, weights...)
			for range 5 {
				bs[0].Acquire()
			}
			got := picks(p, 1000)
			if got["a"] != 0 {
				t.Errorf("loaded a got %d picks, want 0 (it always loses its comparison)", got["a"])
			}
			for _, b := range bs[1:] {
				if got[b.Name] == 0 {
					t.Errorf("idle %s got no picks: %v", b.Name, got)
				}
			}
		})
	}
}

// unavailableWays lists the three ways a backend leaves rotation.
func unavailableWays() []struct {
	name string
	do   func(p *Pool, name string) error
} {
	return []struct {
		name string
		do   func(p *Pool, name string) error
	}{
		{"down", func(p *Pool, name string) error { p.SetHealthy(name, false); return nil }},
		{"draining", func(p *Pool, name string) error { return p.SetAdmin(name, AdminDraining) }},
		{"maintenance", func(p *Pool, name string) error { return p.SetAdmin(name, AdminMaintenance) }},
	}
}

func TestUnavailableGetNoPicks(t *testing.T) {
	for _, policy := range Policies() {
		for _, how := range unavailableWays() {
			t.Run(policy+"/"+how.name, func(t *testing.T) {
				p, _ := testPool(t, policy, 1, 1, 1)
				if err := how.do(p, "b"); err != nil {
					t.Fatal(err)
				}
				got := picks(p, 300)
				if got["b"] != 0 || got["a"] == 0 || got["c"] == 0 {
					t.Fatalf("picks %v, want none on b and some on a and c", got)
				}
				p.SetHealthy("b", true)
				if err := p.SetAdmin("b", AdminEnabled); err != nil {
					t.Fatal(err)
				}
				if got := picks(p, 300); got["b"] == 0 {
					t.Fatalf("picks %v after b came back, want some on b", got)
				}
			})
		}
	}
}

func TestTriedExcluded(t *testing.T) {
	for _, policy := range Policies() {
		t.Run(policy, func(t *testing.T) {
			p, bs := testPool(t, policy, 3, 2, 1)
			if got := picks(p, 300, bs[0]); got["a"] != 0 || got["b"] == 0 || got["c"] == 0 {
				t.Errorf("tried a: picks %v, want none on a and some on b and c", got)
			}
			if got := picks(p, 100, bs[0], bs[2]); got["b"] != 100 {
				t.Errorf("tried a, c: picks %v, want all on b", got)
			}
			if got := picks(p, 10, bs...); got[""] != 10 {
				t.Errorf("all tried: picks %v, want nil every time", got)
			}
			p.SetHealthy("b", false)
			if got := picks(p, 10, bs[0], bs[2]); got[""] != 10 {
				t.Errorf("a, c tried and b down: picks %v, want nil every time", got)
			}
		})
	}
}

func TestAllUnavailablePicksNil(t *testing.T) {
	for _, policy := range Policies() {
		t.Run(policy, func(t *testing.T) {
			p, _ := testPool(t, policy, 1, 1, 1)
			for i, how := range unavailableWays() {
				if err := how.do(p, string(rune('a'+i))); err != nil {
					t.Fatal(err)
				}
			}
			if got := picks(p, 10); got[""] != 10 {
				t.Fatalf("picks %v, want nil every time", got)
			}
		})
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, policy := range Policies() {
		t.Run(policy, func(t *testing.T) {
			p, bs := testPool(t, policy, 1, 2, 3, 4)
			tried := bs[:2]
			if a := testing.AllocsPerRun(100, func() { p.Pick(tried) }); a != 0 {
				t.Fatalf("Pick allocates %v times per call, want 0", a)
			}
		})
	}
}

func TestConcurrentPickAndSetHealthy(t *testing.T) {
	const pickers, perPicker, flaps = 4, 2000, 500
	for _, policy := range Policies() {
		t.Run(policy, func(t *testing.T) {
			p, err := NewPool(policy, backends(1, 2, 3)) // default, concurrency-safe randomness
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			wg.Go(func() {
				for i := range flaps {
					p.SetHealthy("a", i%2 == 1)
					p.SetHealthy("b", i%3 != 0)
				}
			})
			var nils atomic.Int64
			for range pickers {
				wg.Go(func() {
					for range perPicker {
						b := p.Pick(nil)
						if b == nil {
							nils.Add(1) // c is always up, so this must not happen
							continue
						}
						b.Acquire()
						b.Release(false)
					}
				})
			}
			wg.Wait()
			if nils.Load() != 0 {
				t.Errorf("Pick returned nil %d times while c was up", nils.Load())
			}
			var requests uint64
			for _, b := range p.Backends() {
				requests += b.Requests()
				if b.InFlight() != 0 {
					t.Errorf("%s: %d in flight after all released", b.Name, b.InFlight())
				}
			}
			if requests != pickers*perPicker {
				t.Errorf("counted %d requests, want %d", requests, pickers*perPicker)
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	for _, policy := range Policies() {
		for _, n := range []int{3, 64} {
			b.Run(fmt.Sprintf("%s/%d", policy, n), func(b *testing.B) {
				weights := make([]int, n)
				for i := range weights {
					weights[i] = 1 + i%5
				}
				p, err := NewPool(policy, backends(weights...))
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					p.Pick(nil)
				}
			})
		}
	}
}

func TestPickEnabledIgnoresHealthNotAdmin(t *testing.T) {
	p, bs := testPool(t, RoundRobin, 1, 1, 1)
	for _, b := range bs {
		p.SetHealthy(b.Name, false)
	}
	if err := p.SetAdmin(bs[0].Name, AdminDraining); err != nil {
		t.Fatal(err)
	}
	bs[1].Acquire() // busier than bs[2]
	if got := p.PickEnabled(nil); got != bs[2] {
		t.Errorf("PickEnabled = %v, want the idle enabled backend %s", got, bs[2].Name)
	}
	if got := p.PickEnabled([]*Backend{bs[2]}); got != bs[1] {
		t.Errorf("PickEnabled with %s tried = %v, want %s", bs[2].Name, got, bs[1].Name)
	}
	if got := p.PickEnabled([]*Backend{bs[1], bs[2]}); got != nil {
		t.Errorf("PickEnabled with every enabled backend tried = %v, want nil", got)
	}
}
