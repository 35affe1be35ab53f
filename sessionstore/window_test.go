package sessionstore

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
)

// TestRestartedNodeRepairedBeforeWatcherNotices closes the window between a
// node coming back empty and the store noticing: a node that refused its
// last connection is still asked, so the first request after the restart
// repairs it even though nothing has marked it up yet. Run is deliberately
// not started here, so no watcher can notice the node coming back.
func TestRestartedNodeRepairedBeforeWatcherNotices(t *testing.T) {
	mc := memtest.Start(t, 3)
	s, err := New(Options{Servers: mc.Addrs(), Timeout: 500 * time.Millisecond, Strict: true, VerifyTTL: -1, RestartHold: DefaultRestartHold,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	id := newID(t)
	for i := range 3 {
		if err := memcache.New(mc.Addr(i)).Set(&memcache.Item{Key: id, Value: session, Expiration: 1440}); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Check(t.Context(), id).Verdict; got != Verified {
		t.Fatalf("verdict %v, want verified", got)
	}

	mc.Stop(2)
	if got := s.Check(t.Context(), id).Verdict; got != Verified {
		t.Fatalf("with node 2 stopped: verdict %v, want verified", got)
	}
	if s.Nodes()[2].Up {
		t.Fatalf("node 2 not marked down after a failed lookup: %+v", s.Nodes()[2])
	}
	// What the watcher does next: redial, refused while memcached is gone.
	if _, _, _, err := s.dialStats(t.Context(), mc.Addr(2)); err != nil {
		s.failed(s.nodes[2], err)
	}
	if s.Nodes()[2].Up || !s.nodes[2].refused.Load() {
		t.Fatal("node 2 should be down with its last attempt refused")
	}

	mc.Restart(2) // back, empty, and nobody has told the store
	start := time.Now()
	if got := s.Check(t.Context(), id).Verdict; got != Repaired {
		t.Fatalf("first check after the restart: verdict %v, want repaired", got)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("check took %v", d)
	}
	it, err := memcache.New(mc.Addr(2)).Get(id)
	if err != nil || string(it.Value) != string(session) {
		t.Fatalf("node 2 holds %v, %v; want the repaired session", it, err)
	}
}
