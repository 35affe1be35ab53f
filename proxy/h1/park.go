//go:build linux

package h1

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/sessiongate/sessiongate/internal/sockio"
)

// parkAfter is how long a keep-alive connection waits for its next request
// on its own goroutine before it is parked: handed to the server's parker
// and its goroutine ended.
//
// Why: a goroutine blocked in a read keeps a stack of at least 4 KiB (the
// runtime shrinks a stack only while under a quarter of it is in use,
// counting 800 bytes of reserve, and the poller's frames alone are more
// than a 2 KiB stack allows), so a goroutine per idle connection costs more
// than the issue 19 goal of 4 kB RSS per idle connection; HAProxy and nginx
// hold an idle connection in about 1 kB. Parking costs a goroutine start
// and two epoll_ctl calls when the connection wakes, which is why a busy
// connection is never parked: a client that sends its next request within
// parkAfter (wrk, a page's assets) keeps its goroutine; one that stays
// quiet longer (a browser between pages, for seconds to minutes) is
// unlikely to notice a few microseconds.
const parkAfter = 200 * time.Millisecond

// parker holds parked connections: an epoll instance of its own, waited on
// through the runtime's poller (so its goroutine blocks no thread), that
// reports which parked sockets became readable (a request, or the client
// hanging up), and a list of the parked connections in the order their
// idle timeouts end, which is the order they were parked in (every one
// parked parkAfter into the same idle timeout).
type parker struct {
	epfd int // ep's descriptor (ep.Fd would make ep blocking)
	ep   *os.File
	raw  syscall.RawConn
	step func(fd uintptr) bool
	done chan struct{}

	mu          sync.Mutex
	stopped     bool
	fds         map[int32]*conn
	first, last *conn // by idle deadline; conn.parkPrev, parkNext link them

	// The wait's results, owned by the parker's goroutine.
	events [64]syscall.EpollEvent
	n      int
	err    error // from epoll_wait
}

// canPark reports whether c can be parked: only a socket sockio reads.
func (c *conn) canPark() bool {
	_, ok := c.rw.(*sockio.Conn)
	return ok
}

// park hands c, idle until deadline (zero: no idle timeout), to the
// server's parker and reports whether it took it; then c's goroutine must
// end without touching c again.
func (s *Server) park(c *conn, deadline time.Time) bool {
	s.mu.Lock()
	if s.parked == nil && !s.closing.Load() {
		p, err := newParker()
		if err != nil {
			// Once: a stopped parker takes no connection.
			s.logger().Warn("idle connections keep their goroutines: no epoll", "err", err)
			p = &parker{stopped: true, done: make(chan struct{})}
			close(p.done)
		} else {
			go p.run(s.logger().Error)
		}
		s.parked = p
	}
	p := s.parked
	s.mu.Unlock()
	if p == nil {
		return false
	}
	return p.park(c, deadline)
}

// unpark stops the parker, if there is one, and closes the connections it
// holds.
func (s *Server) unpark() {
	s.mu.Lock()
	p := s.parked
	s.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

func newParker() (*parker, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile hands it to the runtime's poller.
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	p := &parker{epfd: fd, ep: os.NewFile(uintptr(fd), "epoll"), fds: map[int32]*conn{}, done: make(chan struct{})}
	if p.raw, err = p.ep.SyscallConn(); err != nil {
		p.ep.Close()
		return nil, err
	}
	p.step = p.wait
	return p, nil
}

func (p *parker) park(c *conn, deadline time.Time) bool {
	var fd int32 = -1
	if sc, err := c.rw.(syscall.Conn).SyscallConn(); err == nil {
		sc.Control(func(f uintptr) { fd = int32(f) })
	}
	if fd < 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	// Level-triggered: bytes that came since the last read are reported at
	// once. One-shot: one report per park.
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: fd}
	if syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev) != nil {
		return false
	}
	c.parkFD, c.parkUntil = fd, deadline
	p.fds[fd] = c
	c.parkPrev, c.parkNext = p.last, nil
	if p.last != nil {
		p.last.parkNext = c
	} else {
		p.first = c
		p.ep.SetReadDeadline(deadline) // the parker may be waiting without one
	}
	p.last = c
	return true
}

// unlink removes c from p; p.mu is held.
func (p *parker) unlink(c *conn) {
	if !p.stopped { // else the epoll instance is closed, or about to be
		syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(c.parkFD), nil)
	}
	delete(p.fds, c.parkFD)
	if c.parkPrev != nil {
		c.parkPrev.parkNext = c.parkNext
	} else {
		p.first = c.parkNext
	}
	if c.parkNext != nil {
		c.parkNext.parkPrev = c.parkPrev
	} else {
		p.last = c.parkPrev
	}
	c.parkPrev, c.parkNext = nil, nil
}

// run is the parker's goroutine: it closes the connections whose idle
// timeout ended and gives each one that became readable a goroutine again,
// until stop (or a failing epoll_wait, which it logs). Then it closes the
// connections it still holds, which no one would wake.
func (p *parker) run(log func(msg string, args ...any)) {
	defer func() {
		p.mu.Lock()
		p.stopped = true
		var held []*conn
		for c := p.first; c != nil; c = p.first {
			p.unlink(c)
			held = append(held, c)
		}
		p.mu.Unlock()
		p.ep.Close()
		for _, c := range held {
			c.close()
		}
		close(p.done)
	}()
	var expired, woken []*conn
	for {
		p.mu.Lock()
		now := time.Now()
		for c := p.first; c != nil && !c.parkUntil.IsZero() && !now.Before(c.parkUntil); c = p.first {
			p.unlink(c)
			expired = append(expired, c)
		}
		var next time.Time
		if p.first != nil {
			next = p.first.parkUntil
		}
		p.ep.SetReadDeadline(next)
		p.mu.Unlock()
		for i, c := range expired {
			c.close()
			expired[i] = nil
		}
		expired = expired[:0]

		err := p.raw.Read(p.step)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return // stop closed the epoll instance
		}
		if p.err != nil {
			log("parked connections closed: epoll_wait failed", "err", p.err)
			return
		}
		p.mu.Lock()
		for _, ev := range p.events[:p.n] {
			if c := p.fds[ev.Fd]; c != nil {
				p.unlink(c)
				woken = append(woken, c)
			}
		}
		p.mu.Unlock()
		for i, c := range woken {
			go c.run()
			woken[i] = nil
		}
		woken = woken[:0]
	}
}

// wait is run's RawConn callback: it takes what the epoll instance has
// without blocking, and asks the runtime's poller to wait when there is
// nothing.
func (p *parker) wait(fd uintptr) bool {
	for {
		n, err := syscall.EpollWait(int(fd), p.events[:], 0)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil && err != syscall.EAGAIN:
			p.n, p.err = 0, os.NewSyscallError("epoll_wait", err)
			return true
		case n <= 0:
			p.n = 0
			return false
		}
		p.n = n
		return true
	}
}

// stop ends the parker, which closes the connections it holds.
func (p *parker) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.ep.Close() // ends run's wait; a second Close does nothing
	<-p.done
}
