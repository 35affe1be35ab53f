package sessionstore

import (
	"errors"
	"io"
	"net"
	"syscall"
	"unsafe"
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
		// A raw system call, not syscall.Recvfrom: a peek that cannot block
		// needs none of the scheduler's bookkeeping, and that bookkeeping
		// wakes the runtime's monitor thread when the process was idle,
		// which then polls every 20 µs. Peeks come every peekEvery under
		// load: at 3 650 requests a second that thread took 10 µs of CPU
		// per request with syscall.Recvfrom here, 4-5 µs without
		// (bench/profiles.md).
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		got = int(n)
		if e != 0 {
			rerr = e
		}
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
