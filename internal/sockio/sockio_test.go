//go:build linux

package sockio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pair returns both ends of a loopback TCP connection, the first wrapped.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	c, ok := Wrap(nc).(*Conn)
	if !ok {
		t.Fatal("Wrap did not wrap a TCP connection")
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

func TestReadWrite(t *testing.T) {
	c, peer := pair(t)
	if n, err := c.Write([]byte("ping")); n != 4 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "ping" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	peer.Write([]byte("pong"))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "pong" {
		t.Fatalf("Read %q, %v", got, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty Read = %d, %v", n, err)
	}
	peer.Close()
	if n, err := c.Read(got); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed = %d, %v, want EOF", n, err)
	}
}

// TestLargeWrite: a write bigger than the socket buffers waits for room as
// often as it takes and delivers every byte in order.
func TestLargeWrite(t *testing.T) {
	c, peer := pair(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(want))))
		got <- b
	}()
	if n, err := c.Write(want); n != len(want) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want) {
			t.Fatalf("peer got %d bytes, not what was written", len(b))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("peer did not get the data")
	}
}

// TestErrors: deadlines, a closed connection and a reset come back as
// net.Conn's errors would, under the operation's own name.
func TestErrors(t *testing.T) {
	c, peer := pair(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v, want a timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("Read error %#v, want a *net.OpError for read", err)
	}

	// A reset from the peer: the errno from the socket itself.
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var werr error
	for range 100 { // the first writes may land before the reset does
		if _, werr = c.Write([]byte("x")); werr != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !errors.As(werr, &oe) || oe.Op != "write" {
		t.Fatalf("Write to a reset connection: %v, want a *net.OpError for write", werr)
	}

	c.Close()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
	}
}

// TestWriteThenWait: it returns only once the answer has begun to arrive,
// and the next Read finds it.
func TestWriteThenWait(t *testing.T) {
	c, peer := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.WriteThenWait([]byte("GET"))
		done <- err
	}()
	got := make([]byte, 3)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "GET" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	select {
	case err := <-done:
		t.Fatalf("WriteThenWait returned (%v) before the peer answered", err)
	case <-time.After(50 * time.Millisecond):
	}
	peer.Write([]byte("OK"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WriteThenWait did not return after the answer")
	}
	if _, err := io.ReadFull(c, got[:2]); err != nil || string(got[:2]) != "OK" {
		t.Fatalf("Read %q, %v", got[:2], err)
	}

	// A peer that hangs up instead of answering ends the wait too.
	go func() {
		_, err := c.WriteThenWait([]byte("GET"))
		done <- err
	}()
	io.ReadFull(peer, got)
	peer.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WriteThenWait did not return after the peer closed")
	}
	if _, err := c.Read(got); err != io.EOF {
		t.Fatalf("Read after the peer closed: %v, want EOF", err)
	}
}

// TestWriteThenWaitLarge: what the socket cannot take at once is written
// as Write does, without waiting for an answer.
func TestWriteThenWaitLarge(t *testing.T) {
	c, peer := pair(t)
	// More than loopback's socket buffers hold (at most some MiB), and a
	// peer that starts reading late, so the first write is short.
	want := bytes.Repeat([]byte("x"), 32<<20)
	got := make(chan int, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		n, _ := io.Copy(io.Discard, io.LimitReader(peer, int64(len(want))))
		got <- int(n)
	}()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.WriteThenWait(want); n != len(want) || err != nil {
		t.Fatalf("WriteThenWait = %d, %v", n, err)
	}
	if n := <-got; n != len(want) {
		t.Fatalf("peer got %d bytes, want %d", n, len(want))
	}
}

// TestWriteThenWaitDeadline: no answer before the deadline is a timeout,
// after the whole request went out.
func TestWriteThenWaitDeadline(t *testing.T) {
	c, _ := pair(t)
	c.SetDeadline(time.Now().Add(20 * time.Millisecond))
	n, err := c.WriteThenWait([]byte("GET"))
	if n != 3 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WriteThenWait = %d, %v, want 3 bytes and a timeout", n, err)
	}
}

// TestReadOrWait: bytes already there are read as Read reads them; with
// none there, idle is called, p stays untouched, and the call returns
// once the socket is readable, without reading; a hang-up before is EOF
// and a deadline a timeout.
func TestReadOrWait(t *testing.T) {
	c, peer := pair(t)
	idled := 0
	idle := func() { idled++ }
	peer.Write([]byte("GET"))
	p := make([]byte, 8)
	for {
		n, err := c.ReadOrWait(p, idle)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			if string(p[:n]) != "GET" || idled != 0 {
				t.Fatalf("ReadOrWait = %q with idle called %d times, want \"GET\" and no idle", p[:n], idled)
			}
			break
		}
		idled = 0 // the bytes were not there yet
	}

	done := make(chan error, 1)
	copy(p, "xxxxxxxx")
	go func() {
		n, err := c.ReadOrWait(p, idle)
		if err == nil && n != 0 {
			err = fmt.Errorf("read %d bytes", n)
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("ReadOrWait returned (%v) with nothing to read", err)
	case <-time.After(50 * time.Millisecond):
	}
	peer.Write([]byte("POST"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ReadOrWait after the peer wrote: %v, want 0 bytes and no error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadOrWait did not return once the socket was readable")
	}
	if idled != 1 || string(p) != "xxxxxxxx" {
		t.Fatalf("idle called %d times, p %q: want once and p untouched", idled, p)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "POST" {
		t.Fatalf("Read after the wait: %q, %v", got, err)
	}

	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.ReadOrWait(p, idle); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadOrWait past the deadline: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	peer.Close()
	if n, err := c.ReadOrWait(p, idle); n != 0 || err != io.EOF {
		t.Fatalf("ReadOrWait after the peer closed = %d, %v, want EOF", n, err)
	}
}

func TestWrapWithoutDescriptor(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("Wrap changed a connection without a file descriptor")
	}
}
