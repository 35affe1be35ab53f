//go:build !linux

package sockio

import "net"

// Conn is only made on Linux: elsewhere Wrap leaves connections as they
// are. The type exists so that callers' type switches compile everywhere.
type Conn struct{ net.Conn }

// Wrap returns nc: off Linux, connections keep net.Conn's own Read and
// Write.
func Wrap(nc net.Conn) net.Conn { return nc }

// WriteThenWait writes p; without the poller trick it does not wait.
func (c *Conn) WriteThenWait(p []byte) (int, error) { return c.Write(p) }

// ReadOrWait reads as Read does: off Linux there is no wait without a read.
func (c *Conn) ReadOrWait(p []byte, idle func()) (int, error) { return c.Read(p) }
