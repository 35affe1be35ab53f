package balancer

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestNewPoolRejects(t *testing.T) {
	u := &url.URL{Scheme: "http", Host: "127.0.0.1:8000"}
	for _, tc := range []struct {
		name     string
		policy   string
		backends []*Backend
		want     string // in the error
	}{
		{"unknown policy", "fastest", backends(1), `unknown policy "fastest" (valid: round_robin, weighted_round_robin, least_conn, p2c, random)`},
		{"empty", RoundRobin, nil, "no backends"},
		{"duplicate", RoundRobin, []*Backend{NewBackend("a", u, 1), NewBackend("a", u, 1)}, `duplicate backend name "a"`},
		{"no name", RoundRobin, []*Backend{NewBackend("", u, 1)}, "empty name"},
		{"no URL", RoundRobin, []*Backend{NewBackend("a", nil, 1)}, "no URL"},
		{"weight 0", RoundRobin, []*Backend{NewBackend("a", u, 0)}, "weight 0 outside 1..1000"},
		{"weight 1001", RoundRobin, []*Backend{NewBackend("a", u, 1001)}, "weight 1001 outside"},
		{"literal", RoundRobin, []*Backend{{Name: "a", URL: u, Weight: 1}}, "not built with NewBackend"},
		{"nil", RoundRobin, []*Backend{nil}, "not built with NewBackend"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPool(tc.policy, tc.backends)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewPool = %v, %v; want error containing %q", p, err, tc.want)
			}
		})
	}
}

func TestEmptyPolicyIsRoundRobin(t *testing.T) {
	p, _ := testPool(t, "", 1, 1)
	if p.Policy() != RoundRobin {
		t.Fatalf("Policy() = %q, want %q", p.Policy(), RoundRobin)
	}
}

func TestBackendLookup(t *testing.T) {
	p, bs := testPool(t, RoundRobin, 1, 1, 1)
	if !slices.Equal(p.Backends(), bs) {
		t.Errorf("Backends() not the configured backends in order")
	}
	if p.Backend("b") != bs[1] || p.Backend("x") != nil {
		t.Errorf("Backend(b), Backend(x) = %v, %v; want b, nil", p.Backend("b"), p.Backend("x"))
	}
}

func TestCounters(t *testing.T) {
	b := NewBackend("a", &url.URL{Host: "127.0.0.1:1"}, 1)
	b.Acquire()
	b.Acquire()
	b.Acquire()
	b.Release(false)
	b.Release(true)
	if b.InFlight() != 1 || b.Requests() != 2 || b.Errors() != 1 {
		t.Fatalf("in flight %d, requests %d, errors %d; want 1, 2, 1", b.InFlight(), b.Requests(), b.Errors())
	}
}

func TestStatePrecedence(t *testing.T) {
	for _, tc := range []struct {
		healthy bool
		admin   AdminState
		want    string
	}{
		{true, AdminEnabled, "up"},
		{false, AdminEnabled, "down"},
		{true, AdminDraining, "draining"},
		{false, AdminDraining, "draining"},
		{true, AdminMaintenance, "maintenance"},
		{false, AdminMaintenance, "maintenance"},
	} {
		p, bs := testPool(t, RoundRobin, 1)
		p.SetHealthy("a", tc.healthy)
		if err := p.SetAdmin("a", tc.admin); err != nil {
			t.Fatal(err)
		}
		if got := bs[0].State().String(); got != tc.want {
			t.Errorf("healthy %v, admin %v: state %q, want %q", tc.healthy, tc.admin, got, tc.want)
		}
	}
}

func TestNewBackendStartsUpAndEnabled(t *testing.T) {
	b := NewBackend("a", &url.URL{Host: "127.0.0.1:1"}, 1)
	if !b.Healthy() || b.Admin() != AdminEnabled || b.State() != StateUp {
		t.Fatalf("new backend: healthy %v, admin %v, state %v; want true, enabled, up", b.Healthy(), b.Admin(), b.State())
	}
}

func TestSetAdminRejects(t *testing.T) {
	p, _ := testPool(t, RoundRobin, 1)
	if err := p.SetAdmin("x", AdminDraining); err == nil {
		t.Error("SetAdmin on an unknown backend succeeded")
	}
	if err := p.SetAdmin("a", AdminMaintenance+1); err == nil {
		t.Error("SetAdmin with an invalid state succeeded")
	}
	if p.Backend("a").Admin() != AdminEnabled {
		t.Error("a failed SetAdmin changed the state")
	}
}

func TestSnapshotRebuiltOnlyOnChange(t *testing.T) {
	p, _ := testPool(t, WeightedRoundRobin, 1, 2)
	s := p.snap.Load()
	p.SetHealthy("a", true)
	p.SetHealthy("x", false)
	if err := p.SetAdmin("a", AdminEnabled); err != nil {
		t.Fatal(err)
	}
	if p.snap.Load() != s {
		t.Fatal("snapshot rebuilt although nothing changed")
	}
	p.SetHealthy("a", false)
	if p.snap.Load() == s {
		t.Fatal("snapshot not rebuilt when a went down")
	}
	if got := picks(p, 10); got["b"] != 10 {
		t.Fatalf("picks %v with a down, want all on b", got)
	}
}

func TestUpdateKeepsState(t *testing.T) {
	p, old := testPool(t, RoundRobin, 1, 1, 1)
	a, b := old[0], old[1]
	a.Acquire()
	a.Acquire()
	a.Release(true)
	b.Acquire()
	p.SetHealthy("b", false)
	if err := p.SetAdmin("a", AdminDraining); err != nil {
		t.Fatal(err)
	}

	newB := NewBackend("b", &url.URL{Scheme: "http", Host: "127.0.0.1:9001"}, 5)
	d := NewBackend("d", &url.URL{Scheme: "http", Host: "127.0.0.1:9002"}, 1)
	sameA := NewBackend("a", a.URL, a.Weight)
	if err := p.Update(LeastConn, []*Backend{d, newB, sameA}); err != nil {
		t.Fatal(err)
	}

	if p.Policy() != LeastConn {
		t.Errorf("Policy() = %q, want %q", p.Policy(), LeastConn)
	}
	if got := p.Backends(); len(got) != 3 || got[0] != d || got[1] != newB || got[2] != a {
		t.Errorf("Backends() = %v, want [d, new b, old a] in the new config order", got)
	}
	if p.Backend("c") != nil {
		t.Error("removed backend c still present")
	}
	if a.InFlight() != 1 || a.Requests() != 1 || a.Errors() != 1 || a.Admin() != AdminDraining {
		t.Errorf("unchanged a lost state: in flight %d, requests %d, errors %d, admin %v",
			a.InFlight(), a.Requests(), a.Errors(), a.Admin())
	}
	if newB.URL.Host != "127.0.0.1:9001" || newB.Weight != 5 || newB.Healthy() || newB.InFlight() != 1 {
		t.Errorf("changed b: URL %v, weight %d, healthy %v, in flight %d; want new URL and weight, down, 1 in flight",
			newB.URL, newB.Weight, newB.Healthy(), newB.InFlight())
	}
	// A request sent to the old b value before the reload finishes on it.
	b.Release(false)
	if newB.InFlight() != 0 || newB.Requests() != 1 {
		t.Errorf("after release on old b: in flight %d, requests %d; want 0, 1", newB.InFlight(), newB.Requests())
	}
	if got := picks(p, 10); got["d"] != 10 {
		t.Errorf("picks %v, want all on d (a draining, b down)", got)
	}
}

func TestUpdateErrorLeavesPoolUnchanged(t *testing.T) {
	p, bs := testPool(t, RoundRobin, 1, 1)
	if err := p.Update("nope", backends(1)); err == nil {
		t.Fatal("Update with an unknown policy succeeded")
	}
	if err := p.Update(Random, nil); err == nil {
		t.Fatal("Update with no backends succeeded")
	}
	if p.Policy() != RoundRobin || !slices.Equal(p.Backends(), bs) {
		t.Fatalf("failed Update changed the pool: %q %v", p.Policy(), p.Backends())
	}
}
