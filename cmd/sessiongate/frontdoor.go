package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/sessiongate/sessiongate/limits"
	"github.com/sessiongate/sessiongate/metrics"
)

// proxyListener reads the PROXY protocol header (v1 or v2) that a TCP
// balancer in front sends at the start of each connection, and hands the
// server connections whose RemoteAddr is the client address the header
// carries, so the access log, X-Forwarded-For and the per-client limits all
// see the real client. A connection from outside trusted is closed unread;
// one whose header is malformed or late (timeout) is closed.
//
// Headers are read off the accept loop, one goroutine each (bounded by
// timeout), so a slow balancer connection never delays the others.
type proxyListener struct {
	net.Listener
	trusted []netip.Prefix
	timeout time.Duration
	refused func(reason string) // counts refusals (metrics reasons)
	log     func(msg string, args ...any)

	ready  chan net.Conn
	errc   chan error
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	mu     sync.Mutex
	shakes map[net.Conn]struct{} // connections whose header is being read
	wg     sync.WaitGroup
}

func newProxyListener(l net.Listener, trusted []netip.Prefix, timeout time.Duration, refused func(string), log func(string, ...any)) *proxyListener {
	p := &proxyListener{Listener: l, trusted: trusted, timeout: timeout, refused: refused, log: log,
		ready: make(chan net.Conn), errc: make(chan error), shakes: map[net.Conn]struct{}{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.acceptLoop()
	return p
}

// Accept returns the next connection whose header has been read.
func (p *proxyListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.ready:
		return c, nil
	case err := <-p.errc:
		return nil, err
	case <-p.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting, closes the connections whose header is still
// being read and waits for their goroutines.
func (p *proxyListener) Close() error {
	err := p.Listener.Close()
	p.cancel()
	p.mu.Lock()
	for c := range p.shakes {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *proxyListener) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary errors (EMFILE) go to the server, which backs off
			// before it calls Accept again.
			select {
			case p.errc <- err:
				continue
			case <-p.ctx.Done():
				return
			}
		}
		if !p.isTrusted(c.RemoteAddr()) {
			p.refused(metrics.RefusedProxyUntrusted) // counted first: the peer sees the close
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.ctx.Err() != nil {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.shakes[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handshake(c)
	}
}

func (p *proxyListener) isTrusted(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, pfx := range p.trusted {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

func (p *proxyListener) handshake(c net.Conn) {
	defer p.wg.Done()
	remote, err := readProxyHeader(c, p.timeout)
	p.mu.Lock()
	delete(p.shakes, c)
	p.mu.Unlock()
	if err != nil {
		p.refused(metrics.RefusedProxyHeader)
		c.Close()
		p.log("PROXY protocol header refused; connection closed", "peer", c.RemoteAddr().String(), "err", err)
		return
	}
	select {
	case p.ready <- &clientConn{Conn: c, remote: remote}:
	case <-p.ctx.Done():
		c.Close()
	}
}

// v2Signature opens every PROXY protocol v2 header.
var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// readProxyHeader reads exactly one PROXY protocol header from c within
// timeout and returns the client address it carries (c's own peer for a
// LOCAL or UNKNOWN header: the balancer's health checks). It reads no byte
// past the header, so the connection can go on being read from its socket
// directly (h1's sockio) rather than through a buffer holding the request's
// first bytes; go-proxyproto parses the header.
func readProxyHeader(c net.Conn, timeout time.Duration) (net.Addr, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	// 12 bytes: v2's signature, and less than the shortest v1 header
	// ("PROXY UNKNOWN\r\n", 15 bytes).
	hdr := make([]byte, 12, 232) // 232: v1's 107 or v2 with IPv6 and a few TLVs
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, err
	}
	switch {
	case bytes.Equal(hdr, v2Signature):
		var fixed [4]byte // version/command, family, length
		if _, err := io.ReadFull(c, fixed[:]); err != nil {
			return nil, err
		}
		n := int(binary.BigEndian.Uint16(fixed[2:]))
		hdr = append(hdr, fixed[:]...)
		hdr = append(hdr, make([]byte, n)...)
		if _, err := io.ReadFull(c, hdr[16:]); err != nil {
			return nil, err
		}
	case bytes.HasPrefix(hdr, []byte("PROXY ")):
		// v1 ends at CRLF within 107 bytes. Byte by byte, because the
		// request may follow in the same segment.
		var b [1]byte
		for hdr[len(hdr)-1] != '\n' {
			if len(hdr) == 107 {
				return nil, errors.New("PROXY v1 header longer than 107 bytes")
			}
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return nil, err
			}
			hdr = append(hdr, b[0])
		}
	default:
		return nil, fmt.Errorf("no PROXY protocol header (starts %q)", hdr)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, err
	}
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(hdr), len(hdr)))
	if err != nil {
		return nil, err
	}
	if a, ok := h.SourceAddr.(*net.TCPAddr); ok && h.Command.IsProxy() {
		return a, nil
	}
	return c.RemoteAddr(), nil
}

// clientConn is an accepted client connection whose RemoteAddr may be the
// client's (from a PROXY protocol header), and which may release a
// connection slot (per client, or server.max_connections) when closed.
type clientConn struct {
	net.Conn
	remote  net.Addr
	once    sync.Once
	release func() // nil: nothing to release
}

func (c *clientConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

func (c *clientConn) Close() error {
	err := c.Conn.Close()
	if c.release != nil {
		c.once.Do(c.release)
	}
	return err
}

// SyscallConn passes the wrapped connection's raw access through, which
// the front server reads and writes with (internal/sockio).
func (c *clientConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// CloseWrite shuts down the sending side where the wrapped connection can.
func (c *clientConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// connLimitListener closes, as soon as they are accepted, the connections
// of a client that already has limits.connections_per_client open. The
// client is the connection's peer (after the PROXY protocol); peers in
// trusted_proxies are exempt, since each of their connections may carry
// any number of clients.
type connLimitListener struct {
	net.Listener
	limits  *limits.Limiter
	trusted []netip.Prefix
	refused func(reason string)
}

func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil || slices.ContainsFunc(l.trusted, func(p netip.Prefix) bool { return p.Contains(ap.Addr().Unmap()) }) {
			return c, nil
		}
		ok, release := l.limits.Open(ap.Addr())
		if !ok {
			l.refused(metrics.RefusedConnections) // counted first: the peer sees the close
			c.Close()
			continue
		}
		if release == nil {
			return c, nil
		}
		return &clientConn{Conn: c, release: release}, nil
	}
}
