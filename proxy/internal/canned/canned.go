// Package canned is a test backend for the proxy's allocation budgets and
// benchmarks: it answers every request head on each keep-alive connection
// with the same bytes and allocates nothing per request, so that what a
// benchmark counts is the proxy's own.
package canned

import (
	"bytes"
	"net"
	"testing"
)

// Serve starts the backend on a loopback port for the life of t and returns
// its address. Each request head (up to 4 KiB) gets answer as it is.
func Serve(t testing.TB, answer string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ans := []byte(answer)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c, ans)
		}
	}()
	return ln.Addr().String()
}

func serve(c net.Conn, answer []byte) {
	defer c.Close()
	var buf [4096]byte
	for n := 0; ; {
		m, err := c.Read(buf[n:])
		if err != nil {
			return
		}
		n += m
		switch {
		case bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")):
			if _, err := c.Write(answer); err != nil {
				return
			}
			n = 0
		case n == len(buf):
			return
		}
	}
}
