//go:build linux

package h1

import (
	"io"
	"net/http"
	"testing"

	"github.com/sessiongate/sessiongate/internal/sockio"
)

// TestDisableRawIO: client connections read and write through sockio
// unless DisableRawIO, and are served either way.
func TestDisableRawIO(t *testing.T) {
	for _, disable := range []bool{false, true} {
		s := &Server{DisableRawIO: disable, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		})}
		addr, _, _ := startServer(t, s)
		tr := &http.Transport{}
		res, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != "ok" {
			t.Fatalf("DisableRawIO %v: body %q", disable, b)
		}
		s.mu.Lock()
		for c := range s.conns {
			if _, wrapped := c.rw.(*sockio.Conn); wrapped == disable {
				t.Errorf("DisableRawIO %v: connection through sockio %v", disable, wrapped)
			}
		}
		n := len(s.conns)
		s.mu.Unlock()
		if n != 1 {
			t.Errorf("DisableRawIO %v: %d connections, want the keep-alive one", disable, n)
		}
		tr.CloseIdleConnections()
	}
}
