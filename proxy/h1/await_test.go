//go:build linux

package h1

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRequestSentDuringResponse: a request that arrives while the one
// before it is still in the handler (a pipelining client that sends its
// next request as soon as the first has gone out, not in the same write)
// is answered without waiting for more bytes from the client. The wait
// for a keep-alive connection's next request must look at the socket
// first: the bytes came after the last read found it empty, and the
// runtime's poller forgets the readiness it recorded for them when the
// next wait begins (RawConn.Read resets it), so a wait that trusted the
// poller alone would sleep until the idle timeout.
func TestRequestSentDuringResponse(t *testing.T) {
	for _, tc := range []struct {
		name      string
		parkAfter time.Duration
	}{{"goroutine keeps waiting", -1}, {"parked", 20 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			inHandler, release := make(chan string, 2), make(chan struct{})
			s := &Server{ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute, parkAfter: tc.parkAfter,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					inHandler <- r.URL.Path
					if r.URL.Path == "/first" {
						<-release
						// Long enough for the poller to see the second
						// request's bytes arrive while no one waits.
						time.Sleep(20 * time.Millisecond)
					}
					io.WriteString(w, r.URL.Path)
				})}
			addr, _, _ := startServer(t, s)
			c := dialClient(t, addr)
			c.SetDeadline(time.Now().Add(10 * time.Second)) // far under the idle timeout
			send := func(path string) {
				if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: front\r\n\r\n", path); err != nil {
					t.Fatal(err)
				}
			}
			send("/first")
			if got := <-inHandler; got != "/first" {
				t.Fatalf("handler got %s", got)
			}
			send("/second")
			close(release)
			for _, want := range []string{"/first", "/second"} {
				res, err := http.ReadResponse(c.br, nil)
				if err != nil {
					t.Fatalf("reading the answer to %s: %v", want, err)
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if !strings.HasPrefix(string(body), want) {
					t.Fatalf("answer %q, want one for %s", body, want)
				}
			}
		})
	}
}
