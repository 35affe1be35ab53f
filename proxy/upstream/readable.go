//go:build linux

package upstream

import (
	"syscall"
	"unsafe"
)

// canPeek: readable works here, so stale peeks at an idle connection's
// socket.
const canPeek = true

// readable reports whether a read on the non-blocking socket fd would not
// block: bytes wait, the peer closed its end, or an error is pending. The
// bytes stay where they are (MSG_PEEK); b is room for one. A raw system
// call, as in sockio, for the same reason: it cannot block.
func readable(fd uintptr, b []byte) bool {
	for {
		_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		if e != syscall.EINTR {
			return e != syscall.EAGAIN
		}
	}
}
