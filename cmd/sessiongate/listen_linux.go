//go:build linux

package main

import (
	"context"
	"net"
	"os"
	"syscall"
)

// The TCP keep-alive every client connection gets, as net.Listen gives it
// (the net package's defaults): probes after 15 s of silence, every 15 s,
// and the connection dropped after 9 unanswered.
const (
	keepAliveIdleSeconds     = 15
	keepAliveIntervalSeconds = 15
	keepAliveCount           = 9
)

// listen opens a TCP listener on addr whose connections have net.Listen's
// keep-alive settings, set once on the listening socket instead of on each
// accepted one.
//
// Why: net.Listen sets them with four setsockopt calls on every accepted
// connection, which with a new connection per request is a quarter of the
// system calls the request costs. Linux copies the listener's keep-alive
// settings into each socket it accepts (tcp_create_openreq_child), so set
// once they hold for every connection; TestListenKeepAlive compares them
// with net.Listen's.
func listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: setKeepAlive} // -1: not per connection
	return lc.Listen(context.Background(), "tcp", addr)
}

// setKeepAlive is the listener's Control: the keep-alive options on its
// socket.
func setKeepAlive(_, _ string, c syscall.RawConn) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		for _, o := range [...]struct{ level, opt, value int }{
			{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, keepAliveIdleSeconds},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, keepAliveIntervalSeconds},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
		} {
			if err = syscall.SetsockoptInt(int(fd), o.level, o.opt, o.value); err != nil {
				err = os.NewSyscallError("setsockopt", err)
				return
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}
