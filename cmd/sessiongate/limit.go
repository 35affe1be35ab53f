package main

import (
	"io"
	"net"
	"sync"
	"time"
)

// limitListener bounds the number of open client connections. A connection
// beyond the limit is answered within rejectWait — with a plain 503 when the
// listener speaks cleartext HTTP, by closing it otherwise — instead of
// queueing in the kernel backlog where it would stall.
func limitListener(l net.Listener, n int, plainHTTP bool) net.Listener {
	return &limited{Listener: l, sem: make(chan struct{}, n), rejecting: make(chan struct{}, n), plain: plainHTTP}
}

type limited struct {
	net.Listener
	sem   chan struct{}
	plain bool
	// rejecting bounds the connections being answered 503 at a time; beyond
	// it an excess connection is closed unanswered. Close fills it to wait
	// for the ones in progress.
	rejecting chan struct{}
	closeOnce sync.Once
}

func (l *limited) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &clientConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
		}
		if !l.plain {
			c.Close()
			continue
		}
		select {
		case l.rejecting <- struct{}{}:
			go l.reject(c)
		default: // as many are being answered already
			c.Close()
		}
	}
}

// Close stops accepting and waits for the 503s being sent (at most
// rejectWait+rejectLinger each).
func (l *limited) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() {
		for range cap(l.rejecting) {
			l.rejecting <- struct{}{}
		}
	})
	return err
}

// overloaded is the whole answer to a connection over the limit.
const overloaded = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 29\r\n\r\nsessiongate is at capacity.\r\n"

const (
	// rejectWait is how long an excess connection may take to start its
	// request before it gets the 503 anyway.
	rejectWait = 200 * time.Millisecond
	// rejectLinger bounds writing the 503 and draining the request after it.
	rejectLinger = 300 * time.Millisecond
)

// reject answers a connection over the limit with 503. It waits for the
// request to start, because a response that comes before its request is
// dropped by clients such as Go's ("unsolicited response"); after the answer
// it half-closes and drains, because closing with request bytes unread would
// reset the connection and could destroy the 503 before the client read it.
func (l *limited) reject(c net.Conn) {
	defer func() { <-l.rejecting }()
	defer c.Close()
	var buf [1024]byte
	c.SetReadDeadline(time.Now().Add(rejectWait))
	c.Read(buf[:]) // an idle client gets the answer when the wait is over
	c.SetDeadline(time.Now().Add(rejectLinger))
	if _, err := io.WriteString(c, overloaded); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		io.Copy(io.Discard, c) // until the client closes or the deadline
	}
}
