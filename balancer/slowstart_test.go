package balancer

import (
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for slow start.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) add(d time.Duration) { c.ns.Add(int64(d)) }

// warmingPool is a pool of four backends with slow start 100s on a fake
// clock and deterministic randomness.
func warmingPool(t testing.TB, policy string, weights ...int) (*Pool, []*Backend, *fakeClock) {
	t.Helper()
	clk := &fakeClock{}
	clk.ns.Store(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC).UnixNano())
	bs := backends(weights...)
	p, err := NewPool(policy, bs, WithRand(rand.New(rand.NewPCG(7, 9)).Uint64), WithClock(clk.now), WithSlowStart(100*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return p, bs, clk
}

// share is the fraction of n picks that went to name, each request
// released at once (so least_conn and p2c see idle backends).
func share(p *Pool, n int, name string) float64 {
	got := 0
	for range n {
		b := p.Pick(nil)
		b.Acquire()
		b.Release(false)
		if b.Name == name {
			got++
		}
	}
	return float64(got) / float64(n)
}

// TestSlowStartRampsUnderEveryPolicy: a backend that comes back up gets
// about MinShare of its share at first, growing linearly with time to its
// full share at slow_start, under every policy; afterwards the policy is
// exact again (round robin rotates strictly).
func TestSlowStartRampsUnderEveryPolicy(t *testing.T) {
	const n = 20000
	for _, policy := range Policies() {
		t.Run(policy, func(t *testing.T) {
			p, _, clk := warmingPool(t, policy, 1, 1, 1, 1)
			if s := share(p, n, "d"); s < 0.2 || s > 0.3 {
				t.Fatalf("before any flap d gets %.3f, want 1/4: slow start applies only to comebacks", s)
			}
			p.SetHealthy("d", false)
			p.SetHealthy("d", true)
			// Expected share of d at ramp fraction f: weighted draws give
			// f/(3+f); least_conn and p2c admit d with probability f,
			// giving f/4.
			want := func(f float64) float64 {
				if policy == LeastConn || policy == P2C {
					return f / 4
				}
				return f / (3 + f)
			}
			prev := 0.0
			for _, step := range []struct {
				at time.Duration
				f  float64
			}{{0, MinShare}, {25 * time.Second, 0.25}, {50 * time.Second, 0.5}, {75 * time.Second, 0.75}} {
				clk.ns.Store(p.Backend("d").st.warmSince.Load() + int64(step.at))
				got, w := share(p, n, "d"), want(step.f)
				if got < 0.8*w || got > 1.2*w {
					t.Errorf("at %v: d gets %.3f of picks, want %.3f ±20%%", step.at, got, w)
				}
				if got <= prev {
					t.Errorf("at %v: share %.3f did not grow from %.3f", step.at, got, prev)
				}
				if sh := p.Share(p.Backend("d")); sh != step.f {
					t.Errorf("at %v: Share = %v, want %v", step.at, sh, step.f)
				}
				prev = got
			}
			clk.add(25 * time.Second) // ramp over
			if s := share(p, n, "d"); s < 0.2 || s > 0.3 {
				t.Errorf("after slow_start d gets %.3f, want 1/4", s)
			}
			if policy == RoundRobin {
				first := p.Pick(nil)
				for range 3 {
					p.Pick(nil)
				}
				if p.Pick(nil) != first {
					t.Error("round robin does not rotate strictly after the ramp")
				}
			}
		})
	}
}

// TestSlowStartAfterMaintenanceAndWeights: enabling a backend after
// maintenance starts its ramp; under weighted_round_robin the ramp scales
// its weight.
func TestSlowStartAfterMaintenanceAndWeights(t *testing.T) {
	p, _, clk := warmingPool(t, WeightedRoundRobin, 3, 1)
	if err := p.SetAdmin("a", AdminMaintenance); err != nil {
		t.Fatal(err)
	}
	if s := share(p, 1000, "b"); s != 1 {
		t.Fatalf("b gets %.3f while a is in maintenance", s)
	}
	p.SetAdmin("a", AdminEnabled)
	clk.add(50 * time.Second)
	// a: weight 3 at half share = 1.5 against b's 1: 60%.
	if s := share(p, 20000, "a"); s < 0.55 || s > 0.65 {
		t.Errorf("a at half ramp gets %.3f, want 0.6", s)
	}
	// Draining and enabling again restarts the ramp.
	p.SetAdmin("a", AdminDraining)
	p.SetAdmin("a", AdminEnabled)
	if sh := p.Share(p.Backend("a")); sh != MinShare {
		t.Errorf("Share after re-enable = %v, want %v", sh, MinShare)
	}
	// Off: no ramp at all.
	p.SetSlowStart(0)
	if sh := p.Share(p.Backend("a")); sh != 1 {
		t.Errorf("Share with slow start off = %v, want 1", sh)
	}
}

// TestSlowStartTriedAndAlone: a ramping backend that is the only one left
// still gets every request; tried backends stay excluded while ramping.
func TestSlowStartTriedAndAlone(t *testing.T) {
	for _, policy := range Policies() {
		p, bs, _ := warmingPool(t, policy, 1, 1, 1)
		p.SetHealthy("a", false)
		p.SetHealthy("b", false)
		p.SetHealthy("c", false)
		p.SetHealthy("c", true)
		for range 100 {
			if b := p.Pick(nil); b != bs[2] {
				t.Fatalf("%s: picked %v with only c up", policy, b)
			}
		}
		if b := p.Pick(bs[2:]); b != nil {
			t.Errorf("%s: picked %s, which was tried", policy, b.Name)
		}
		p.SetHealthy("b", true)
		for range 100 {
			if b := p.Pick(bs[1:2]); b != bs[2] {
				t.Fatalf("%s: picked %v, want c (b tried)", policy, b.Name)
			}
		}
	}
}

func TestSlowStartPickDoesNotAllocate(t *testing.T) {
	for _, policy := range Policies() {
		t.Run(policy, func(t *testing.T) {
			p, bs, _ := warmingPool(t, policy, 1, 2, 3, 4)
			p.SetHealthy("c", false)
			p.SetHealthy("c", true)
			tried := bs[:1]
			if a := testing.AllocsPerRun(100, func() { p.Pick(tried) }); a != 0 {
				t.Fatalf("Pick while warming allocates %v times per call, want 0", a)
			}
		})
	}
}
