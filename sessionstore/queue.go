package sessionstore

import "sync/atomic"

// This file is the per-session queue at the edge, kept in the same in-flight
// records as Begin and End (lock.go): a session's requests beyond a bound
// wait here, in arrival order, for one of its requests to end, instead of
// spinning on the session lock inside PHP. The proxy decides who queues and
// for how long; this file only keeps the order and hands slots over.

// Waiter is one request waiting for a slot of its session (see Enter).
type Waiter struct {
	ready chan struct{} // closed when Release hands the waiter its slot
	next  *Waiter
}

// NewWaiter returns a Waiter for one Enter.
func NewWaiter() *Waiter { return &Waiter{ready: make(chan struct{})} }

// Ready is closed when the waiter has been handed a slot: the request is
// then in flight, and Release must follow.
func (w *Waiter) Ready() <-chan struct{} { return w.ready }

// queueCounts are the queue's totals across sessions, for metrics and status.
type queueCounts struct {
	sessions, waiters atomic.Int64
}

// Enter admits a request of session id when fewer than max of its requests
// Enter admitted are in flight here and none is waiting; Release must follow.
// With max <= 0 it is Begin (End must follow): admitted at once, and not
// counted against any max. Otherwise it queues w at the end of the session's
// queue unless w is nil or maxQueue requests already wait. It reports
// whether the request was admitted or queued (wait for w.Ready, or Leave).
func (s *Store) Enter(id string, max, maxQueue int, w *Waiter) (admitted, queued bool) {
	var now int64
	if s.staleAfter > 0 { // only the stale lock watch reads since
		now = s.now().UnixNano()
	}
	s.inflight.update(s.cache.hash(id), 1<<30, func(f inflight, _ bool) (inflight, bool) {
		if max <= 0 || f.slots < int32(max) && f.head == nil {
			if f.n == 0 {
				f.since = now
			}
			f.n++
			f.begun++
			if max > 0 {
				f.slots++
			}
			admitted = true
			return f, true
		}
		if w != nil && int(f.waiting) < maxQueue {
			if f.tail == nil {
				f.head = w
				s.queue.sessions.Add(1)
			} else {
				f.tail.next = w
			}
			f.tail = w
			f.waiting++
			s.queue.waiters.Add(1)
			queued = true
		}
		return f, true // n > 0 here
	})
	return admitted, queued
}

// Release ends a request Enter admitted against a max (or handed a slot):
// the first waiter of the session, if any, is handed its slot.
func (s *Store) Release(id string) {
	s.endResumed(id) // before a waiter is handed the slot
	s.inflight.update(s.cache.hash(id), 1<<30, func(f inflight, _ bool) (inflight, bool) {
		if w := f.head; w != nil {
			// n and slots stay: the slot passes on, to a request that
			// begins.
			f.begun++
			s.dequeue(&f, nil, w)
			close(w.ready)
			return f, true
		}
		f.n--
		f.slots--
		return f, f.n > 0
	})
}

// Leave takes w out of session id's queue (its client left, or it waited too
// long). It reports false if w was not there any more: Release handed it a
// slot, which its request now holds (Release must follow).
func (s *Store) Leave(id string, w *Waiter) (left bool) {
	s.inflight.update(s.cache.hash(id), 1<<30, func(f inflight, ok bool) (inflight, bool) {
		var prev *Waiter
		for c := f.head; c != nil; prev, c = c, c.next {
			if c == w {
				s.dequeue(&f, prev, w)
				left = true
				break
			}
		}
		return f, ok && (f.n > 0 || f.head != nil)
	})
	return left
}

// dequeue unlinks w, which follows prev (nil: w is the head), from f's queue.
func (s *Store) dequeue(f *inflight, prev, w *Waiter) {
	if prev == nil {
		f.head = w.next
	} else {
		prev.next = w.next
	}
	if f.tail == w {
		f.tail = prev
	}
	w.next = nil
	f.waiting--
	s.queue.waiters.Add(-1)
	if f.head == nil {
		s.queue.sessions.Add(-1)
	}
}

// Queued reports how many sessions have requests waiting in Enter's queues,
// and how many requests wait in all.
func (s *Store) Queued() (sessions, waiters int64) {
	return s.queue.sessions.Load(), s.queue.waiters.Load()
}
