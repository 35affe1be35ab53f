// Package balancer owns the set of backends and the choice of one backend per
// request.
//
// A Pool keeps its backends in config order and publishes an immutable
// snapshot of the available ones (healthy and AdminEnabled) through an
// atomic pointer. Pick reads only that snapshot and atomics: no lock and no
// allocation. Writers (SetHealthy, SetAdmin, Update) are rare; they serialise
// on a mutex and replace the snapshot only when availability or the backend
// set actually changes.
package balancer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MaxWeight is the largest accepted Backend.Weight.
const MaxWeight = 1000

// Pool chooses backends for requests. It is safe for concurrent use.
type Pool struct {
	snap atomic.Pointer[snapshot]
	// next is the round-robin position. It lives outside the snapshot so a
	// health flap does not send the next request back to the first backend.
	next atomic.Uint64
	rand func() uint64
	now  func() int64 // unix nanoseconds
	mu   sync.Mutex   // serialises writers, so each rebuild sees every earlier state change
	// slowStart is the ramp-up time of a backend that becomes available;
	// guarded by mu (Pick reads the snapshot's copy).
	slowStart time.Duration
}

// snapshot is what Pick reads. It is never modified after it is published.
type snapshot struct {
	policy string
	all    []*Backend // config order
	avail  []*Backend // available backends, config order
	cycle  []int32    // weighted_round_robin only: one smooth WRR cycle, indices into avail
	// Slow start: warmUntil (unix nanoseconds) is when the last available
	// backend still ramping up reaches its full share; 0 = none ramps.
	slowStart time.Duration
	warmUntil int64
}

// Option configures a Pool.
type Option func(*Pool)

// WithRand makes the Pool draw randomness from r instead of math/rand/v2.
// r must be safe for concurrent use if Pick is called concurrently.
func WithRand(r func() uint64) Option {
	return func(p *Pool) {
		if r != nil {
			p.rand = r
		}
	}
}

// WithClock makes the Pool read the time (for slow start) from now instead
// of time.Now. now must be safe for concurrent use.
func WithClock(now func() time.Time) Option {
	return func(p *Pool) {
		if now != nil {
			p.now = func() int64 { return now().UnixNano() }
		}
	}
}

// WithSlowStart sets the initial slow-start time (see SetSlowStart).
func WithSlowStart(d time.Duration) Option {
	return func(p *Pool) { p.slowStart = max(0, d) }
}

// NewPool returns a Pool over backends (see Update for the rules). The Pool
// takes ownership of the backends: change their state only through it.
func NewPool(policy string, backends []*Backend, opts ...Option) (*Pool, error) {
	p := &Pool{rand: rand.Uint64, now: func() int64 { return time.Now().UnixNano() }}
	for _, o := range opts {
		o(p)
	}
	p.snap.Store(&snapshot{})
	if err := p.Update(policy, backends); err != nil {
		return nil, err
	}
	return p, nil
}

// Update replaces the policy and backend set, as on a config reload. policy
// must be one of Policies() or "" for round_robin; backends must be non-empty,
// built with NewBackend, uniquely and non-emptily named, with a URL and a
// weight in 1..MaxWeight. On error the Pool is unchanged.
//
// A backend whose name already exists keeps its live state (in-flight count,
// counters, health, admin state). If its URL and weight are unchanged the
// existing *Backend is kept; otherwise the new value replaces it and shares the
// old state, so requests in flight on the old value release into the same
// counters. Requests in flight on removed backends simply finish.
func (p *Pool) Update(policy string, backends []*Backend) error {
	policy, err := check(policy, backends)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.snap.Load()
	all := make([]*Backend, len(backends))
	for i, b := range backends {
		prev := find(old.all, b.Name)
		switch {
		case prev == nil:
			// A backend a reload or DNS discovery adds to a running pool
			// is as cold as one coming back.
			if len(old.all) > 0 {
				p.warm(b)
			}
			all[i] = b
		case prev.URL.String() == b.URL.String() && prev.Weight == b.Weight:
			all[i] = prev
		default:
			// Fields are read without locks, so a changed backend is a new
			// value rather than an in-place edit.
			b.st = prev.st
			all[i] = b
		}
	}
	p.rebuild(policy, all)
	return nil
}

func check(policy string, backends []*Backend) (string, error) {
	if policy == "" {
		policy = RoundRobin
	}
	if !slices.Contains(Policies(), policy) {
		return "", fmt.Errorf("balancer: unknown policy %q (valid: %s)", policy, strings.Join(Policies(), ", "))
	}
	if len(backends) == 0 {
		return "", errors.New("balancer: no backends")
	}
	seen := make(map[string]bool, len(backends))
	for i, b := range backends {
		switch {
		case b == nil || b.st == nil:
			return "", fmt.Errorf("balancer: backend %d: not built with NewBackend", i)
		case b.Name == "":
			return "", fmt.Errorf("balancer: backend %d: empty name", i)
		case seen[b.Name]:
			return "", fmt.Errorf("balancer: duplicate backend name %q", b.Name)
		case b.URL == nil:
			return "", fmt.Errorf("balancer: backend %q: no URL", b.Name)
		case b.Weight < 1 || b.Weight > MaxWeight:
			return "", fmt.Errorf("balancer: backend %q: weight %d outside 1..%d", b.Name, b.Weight, MaxWeight)
		}
		seen[b.Name] = true
	}
	return policy, nil
}

// warm starts b's slow start, if slow start is on. Callers hold p.mu.
func (p *Pool) warm(b *Backend) {
	if p.slowStart > 0 {
		b.st.warmSince.Store(p.now())
	}
}

// rebuild publishes a new snapshot. Callers hold p.mu.
func (p *Pool) rebuild(policy string, all []*Backend) {
	s := &snapshot{policy: policy, all: all, slowStart: p.slowStart}
	now := p.now()
	for _, b := range all {
		if b.available() {
			s.avail = append(s.avail, b)
			if since := b.st.warmSince.Load(); since != 0 && p.slowStart > 0 && since+int64(p.slowStart) > now {
				s.warmUntil = max(s.warmUntil, since+int64(p.slowStart))
			}
		}
	}
	if policy == WeightedRoundRobin {
		s.cycle = smoothCycle(s.avail)
	}
	p.snap.Store(s)
}

func find(bs []*Backend, name string) *Backend {
	for _, b := range bs {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// SetHealthy records a health verdict for the named backend. Unknown names are
// ignored: a checker may report on a backend a reload has just removed.
func (p *Pool) SetHealthy(name string, up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.snap.Load()
	if b := find(s.all, name); b != nil && b.Healthy() != up {
		b.st.down.Store(!up)
		if b.available() {
			p.warm(b)
		}
		p.rebuild(s.policy, s.all)
	}
}

// SetAdmin sets the named backend's admin state (enable, drain, maintenance).
func (p *Pool) SetAdmin(name string, st AdminState) error {
	if st < AdminEnabled || st > AdminMaintenance {
		return fmt.Errorf("balancer: invalid admin state %d", st)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.snap.Load()
	b := find(s.all, name)
	if b == nil {
		return fmt.Errorf("balancer: unknown backend %q", name)
	}
	if b.Admin() != st {
		b.st.admin.Store(int32(st))
		if b.available() {
			p.warm(b)
		}
		p.rebuild(s.policy, s.all)
	}
	return nil
}

// SetSlowStart sets how long a backend that becomes available (healthy
// again, enabled after drain or maintenance, or added to a running pool)
// takes to ramp up from MinShare of its share of new requests to all of it;
// 0 turns slow start off. Backends ramping up keep their start time.
func (p *Pool) SetSlowStart(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slowStart = max(0, d)
	s := p.snap.Load()
	p.rebuild(s.policy, s.all)
}

// Share reports the fraction of its full share of new requests b gets now:
// 1 unless b is ramping up after becoming available (slow start).
func (p *Pool) Share(b *Backend) float64 {
	s := p.snap.Load()
	return s.share(b, p.now())
}

// Backends returns all backends in config order. The slice is shared: do not modify it.
func (p *Pool) Backends() []*Backend { return p.snap.Load().all }

// Backend returns the named backend, or nil.
func (p *Pool) Backend(name string) *Backend { return find(p.snap.Load().all, name) }

// Policy returns the policy in use; round_robin when it was configured as "".
func (p *Pool) Policy() string { return p.snap.Load().policy }
