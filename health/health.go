// Package health owns health checking of backends for sessiongate: active
// HTTP probes and passive failure accounting from proxied traffic. It keeps
// the observed state (last check, latency, consecutive counts) for status
// pages and tells other packages about changes only through the small
// interface declared here (Reporter), so it never imports balancer.
// (Memcached liveness is sessionstore's: its per-node watchers own it.)
//
// Backend state machine (BackendChecker):
//
//   - A backend starts up. Rise consecutive probe successes bring a down
//     backend up; Fall consecutive failures take an up backend down. Probes
//     run every Interval while up and every DownInterval while down.
//   - Passive: PassiveFailures failed upstream attempts within PassiveWindow
//     take an up backend down for PassiveCooldown. No probe runs during the
//     cooldown. Afterwards the backend needs Rise probe successes, or, with
//     active checks disabled, it comes back as soon as the cooldown ends.
//
// Reporters are called with the checker's lock held, so that reports for one
// backend arrive in the order the state changed. They must be quick
// and must not call back into the checker.
package health

import (
	"context"
	"sync"
	"time"
)

// Clock is the time source of a checker; tests inject a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// realClock is the Clock used unless WithClock says otherwise.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// After is time.After: since Go 1.23 an unstopped timer is collected once
// unreferenced, so calling it in a loop does not leak.
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Option configures a checker.
type Option func(*options)

type options struct {
	clock Clock
}

// WithClock makes a checker read time and wait through c instead of the
// system clock.
func WithClock(c Clock) Option { return func(o *options) { o.clock = c } }

func buildOptions(opts []Option) options {
	o := options{clock: realClock{}}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// loops runs one goroutine per key (backend name) for the
// duration of a Run call. Every method except wait must be called with the
// owning checker's mutex held.
type loops struct {
	ctx     context.Context // Run's context; nil while Run is not active
	running map[string]loop
	wg      sync.WaitGroup // every goroutine started since Run began
}

type loop struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has returned
}

// begin makes start effective; goroutines live until ctx ends or stop.
func (l *loops) begin(ctx context.Context) {
	l.ctx = ctx
	l.running = make(map[string]loop)
}

// start runs f(ctx) in a goroutine under key, if Run is active.
func (l *loops) start(key string, f func(ctx context.Context)) {
	if l.ctx == nil {
		return
	}
	ctx, cancel := context.WithCancel(l.ctx)
	done := make(chan struct{})
	l.running[key] = loop{cancel: cancel, done: done}
	l.wg.Go(func() {
		defer close(done)
		f(ctx)
	})
}

// stop cancels the goroutine under key and returns a channel closed once it
// has returned, or nil if none runs.
func (l *loops) stop(key string) <-chan struct{} {
	lp, ok := l.running[key]
	if !ok {
		return nil
	}
	delete(l.running, key)
	lp.cancel()
	return lp.done
}

// end cancels every goroutine and makes start a no-op again. The caller
// then waits for them with wait, without holding its mutex.
func (l *loops) end() {
	for key := range l.running {
		l.stop(key)
	}
	l.ctx = nil
}

// wait blocks until every goroutine started since begin has returned.
func (l *loops) wait() { l.wg.Wait() }

// run is the body of the checker's Run: under mu, begin and start every
// current target; block until ctx ends; then stop them all and wait.
func (l *loops) run(ctx context.Context, mu *sync.Mutex, startAll func()) {
	mu.Lock()
	l.begin(ctx)
	startAll()
	mu.Unlock()

	<-ctx.Done()
	mu.Lock()
	l.end()
	mu.Unlock()
	l.wait()
}

// waitAll blocks until every channel in done is closed.
func waitAll(done []<-chan struct{}) {
	for _, d := range done {
		<-d
	}
}
