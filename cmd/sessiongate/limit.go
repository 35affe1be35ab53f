package main

import (
	"net"
	"sync"
	"time"
)

// limitListener bounds the number of open client connections. A connection
// beyond the limit is answered at once — with a plain 503 when the listener
// speaks cleartext HTTP, by closing it otherwise — instead of queueing in
// the kernel backlog where it would stall.
func limitListener(l net.Listener, n int, plainHTTP bool) net.Listener {
	return &limited{Listener: l, sem: make(chan struct{}, n), plain: plainHTTP}
}

type limited struct {
	net.Listener
	sem   chan struct{}
	plain bool
}

func (l *limited) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			l.reject(c)
		}
	}
}

// overloaded is the whole answer to a connection over the limit.
const overloaded = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 29\r\n\r\nsessiongate is at capacity.\r\n"

func (l *limited) reject(c net.Conn) {
	if l.plain {
		// Best effort and bounded: never let a slow client hold Accept.
		c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		c.Write([]byte(overloaded))
	}
	c.Close()
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
