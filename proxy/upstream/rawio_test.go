//go:build linux

package upstream

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sessiongate/sessiongate/internal/sockio"
)

// TestDisableRawIO: by default backend connections read and write through
// sockio; with DisableRawIO through net.Conn, with no raw socket for the
// idle check, which then still finds a connection the backend closed and
// dials anew.
func TestDisableRawIO(t *testing.T) {
	for _, disable := range []bool{false, true} {
		be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		}))
		conns := connCounter(be)
		be.Start()
		l := &Lean{MaxIdle: 2, DisableRawIO: disable}
		roundTripOK(t, l, be.URL)
		l.mu.Lock()
		var c *upConn
		for _, list := range l.idle {
			c = list[0]
		}
		l.mu.Unlock()
		if c == nil {
			t.Fatal("no pooled connection")
		}
		if _, wrapped := c.nc.(*sockio.Conn); wrapped == disable || (c.raw == nil) != disable {
			t.Errorf("DisableRawIO %v: sockio %v, raw peek %v", disable, wrapped, c.raw != nil)
		}
		be.CloseClientConnections()
		roundTripOK(t, l, be.URL)
		if n := conns.Load(); n != 2 {
			t.Errorf("DisableRawIO %v: %d connections, want 2 (the closed one found stale)", disable, n)
		}
		l.CloseIdleConnections()
		be.Close()
	}
}
