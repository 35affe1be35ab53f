package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/proxy/upstream"
	"github.com/sessiongate/sessiongate/sessionstore"
)

// lockStore verifies every id (reporting the lock held if locked) and
// records the Locks calls.
type lockStore struct {
	locked                 bool
	mu                     sync.Mutex
	begun, ended, orphaned int
}

func (s *lockStore) Check(context.Context, string) sessionstore.Result {
	return sessionstore.Result{Verdict: sessionstore.Verified, Locked: s.locked}
}
func (s *lockStore) Touch(context.Context, string) error { return nil }
func (s *lockStore) Begin(string)                        { s.mu.Lock(); s.begun++; s.mu.Unlock() }
func (s *lockStore) End(string)                          { s.mu.Lock(); s.ended++; s.mu.Unlock() }
func (s *lockStore) Orphaned(string) int                 { s.mu.Lock(); s.orphaned++; s.mu.Unlock(); return 1 }

func (s *lockStore) counts() (begun, ended, orphaned int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.begun, s.ended, s.orphaned
}

// TestOrphanedOnlyWhenTheBackendDied: the session layer asks for the lock
// to be released only when the backend connection broke under a request
// that found the lock free; not after a normal answer, a timeout, a refused
// connection, a client that left, or for a request that found it held.
func TestOrphanedOnlyWhenTheBackendDied(t *testing.T) {
	reset := func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		c.(*net.TCPConn).SetLinger(0) // as a PHP worker killed mid-request
		c.Close()
	}
	hang := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	for _, tc := range []struct {
		name     string
		backend  http.HandlerFunc // nil: nobody listens
		locked   bool
		timeout  time.Duration
		leave    bool // the client hangs up while the backend works
		orphaned int
	}{
		{name: "backend reset", backend: reset, orphaned: 1},
		{name: "backend reset, lock held before", backend: reset, locked: true},
		{name: "normal answer", backend: func(http.ResponseWriter, *http.Request) {}},
		{name: "backend timeout", backend: hang, timeout: 100 * time.Millisecond},
		{name: "connection refused"},
		{name: "client gone", backend: hang, leave: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := deadURL(t)
			if tc.backend != nil {
				url = backend(t, tc.backend).URL
			}
			st := &lockStore{locked: tc.locked}
			f := newFarm(t, []string{url}, func(o *Options) {
				o.Session = &SessionOptions{Store: st, Locks: st, Cookie: "PHPSESSID", Strict: true}
				if tc.timeout > 0 {
					o.Transport = upstream.NewLean(upstream.TransportOptions{DialTimeout: time.Second, ResponseTimeout: tc.timeout, MaxIdleConns: 8})
				}
			})
			if tc.leave {
				c, err := net.Dial("tcp", f.front.Listener.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nCookie: PHPSESSID=%s\r\n\r\n", liveID)
				waitCount(t, "the request to reach the store", func() bool { b, _, _ := st.counts(); return b == 1 })
				c.Close()
			} else {
				get(t, f.front.URL, map[string]string{"Cookie": "PHPSESSID=" + liveID})
			}
			waitCount(t, "the request to end", func() bool { _, e, _ := st.counts(); return e == 1 })
			if b, e, o := st.counts(); b != 1 || e != 1 || o != tc.orphaned {
				t.Errorf("Begin %d, End %d, Orphaned %d; want 1, 1, %d", b, e, o, tc.orphaned)
			}
		})
	}
}

// waitCount polls cond every 5 ms for at most 5 s.
func waitCount(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
