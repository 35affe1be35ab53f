package sessionstore

// This file combines the lookups that reach one node at the same time into
// one pipelined exchange: one write and one read for all of them, instead of a
// round trip each. With many requests of cold sessions in flight, the system
// calls of those round trips were most of the store's CPU (bench/profiles.md,
// "cold"). No lookup waits for company: one that finds no exchange in flight
// on its node goes at once; those that arrive meanwhile go together in the
// next one, which the first of them sends.

import (
	"bufio"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// batcher queues a node's lookups while one exchange of them is in flight.
type batcher struct {
	mu      sync.Mutex
	flying  bool         // an exchange is in flight
	waiting []*pipedCall // to go in the next one, oldest first

	calls, exchanges atomic.Uint64 // lookups, and the exchanges that carried them
}

// pipedCall is one lookup's request and answer parser.
type pipedCall struct {
	req  []byte
	read func(*bufio.Reader) error
	at   time.Time // when it was asked: its Timeout counts from here
	err  error
	// wake tells a waiting call that it is answered (nil) or that it sends
	// the next exchange, these calls (itself first).
	wake chan []*pipedCall
}

// metaPiped is metaDoBytes for a lookup, sent with whatever other lookups
// of n are waiting (see batcher). It returns within Timeout from its call,
// as metaDoBytes does: an exchange's deadline is its oldest call's.
func (s *Store) metaPiped(n *node, req []byte, read func(*bufio.Reader) error) error {
	c := &pipedCall{req: req, read: read, at: time.Now()}
	b := &n.batch
	b.mu.Lock()
	if !b.flying {
		b.flying = true
		b.mu.Unlock()
		s.exchange(n, []*pipedCall{c})
		return c.err
	}
	c.wake = make(chan []*pipedCall, 1)
	b.waiting = append(b.waiting, c)
	b.mu.Unlock()
	if calls := <-c.wake; calls != nil {
		s.exchange(n, calls)
	}
	return c.err
}

// exchange sends calls to n in one write, reads their answers in order, hands
// the next exchange to the first call that waited meanwhile, and wakes calls.
func (s *Store) exchange(n *node, calls []*pipedCall) {
	s.sendPiped(n, calls)
	b := &n.batch
	b.mu.Lock()
	next := b.waiting
	b.waiting = nil
	b.flying = len(next) > 0
	b.mu.Unlock()
	if len(next) > 0 {
		next[0].wake <- next
	}
	for _, c := range calls[1:] { // calls[0] is the caller
		c.wake <- nil
	}
}

// sendPiped is the I/O of exchange: it sets every call's err.
func (s *Store) sendPiped(n *node, calls []*pipedCall) {
	n.batch.calls.Add(uint64(len(calls)))
	n.batch.exchanges.Add(1)
	read := 0 // calls whose answers were read
	fail := func(err error) {
		for _, c := range calls[read:] {
			c.err = err
		}
	}
	// calls[0] is the oldest.
	mc, err := s.metaConn(context.Background(), n, calls[0].at.Add(s.timeout))
	if err != nil {
		fail(err)
		return
	}
	bufs := make(net.Buffers, len(calls))
	for i, c := range calls {
		bufs[i] = c.req
	}
	if _, err := bufs.WriteTo(mc.c); err != nil { // one writev
		mc.c.Close()
		fail(err)
		return
	}
	for _, c := range calls {
		if err := c.read(mc.r); err != nil {
			// The stream's position is unknown: the calls after this one
			// get its error, and fanout retries them on a fresh
			// connection as it would their own failure.
			mc.c.Close()
			fail(err)
			return
		}
		read++
	}
	if mc.r.Buffered() > 0 {
		mc.c.Close()
		return
	}
	putIdle(n, mc)
}
