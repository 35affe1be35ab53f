package proxy

import (
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore"
)

// This file keeps a session's requests waiting at the edge instead of inside
// PHP. PHP locks a session for a whole request, so its other requests sent
// at the same time only wait for that lock in PHP, holding a worker each and,
// with pecl memcached, failing after ~0.75 s. Here at most MaxInFlight
// requests of a verified session are at PHP from this instance; the others
// wait in arrival order and go on when a response of the session is
// complete. The queue is kept in the session store's in-flight records (the
// bookkeeping Locks.Begin/End already does), so there is one table, not two.
// Across instances PHP's lock still orders the requests.

// Slots is the per-session bookkeeping the queue lives in: Locks plus a
// queue of waiters per session. *sessionstore.Store implements it.
type Slots interface {
	Locks
	// Enter admits a request of session id when fewer than max it admitted
	// are in flight and none waits (Release follows), or queues w (if not
	// nil and fewer than maxQueue wait). With max <= 0 it is Begin.
	Enter(id string, max, maxQueue int, w *sessionstore.Waiter) (admitted, queued bool)
	// Release ends an admitted request, handing its slot to the first waiter.
	Release(id string)
	// Leave dequeues w; false means Release handed it a slot already.
	Leave(id string, w *sessionstore.Waiter) bool
}

// QueueObserver is told how waits at the edge ended. Safe for concurrent use.
type QueueObserver interface {
	// QueueWait reports one request that waited for d (whatever the end).
	QueueWait(d time.Duration)
	// QueueRejected reports a 503: reason "timeout" (waited Timeout) or
	// "full" (MaxQueue or MaxWaiters reached).
	QueueRejected(reason string)
}

// QueueOptions configure the per-session queue (SessionOptions.Queue). It
// needs SessionOptions.Locks to implement Slots.
type QueueOptions struct {
	// MaxInFlight requests of one session are at PHP at once from here.
	MaxInFlight int
	// MaxQueue requests of one session may wait; more get 503 at once.
	MaxQueue int
	// MaxWaiters bounds the waiting requests of all sessions together.
	MaxWaiters int
	// Timeout bounds a wait; past it the request gets 503 with Retry-After.
	Timeout time.Duration
	// BypassPaths are never queued (nor counted against MaxInFlight): path
	// prefixes, or globs (path.Match; a glob without "/" matches the last
	// path segment, e.g. "*.css").
	BypassPaths []string
	// ReleaseOnFirstBytePaths (same syntax) end their slot when the
	// response starts, as server-sent events always do: long downloads and
	// streams that close the PHP session before they start sending.
	ReleaseOnFirstBytePaths []string
	Observer                QueueObserver // nil: not observed
}

// queue is the edge queue's state beside the Slots table.
type queue struct {
	o       QueueOptions
	slots   Slots
	waiters atomic.Int64 // requests waiting now, all sessions (MaxWaiters)
}

func newQueue(o *QueueOptions, locks Locks) *queue {
	slots, ok := locks.(Slots)
	if o == nil || o.MaxInFlight <= 0 || !ok {
		return nil
	}
	q := &queue{o: *o, slots: slots}
	if q.o.Observer == nil {
		q.o.Observer = nopQueueObserver{}
	}
	return q
}

// admit is the queue's hook in serve, after the session check and before a
// backend is picked. It returns 0 when the request may go on (holding a
// slot if it has a verified session: end releases it), else the status it
// answered. Requests without a verified session are not looked at.
func (l *sessionLayer) admit(w http.ResponseWriter, r *http.Request, st *sessionState) int {
	q := l.queue
	if q == nil || st.id == "" {
		return 0
	}
	if matchPaths(q.o.BypassPaths, r.URL.Path) {
		// In flight for the lock guards (it may hold the lock), but it
		// neither waits nor takes a slot.
		q.slots.Begin(st.id)
		st.tracked = true
		return 0
	}
	if ok, _ := q.slots.Enter(st.id, q.o.MaxInFlight, 0, nil); ok {
		st.tracked, st.slot = true, true
		return 0
	}
	if status := q.wait(w, r, st, l); status != 0 {
		return status
	}
	// The wait may have been long: check the session again, so that one
	// killed meanwhile never reaches PHP (check strips its cookie), and the
	// lock state the orphaned-lock release relies on is current.
	again := l.check(r)
	st.renew, st.locked = again.renew, again.locked
	if again.id == "" {
		st.renew, st.locked = false, true // no release of a lock it cannot hold
	}
	return 0
}

// wait queues the request and blocks until it gets a slot, its client
// leaves or Timeout passes.
func (q *queue) wait(w http.ResponseWriter, r *http.Request, st *sessionState, l *sessionLayer) int {
	if q.waiters.Add(1) > int64(q.o.MaxWaiters) {
		q.waiters.Add(-1)
		return q.reject(w, "full", l, st)
	}
	defer q.waiters.Add(-1)
	wt := sessionstore.NewWaiter()
	admitted, queued := q.slots.Enter(st.id, q.o.MaxInFlight, q.o.MaxQueue, wt)
	if admitted { // a slot freed since the first try
		st.tracked, st.slot = true, true
		return 0
	}
	if !queued {
		return q.reject(w, "full", l, st)
	}
	start := time.Now()
	timer := time.NewTimer(q.o.Timeout)
	defer timer.Stop()
	timedOut := false
	select {
	case <-wt.Ready():
		st.tracked, st.slot = true, true
		q.o.Observer.QueueWait(time.Since(start))
		return 0
	case <-timer.C:
		timedOut = true
	case <-r.Context().Done():
	}
	q.o.Observer.QueueWait(time.Since(start))
	if !q.slots.Leave(st.id, wt) {
		// Handed a slot as the wait ended: it is ours to use or release.
		st.tracked, st.slot = true, true
		if timedOut {
			return 0
		}
	}
	if !timedOut {
		l.log.Info("client gone while queued", "status", StatusClientClosed, "path", r.URL.Path)
		return StatusClientClosed
	}
	return q.reject(w, "timeout", l, st)
}

func (q *queue) reject(w http.ResponseWriter, reason string, l *sessionLayer, st *sessionState) int {
	q.o.Observer.QueueRejected(reason)
	l.log.Warn("session queue: request refused", "reason", reason, "session", sessionstore.ShortID(st.id))
	w.Header().Set("Retry-After", "1")
	http.Error(w, "503 Service Unavailable: too many requests of this session at once, please retry shortly.",
		http.StatusServiceUnavailable)
	return http.StatusServiceUnavailable
}

// releaseEarly ends the request's slot before its response is complete when
// the rest of the response is no longer PHP's request holding the session:
// a protocol switch (the tunnel may last hours), server-sent events and
// ReleaseOnFirstBytePaths, once the response headers arrived (PHP sends
// them with its first output).
func (l *sessionLayer) releaseEarly(r *http.Request, res *http.Response, st *sessionState) {
	if l.queue == nil || !st.tracked {
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols || isEventStream(res.Header) ||
		matchPaths(l.queue.o.ReleaseOnFirstBytePaths, r.URL.Path) {
		l.end(st)
	}
}

// matchPaths reports whether p matches one of patterns: a prefix, or a glob
// (one with *, ? or [) matched by path.Match against the whole path, or
// against its last segment when the glob has no "/".
func matchPaths(patterns []string, p string) bool {
	for _, pat := range patterns {
		if !strings.ContainsAny(pat, "*?[") {
			if strings.HasPrefix(p, pat) {
				return true
			}
			continue
		}
		target := p
		if !strings.Contains(pat, "/") {
			target = p[strings.LastIndexByte(p, '/')+1:]
		}
		if ok, _ := path.Match(pat, target); ok {
			return true
		}
	}
	return false
}

type nopQueueObserver struct{}

func (nopQueueObserver) QueueWait(time.Duration) {}
func (nopQueueObserver) QueueRejected(string)    {}
