package sessionstore

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// peekClosed reports whether the peer closed or broke c (io.EOF, or the
// socket's error), looking at c's socket without blocking, consuming or
// taking c's read lock (RawConn.Control only holds a reference to the fd):
// a read blocked on c elsewhere is undisturbed. Data waiting (an answer to
// the watcher's probe) or nothing at all (EAGAIN) mean open; so does c
// closed meanwhile (Control fails), which its reader handles.
func peekClosed(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var (
		buf  [1]byte
		got  int
		rerr error
	)
	if err := raw.Control(func(fd uintptr) {
		got, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		return nil
	}
	switch {
	case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EINTR): // EWOULDBLOCK is EAGAIN on Linux
		return nil
	case rerr != nil:
		return rerr
	case got == 0:
		return io.EOF
	}
	return nil
}
