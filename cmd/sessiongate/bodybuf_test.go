package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"
)

// orderLog is an ordered log of what a test's client and backend did.
type orderLog struct {
	mu   sync.Mutex
	list []string
}

func (l *orderLog) add(s string) { l.mu.Lock(); l.list = append(l.list, s); l.mu.Unlock() }
func (l *orderLog) index(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Index(l.list, s)
}

type acceptOrder struct {
	net.Listener
	log *orderLog
}

func (a acceptOrder) Accept() (net.Conn, error) {
	c, err := a.Listener.Accept()
	if err == nil {
		a.log.add("backend accept")
	}
	return c, err
}

// TestDefaultConfigBuffersSlowBodies: with no request_buffering in the file
// (on by default), a POST whose body trickles in byte by byte reaches the
// backend only after its last byte: the backend accepts no connection
// before, so a slow client holds no PHP worker.
func TestDefaultConfigBuffersSlowBodies(t *testing.T) {
	const size = 12
	log := &orderLog{}
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %d", n, r.ContentLength)
	}))
	be.Listener = acceptOrder{Listener: be.Listener, log: log}
	be.Start()
	t.Cleanup(be.Close)
	r := start(t, writeConfig(t, plainConfig(be.URL)))

	c, err := net.DialTimeout("tcp", r.addrs.front, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /upload.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
	for i := range size {
		b := "1\r\nx\r\n"
		if i == size-1 {
			log.add("client sends last byte")
			b += "0\r\n\r\n"
		}
		io.WriteString(c, b)
		time.Sleep(10 * time.Millisecond) // a slow client's pace, not an assertion
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if want := fmt.Sprintf("%d %d", size, size); res.StatusCode != 200 || string(body) != want {
		t.Fatalf("status %d, body %q; want 200 %q (the chunked body arrives with a Content-Length)", res.StatusCode, body, want)
	}
	if log.index("backend accept") < log.index("client sends last byte") {
		t.Errorf("the backend accepted a connection before the body was complete: %v", log.list)
	}
}
