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
	err  error
	// wake tells a waiting call that it is answered (nil) or that it sends
	// the next exchange, these calls (itself first).
	wake chan []*pipedCall
}

// metaPiped is metaDoBytes for a lookup, sent with whatever other lookups
// of n are waiting (see batcher). It returns within twice Timeout: at most
// one exchange in flight before its own, which is not sent when that one
// timed out (see exchange).
func (s *Store) metaPiped(n *node, req []byte, read func(*bufio.Reader) error) error {
	c := &pipedCall{req: req, read: read}
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
// When the node kept this exchange waiting for the whole Timeout, those that
// waited get its error instead of an exchange of their own: the node just
// showed it hangs, and asking it again would cost each another Timeout.
func (s *Store) exchange(n *node, calls []*pipedCall) {
	err := s.sendPiped(n, calls)
	b := &n.batch
	b.mu.Lock()
	next := b.waiting
	b.waiting = nil
	hung := isTimeout(err)
	b.flying = len(next) > 0 && !hung
	b.mu.Unlock()
	switch {
	case hung:
		for _, c := range next {
			c.err = err
			c.wake <- nil
		}
	case len(next) > 0:
		next[0].wake <- next
	}
	for _, c := range calls[1:] { // calls[0] is the caller
		c.wake <- nil
	}
}

// sendPiped is the I/O of exchange: it sets every call's err, and returns
// the error that ended the exchange early, if any. Its deadline is Timeout
// from its start, as a lone lookup's is: the time calls waited for it
// here is not the node's.
func (s *Store) sendPiped(n *node, calls []*pipedCall) error {
	n.batch.calls.Add(uint64(len(calls)))
	n.batch.exchanges.Add(1)
	read := 0 // calls whose answers were read
	fail := func(err error) error {
		for _, c := range calls[read:] {
			c.err = err
		}
		return err
	}
	mc, err := s.metaConn(context.Background(), n, time.Now().Add(s.timeout))
	if err != nil {
		return fail(err)
	}
	if err := writeCalls(mc.c, calls); err != nil {
		mc.c.Close()
		return fail(err)
	}
	for _, c := range calls {
		if err := c.read(mc.r); err != nil {
			// The stream's position is unknown: the calls after this one
			// get its error, and fanout retries them on a fresh
			// connection as it would their own failure.
			mc.c.Close()
			return fail(err)
		}
		read++
	}
	if mc.r.Buffered() > 0 {
		mc.c.Close()
		return nil
	}
	putIdle(n, mc)
	return nil
}

// writeCalls writes the calls' requests in one system call: one send of
// them joined (a sockio connection would write net.Buffers one at a time).
func writeCalls(c net.Conn, calls []*pipedCall) error {
	if len(calls) == 1 {
		return send(c, calls[0].req)
	}
	size := 0
	for _, c := range calls {
		size += len(c.req)
	}
	req := make([]byte, 0, size)
	for _, c := range calls {
		req = append(req, c.req...)
	}
	return send(c, req)
}
