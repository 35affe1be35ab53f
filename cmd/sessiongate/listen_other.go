//go:build !linux

package main

import "net"

// listen is net.Listen: only Linux gets the listener-wide keep-alive
// settings of listen_linux.go.
func listen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
