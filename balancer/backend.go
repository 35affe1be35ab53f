package balancer

import (
	"net/url"
	"sync/atomic"
)

// Backend is one upstream server. Name, URL and Weight are fixed once the
// Backend is given to a Pool; everything else is live state updated with
// atomics, so a Backend is safe for concurrent use. Build it with NewBackend.
type Backend struct {
	Name   string
	URL    *url.URL
	Weight int // 1..MaxWeight; only weighted_round_robin uses it

	// st is shared between successive Backend values of the same name across
	// Pool.Update, so a URL or weight change keeps counters, health and admin
	// state, and requests still in flight on the old value release into it.
	st *backendState
}

// backendState is the live, mutable part of a Backend.
type backendState struct {
	inFlight atomic.Int64
	requests atomic.Uint64
	errors   atomic.Uint64
	down     atomic.Bool  // false = healthy, so a new backend starts up
	admin    atomic.Int32 // AdminState
	// warmSince is when the backend last became available (unix
	// nanoseconds) while slow start was on; 0 = at full share.
	warmSince atomic.Int64
}

// NewBackend returns a healthy, enabled backend with zeroed counters.
func NewBackend(name string, u *url.URL, weight int) *Backend {
	return &Backend{Name: name, URL: u, Weight: weight, st: new(backendState)}
}

// Acquire counts a request as in flight on b. Call it when the request is sent.
func (b *Backend) Acquire() { b.st.inFlight.Add(1) }

// Release ends a request started with Acquire and counts it, as an error if failed.
func (b *Backend) Release(failed bool) {
	b.st.inFlight.Add(-1)
	b.st.requests.Add(1)
	if failed {
		b.st.errors.Add(1)
	}
}

// InFlight reports the number of requests acquired but not yet released.
func (b *Backend) InFlight() int64 { return b.st.inFlight.Load() }

// Requests reports the number of released requests.
func (b *Backend) Requests() uint64 { return b.st.requests.Load() }

// Errors reports the number of requests released as failed.
func (b *Backend) Errors() uint64 { return b.st.errors.Load() }

// Healthy reports the last health verdict given to the Pool (true until one says otherwise).
func (b *Backend) Healthy() bool { return !b.st.down.Load() }

// Admin reports the operator-set state.
func (b *Backend) Admin() AdminState { return AdminState(b.st.admin.Load()) }

// State is the display state, combining admin state and health:
// Maintenance beats Draining beats Down beats Up.
func (b *Backend) State() State {
	switch b.Admin() {
	case AdminMaintenance:
		return StateMaintenance
	case AdminDraining:
		return StateDraining
	}
	if !b.Healthy() {
		return StateDown
	}
	return StateUp
}

// available reports whether b may receive new requests.
func (b *Backend) available() bool { return b.Admin() == AdminEnabled && b.Healthy() }

// AdminState is the state an operator sets. Only AdminEnabled backends receive
// new requests; requests already in flight finish in every state.
type AdminState int32

// Admin states.
const (
	AdminEnabled     AdminState = iota // in rotation (the zero value)
	AdminDraining                      // out of rotation until enabled, e.g. before a deploy
	AdminMaintenance                   // out of rotation and shown as under maintenance
)

// String returns "enabled", "draining" or "maintenance".
func (s AdminState) String() string {
	switch s {
	case AdminEnabled:
		return "enabled"
	case AdminDraining:
		return "draining"
	case AdminMaintenance:
		return "maintenance"
	}
	return "unknown"
}

// State is a backend's display state; see Backend.State.
type State int

// Display states.
const (
	StateUp State = iota
	StateDown
	StateDraining
	StateMaintenance
)

// String returns "up", "down", "draining" or "maintenance".
func (s State) String() string {
	switch s {
	case StateUp:
		return "up"
	case StateDown:
		return "down"
	case StateDraining:
		return "draining"
	case StateMaintenance:
		return "maintenance"
	}
	return "unknown"
}
