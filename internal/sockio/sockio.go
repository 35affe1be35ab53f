//go:build linux

package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a net.Conn whose Read and Write use the socket directly.
// Everything else is the wrapped connection's.
type Conn struct {
	net.Conn
	raw syscall.RawConn

	rmu    sync.Mutex // one Read at a time owns the fields below
	rbuf   []byte
	rn     int
	rerr   error
	rstep  func(fd uintptr) bool
	ridle  func() // ReadOrWait's: called before it waits
	istep  func(fd uintptr) bool
	waited bool // ReadOrWait's first call is done

	wmu   sync.Mutex // one Write at a time owns the fields below
	wbuf  []byte
	wn    int
	werr  error
	wstep func(fd uintptr) bool
	wrote bool // WriteThenWait's first call is done
	xstep func(fd uintptr) bool
}

// Wrap returns nc reading and writing its socket directly, or nc itself
// when it has no file descriptor to use.
func Wrap(nc net.Conn) net.Conn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nc
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nc
	}
	c := &Conn{Conn: nc, raw: raw}
	// Method values made once, so that no closure is allocated per call.
	c.rstep, c.wstep, c.xstep, c.istep = c.readStep, c.writeStep, c.writeThenWaitStep, c.readOrWaitStep
	return c
}

// Read reads from the socket as net.Conn's Read does.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr = p, 0, nil
	err := c.raw.Read(c.rstep)
	n := c.rn
	c.rbuf = nil
	if err := c.wrap("read", err, c.rerr); err != nil {
		return n, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// readStep is Read's RawConn callback: false asks the poller to wait until
// the socket is readable.
func (c *Conn) readStep(fd uintptr) bool {
	for {
		n, err := read(fd, c.rbuf)
		switch err {
		case nil:
			c.rn = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.rerr = err
		return true
	}
}

// ReadOrWait reads into p what the socket holds, as Read does, but when it
// holds nothing it calls idle, waits until the socket is readable and
// returns 0 and no error without reading: p is not touched after idle is
// called, so the caller may have given p's memory away there.
//
// Why: a server waiting for the next request on a keep-alive connection
// need not hold a read buffer while it waits, yet a read that finds bytes
// already there should cost no more than Read. The read and the wait are
// one RawConn.Read, so nothing that arrives between them is missed (a
// separate readiness wait after a read that found nothing would reset the
// poller's edge and could sleep through it). Nor may the read be skipped
// when the last Read left the socket empty: RawConn.Read clears the
// poller's record of readiness before it calls back (internal/poll's
// prepareRead), so bytes that came since that Read raise no new edge and
// would be slept through (proxy/h1's TestRequestSentDuringResponse).
func (c *Conn) ReadOrWait(p []byte, idle func()) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr, c.ridle, c.waited = p, 0, nil, idle, false
	err := c.raw.Read(c.istep)
	n, waited := c.rn, c.waited
	c.rbuf, c.ridle = nil, nil
	if err := c.wrap("read", err, c.rerr); err != nil {
		return n, err
	}
	if n == 0 && !waited {
		return 0, io.EOF
	}
	return n, nil
}

// readOrWaitStep is ReadOrWait's RawConn callback: the first call reads,
// a later one means the socket became readable.
func (c *Conn) readOrWaitStep(fd uintptr) bool {
	if c.waited {
		return true
	}
	if c.readStep(fd) {
		return true
	}
	c.waited = true
	c.rbuf = nil // the caller may give p away now: keep it not alive
	c.ridle()
	return false
}

// Write writes all of p to the socket as net.Conn's Write does, waiting
// for room as often as it takes.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werr = p, 0, nil
	err := c.raw.Write(c.wstep)
	n := c.wn
	c.wbuf = nil
	return n, c.wrap("write", err, c.werr)
}

// writeStep is Write's RawConn callback.
func (c *Conn) writeStep(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		n, err := write(fd, c.wbuf[c.wn:])
		switch err {
		case nil:
			c.wn += n
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.werr = err
		return true
	}
	return true
}

// WriteThenWait writes all of p and returns once the socket is readable,
// so that the next Read finds the answer to what was written.
//
// Why: reading right after writing costs a read that finds nothing (the
// peer has not answered yet) before the goroutine parks. RawConn.Read arms
// the poller first and then calls us: we write inside it and ask to wait.
// Nothing is missed by arming early, because the peer sends nothing before
// it has what we wrote; a peer that closed the connection answers the
// write with a reset, which wakes us too. A write the socket cannot take
// at once finishes as Write does, without the wait.
func (c *Conn) WriteThenWait(p []byte) (int, error) {
	c.rmu.Lock() // the wait is a read
	defer c.rmu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werr, c.wrote = p, 0, nil, false
	err := c.raw.Read(c.xstep)
	if err == nil && c.werr == nil && c.wn < len(p) {
		err = c.raw.Write(c.wstep)
	}
	n := c.wn
	c.wbuf = nil
	op := "read" // the wait
	if n < len(p) || c.werr != nil {
		op = "write"
	}
	return n, c.wrap(op, err, c.werr)
}

// writeThenWaitStep is WriteThenWait's RawConn.Read callback: the first
// call writes, the next one finds the socket readable.
func (c *Conn) writeThenWaitStep(fd uintptr) bool {
	if c.wrote {
		return true
	}
	c.wrote = true
	c.writeStep(fd)
	return c.werr != nil || c.wn < len(c.wbuf) // all written: wait
}

// CloseWrite shuts down the sending side, where the wrapped connection can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// SyscallConn gives the wrapped connection's raw access.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.raw, nil }

// wrap returns the error of a call named op, as net.Conn reports it:
// RawConn's own (deadline, closed), renamed from "raw-read"/"raw-write"
// after op, or else the socket's errno; nil if there was neither.
func (c *Conn) wrap(op string, rawErr, errno error) error {
	if rawErr != nil {
		if oe, ok := rawErr.(*net.OpError); ok {
			oe.Op = op
		}
		return rawErr
	}
	if errno != nil {
		return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(),
			Err: os.NewSyscallError(op, errno)}
	}
	return nil
}
