package health

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitLimit bounds every wait in these tests.
const waitLimit = 5 * time.Second

// stepClock is a Clock the test drives by hand: every After call is handed
// to the test (wait), which advances time and ends it (fire). Tests using it
// run one checker goroutine, so the calls come in a known order.
type stepClock struct {
	mu      sync.Mutex // guards now
	now     time.Time
	calls   chan afterCall
	pending afterCall // used by the test goroutine only
}

type afterCall struct {
	d  time.Duration
	ch chan time.Time
}

func newStepClock() *stepClock {
	return &stepClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), calls: make(chan afterCall, 64)}
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.calls <- afterCall{d: d, ch: ch}
	return ch
}

func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// wait waits for the checker's next After call, which also means its
// previous check has finished, checks the duration and keeps the call
// pending until fire. Between wait and fire the checker is idle.
func (c *stepClock) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case a := <-c.calls:
		if a.d != d {
			t.Fatalf("checker waits %v, want %v", a.d, d)
		}
		c.pending = a
	case <-time.After(waitLimit):
		t.Fatalf("checker never waited on the clock (want a %v wait)", d)
	}
}

// fire advances the clock to the end of the pending wait and ends it.
func (c *stepClock) fire() {
	c.Advance(c.pending.d)
	c.pending.ch <- c.Now()
}

// recorder collects reporter calls and lets a test wait for a condition.
type recorder[T any] struct {
	mu     sync.Mutex // guards got
	got    []T
	notify chan struct{}
}

func newRecorder[T any]() *recorder[T] { return &recorder[T]{notify: make(chan struct{}, 1)} }

func (r *recorder[T]) add(v T) {
	r.mu.Lock()
	r.got = append(r.got, v)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder[T]) all() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]T(nil), r.got...)
}

// waitFor waits until cond holds for the calls so far.
func (r *recorder[T]) waitFor(t *testing.T, what string, cond func([]T) bool) []T {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		if got := r.all(); cond(got) {
			return got
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; got %+v", what, r.all())
		}
	}
}

type report struct {
	name string
	up   bool
}

type backendReporter struct{ *recorder[report] }

func (r backendReporter) SetHealthy(name string, up bool) { r.add(report{name, up}) }

// logBuffer captures slog text output from many goroutines.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// count returns how many records with message msg were logged.
func (b *logBuffer) count(msg string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), `msg="`+msg+`"`)
}

func newLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}

// runChecker runs run in a goroutine and, at cleanup, cancels it and fails
// the test unless it returns in time. The returned stop does the same early.
func runChecker(t *testing.T, run func(context.Context)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(waitLimit):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
