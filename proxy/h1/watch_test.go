package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// watchHookConn stands between the watch read's clearing of the read
// deadline and that deadline taking effect: a zero deadline waits (a
// while, bounded) until a deadline in the past has been set. A watch that
// clears the deadline outside its lock then clears the past deadline
// stopWatch set to end it.
type watchHookConn struct {
	net.Conn
	clearing, expired         chan struct{}
	clearingOnce, expiredOnce sync.Once
}

func (c *watchHookConn) SetReadDeadline(t time.Time) error {
	switch {
	case t.IsZero():
		c.clearingOnce.Do(func() { close(c.clearing) })
		select {
		case <-c.expired:
		case <-time.After(500 * time.Millisecond):
		}
	case t.Before(time.Now()):
		defer c.expiredOnce.Do(func() { close(c.expired) })
	}
	return c.Conn.SetReadDeadline(t)
}

// hookListener hands out its one hook connection.
type hookListener struct {
	net.Listener
	hook *watchHookConn
}

func (l hookListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.hook.Conn = c
	return l.hook, nil
}

// TestWatchEndsWithHandler: a handler that returns while the watch read
// is starting still gets its response finished. The watch cleared the
// read deadline after leaving its lock, so stopWatch's deadline in the
// past could come first and be undone: the watch read then waited for the
// client, which waited for the response's end, until the client gave up
// (a response stalled "while reading body" under load, its final chunk
// missing).
func TestWatchEndsWithHandler(t *testing.T) {
	hook := &watchHookConn{clearing: make(chan struct{}), expired: make(chan struct{})}
	s := &Server{ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "before the watch, ")
			w.(http.Flusher).Flush() // chunked: the last chunk comes after the handler
			select {
			case <-hook.clearing:
			case <-time.After(5 * time.Second):
			}
			io.WriteString(w, "after it")
		})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(hookListener{l, hook})
	}()
	t.Cleanup(func() {
		s.Close()
		<-done
	})

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second)) // bounds the hang without the fix
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: front\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil || string(body) != "before the watch, after it" {
		t.Fatalf("body %q, %v: the response never ended", body, err)
	}
}
