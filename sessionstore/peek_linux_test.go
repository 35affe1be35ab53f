package sessionstore

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/internal/sockio"
)

// delayWatchers makes every watcher wait, once its idle connection ended,
// until the test ends (or 10 s): as a watcher not scheduled in time on a
// loaded machine, whose connection is still published.
func (f *fixture) delayWatchers() {
	release := make(chan struct{})
	hook := func() {
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
	}
	f.s.idleEnded.Store(&hook)
	f.t.Cleanup(func() { close(release) }) // before the store's Run ends (cleanups run last first)
}

// TestPeekSeesRestartBeforeWatcher: a node killed and started again empty
// while its watcher has not yet handled the EOF on its connection (seen at
// load average 15: 330–660 ms late). The session's next Check must not be
// answered from the verification cache — PHP would read the empty node —
// but looked up, and the node repaired, as after a restart the watcher saw.
func TestPeekSeesRestartBeforeWatcher(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.VerifyTTL = time.Hour; o.RestartHold = 10 * time.Second })
	id := newID(t)
	for i := range 3 {
		f.set(i, id, sessionV1, 0, 1440)
	}
	f.check(id, Verified)
	if r := f.check(id, Verified); !r.Cached {
		t.Fatalf("second Check = %+v, want cached", r)
	}

	f.delayWatchers()
	f.restart(2)
	// The Check below is the one to peek: in a real restart more than
	// peekEvery passes since the last peek anyway.
	f.s.peekedAt.Store(0)
	if st := f.s.Nodes()[2]; st.State != NodeUp {
		t.Fatalf("node 2 %s before the Check: the watcher was not delayed", st.State)
	}
	r := f.s.Check(t.Context(), id)
	it, err := f.raw[2].Get(id) // at once, before anything else can write it
	if r.Cached || r.Verdict != Repaired || err != nil || !bytes.Equal(it.Value, sessionV1) {
		t.Fatalf("Check after the restart = %+v, node 2 copy %v (%v): want looked up and repaired", r, it, err)
	}
	if st := f.s.Nodes()[2]; st.State != NodeRestarting || st.Losses != 1 {
		t.Errorf("node 2 after the Check: %+v, want restarting after one loss", st)
	}
}

// TestPeekLeavesOpenWatchersAlone: peeking at watcher connections that are
// open — idle, or with an answer to a probe waiting — never marks a node down.
func TestPeekLeavesOpenWatchersAlone(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.VerifyTTL = time.Hour })
	id := newID(t)
	for i := range 3 {
		f.set(i, id, sessionV1, 0, 1440)
	}
	f.check(id, Verified)
	peeked := 0
	// 60 rounds 5 ms apart span three of the watchers' probes (stallProbe).
	for range 60 {
		for i, n := range f.s.nodes {
			n.mu.Lock()
			if n.watchConn != nil {
				peeked++
				if err := peekClosed(n.watchConn); err != nil {
					t.Errorf("node %d: peek = %v on an open connection", i, err)
				}
			}
			n.mu.Unlock()
		}
		if f.s.peekNodes() {
			t.Fatal("peekNodes found a node lost")
		}
		if r := f.check(id, Verified); !r.Cached {
			t.Fatalf("Check = %+v, want cached", r)
		}
		time.Sleep(peekEvery)
	}
	if peeked == 0 {
		t.Fatal("no watcher connection to peek at")
	}
	for i, st := range f.s.Nodes() {
		if st.State != NodeUp || st.Losses != 0 {
			t.Errorf("node %d: %+v, want up, never lost", i, st)
		}
	}
}

// TestFaultSinceSeesKillBeforeWatcher: PHP met a node killed a moment ago
// whose watcher has not run yet; FaultSince must tell (the proxy then sends
// the request PHP lost its session in again), and tell nothing while no
// node changed.
func TestFaultSinceSeesKillBeforeWatcher(t *testing.T) {
	f := setup(t, 3, func(o *Options) {})
	e := f.s.Epoch()
	if f.s.FaultSince(e) {
		t.Fatal("FaultSince = true with every node up and unchanged")
	}
	f.delayWatchers()
	f.restart(1)
	if st := f.s.Nodes()[1]; st.State != NodeUp {
		t.Fatalf("node 1 %s before FaultSince: the watcher was not delayed", st.State)
	}
	if !f.s.FaultSince(e) {
		t.Fatal("FaultSince = false after node 1 was killed")
	}
	if st := f.s.Nodes()[1]; st.State != NodeRestarting {
		t.Errorf("node 1 after FaultSince: %s, want restarting", st.State)
	}
}

// TestPeekSeesKillThroughPooledConnection: a node killed while its watcher
// connection cannot show it (on a loaded machine the watcher's probe answer
// waits unread in front of the EOF; here the watcher is between
// connections) is still seen, through an idle pooled connection.
func TestPeekSeesKillThroughPooledConnection(t *testing.T) {
	f := setup(t, 3, func(o *Options) {})
	id := newID(t)
	for i := range 3 {
		f.set(i, id, sessionV1, 0, 1440)
	}
	f.check(id, Verified)
	e := f.s.Epoch()
	// Several idle pooled connections, as under load: the kill epoch
	// reader borrows one now and then.
	n := f.s.nodes[1]
	for len(n.meta) < 8 {
		c, err := net.Dial("tcp", n.dialAddr)
		if err != nil {
			t.Fatal(err)
		}
		n.meta <- metaConn{c, bufio.NewReader(c)}
	}
	f.delayWatchers()
	n.mu.Lock()
	n.watchConn = nil
	n.mu.Unlock()
	// SIGKILL without waiting for the exit (memtest.Stop reaps it, which can
	// take longer than the kill epoch reader's poll: each poll takes a pooled
	// connection and finds it closed).
	if err := syscall.Kill(f.mc.Pid(1), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// PHP answers once it met the dead node: a connect refused.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		c, err := net.Dial("tcp", n.dialAddr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("node 1 still accepts 2 s after SIGKILL")
		}
	}
	if !f.s.FaultSince(e) {
		t.Fatal("FaultSince = false after node 1 was killed")
	}
	if st := f.s.Nodes()[1]; st.State != NodeRestarting || !strings.Contains(st.LastError, "idle pooled connection") {
		t.Errorf("node 1 after FaultSince: %s (%s), want restarting, lost through its pooled connection", st.State, st.LastError)
	}
}

// TestRawIOSwitch: memcached connections skip the scheduler's system-call
// bookkeeping (sockio) unless Options.DisableRawIO (server.sockio: false)
// keeps net.Conn's own, and the store works either way: a lookup, a cached
// Check, and the watchers' probes.
func TestRawIOSwitch(t *testing.T) {
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("DisableRawIO=%v", disable), func(t *testing.T) {
			f := setup(t, 3, func(o *Options) { o.VerifyTTL = time.Hour; o.DisableRawIO = disable })
			id := newID(t)
			for i := range 3 {
				f.set(i, id, sessionV1, 0, 1440)
			}
			cachedOn(t, f.s, id)
			n := f.s.nodes[0]
			mc, err := f.s.metaConn(t.Context(), n, time.Now().Add(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer putIdle(n, mc)
			if _, raw := mc.c.(*sockio.Conn); raw == disable {
				t.Errorf("pooled connection %T with DisableRawIO %v", mc.c, disable)
			}
			n.mu.Lock()
			wc := n.watchConn
			n.mu.Unlock()
			if _, raw := wc.(*sockio.Conn); wc != nil && raw == disable {
				t.Errorf("watcher connection %T with DisableRawIO %v", wc, disable)
			}
		})
	}
}
