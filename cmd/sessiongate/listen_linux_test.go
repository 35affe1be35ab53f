//go:build linux

package main

import (
	"net"
	"syscall"
	"testing"
)

// keepAlive is a socket's TCP keep-alive settings.
type keepAlive struct{ on, idle, interval, count int }

// acceptedKeepAlive returns the keep-alive settings of a connection that a
// listener made by listenFn accepted.
func acceptedKeepAlive(t *testing.T, listenFn func(addr string) (net.Listener, error)) keepAlive {
	t.Helper()
	ln, err := listenFn("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	raw, err := sc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ka keepAlive
	var gerr error
	raw.Control(func(fd uintptr) {
		get := func(level, opt int) int {
			v, err := syscall.GetsockoptInt(int(fd), level, opt)
			if err != nil && gerr == nil {
				gerr = err
			}
			return v
		}
		ka = keepAlive{get(syscall.SOL_SOCKET, syscall.SO_KEEPALIVE), get(syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE),
			get(syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL), get(syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT)}
	})
	if gerr != nil {
		t.Fatal(gerr)
	}
	return ka
}

// TestListenKeepAlive: a connection accepted by listen has the keep-alive
// settings one accepted by net.Listen has, though none were set on it.
func TestListenKeepAlive(t *testing.T) {
	want := acceptedKeepAlive(t, func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) })
	if want.on == 0 {
		t.Fatalf("net.Listen's connection has no keep-alive (%+v): the comparison means nothing", want)
	}
	if got := acceptedKeepAlive(t, listen); got != want {
		t.Fatalf("accepted connection's keep-alive %+v, net.Listen's %+v", got, want)
	}
}
