package proxy

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// swampedURL is a loopback address whose listener never accepts and whose
// accept queue is full: Linux drops further SYNs, so a connect times out,
// as to a PHP backend whose workers are all busy on a loaded machine.
func swampedURL(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 16 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return "http://" + addr // the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("%s still accepts connections after 16", addr)
	return ""
}

// TestConnectTimeoutRetried: a connect that timed out sent nothing, so the
// request goes to another backend, a POST too, as for a refused connect.
// Seen in TestZeroLossUnderFaults at load 17: a 2 s connect timeout to a
// php -S backend on loopback answered the browser 504.
func TestConnectTimeoutRetried(t *testing.T) {
	good := backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("good " + r.Method))
	})
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			f := newFarm(t, []string{swampedURL(t), good.URL}, nil)
			req, _ := http.NewRequest(method, f.front.URL+"/x", strings.NewReader("a=1"))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK || len(f.obs.retries) != 1 {
				t.Errorf("status %d after %d retries, want 200 after 1", res.StatusCode, len(f.obs.retries))
			}
		})
	}
}
