package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// connCounter counts the connections a test server accepts.
func connCounter(s *httptest.Server) *atomic.Int32 {
	var n atomic.Int32
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			n.Add(1)
		}
	}
	return &n
}

func TestLeanReusesConnections(t *testing.T) {
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("chunked") != "" {
			w.(http.Flusher).Flush() // no Content-Length: chunked
		}
		io.WriteString(w, "hello")
	}))
	conns := connCounter(be)
	be.Start()
	defer be.Close()
	f := newFarm(t, []string{be.URL}, nil)
	for i, path := range []string{"/", "/?chunked=1", "/", "/?chunked=1", "/"} {
		res, body := get(t, f.front.URL+path, nil)
		if res.StatusCode != 200 || body != "hello" {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	req, _ := http.NewRequest(http.MethodHead, f.front.URL, nil)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 200 {
		t.Fatalf("HEAD: %v %v", res, err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("backend saw %d connections for 6 sequential requests, want 1 (keep-alive)", n)
	}
}

// TestLeanRetriesAConnectionClosedWhileIdle: a backend that closes its end
// of an idle keep-alive connection must not cost the next request.
func TestLeanRetriesAConnectionClosedWhileIdle(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var served atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				n := served.Add(1)
				fmt.Fprintf(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d", n)
				// keep-alive promised, but the connection closes when this
				// goroutine returns: the next request on it finds it dead.
			}()
		}
	}()
	f := newFarm(t, []string{"http://" + l.Addr().String()}, nil)
	for i := 1; i <= 3; i++ {
		res, body := get(t, f.front.URL, nil)
		if res.StatusCode != 200 || body != fmt.Sprint(i) {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	if len(f.obs.retries) != 0 {
		t.Errorf("proxy-level retries %v: the stale connection should be retried inside the upstream", f.obs.retries)
	}
}
