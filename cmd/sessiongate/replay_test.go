package main

// A request already at PHP when a memcached node dies: pecl memcached meets
// the dead node inside session_start and answers the live session with a
// new id (strict mode) or fails it. sessiongate drops that answer and sends
// the request again once the node is back and the session repaired on it.

import (
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

// TestLostAnswerReplayed kills each memcached node in turn while a GET of a
// counting session sleeps at PHP before session_start, and starts it again
// (empty) 400 ms later; the requests go through two sessiongate instances in
// turn, sharing the pool. Every answer must count on from the one before
// under the same id, and the node that is the session's primary must have
// made an instance replay at least one request. Without the replay PHP's
// answer for the primary is logged out ("Failed to read session data") or a
// fresh session with visits 1.
func TestLostAnswerReplayed(t *testing.T) {
	for _, v := range []struct {
		name  string
		extra []string
	}{
		{"deploy-php", deployIni(t, zlIniDir+"/memcached-session.ini")},
		{"defaults", nil},
	} {
		t.Run(v.name, func(t *testing.T) {
			mc := memtest.Start(t, 3)
			p := &pool{handler: phptest.Memcached, mc: mc, tr: &http.Transport{}}
			p.php = phptest.Start(t, phptest.Options{N: 1, Handler: phptest.Memcached, Servers: mc.Addrs(), Extra: v.extra})
			t.Cleanup(p.tr.CloseIdleConnections)
			// One cookie jar for both: cookies do not tell ports apart.
			gates := []*running{p.gate(t, ""), p.gate(t, "")}
			jar, _ := cookiejar.New(nil)
			c := &http.Client{Jar: jar, Transport: p.tr, Timeout: 10 * time.Second}

			// A visit through each: an instance trusts the lack of PHP's
			// session headers only once it has seen them (lostAtPHP).
			var id string
			for i, g := range gates {
				pg, err := zlGet(c, front(g)+"/count.php")
				if err != nil || pg.Visits != i+1 || i > 0 && pg.ID != id {
					t.Fatalf("visit %d: %+v, %v", i+1, pg, err)
				}
				id = pg.ID
			}
			visits := len(gates)
			var pg zlPage
			var err error
			for node := range 3 {
				g := gates[node%2]
				done := make(chan struct{})
				go func() {
					defer close(done)
					pg, err = zlGet(c, front(g)+"/count.php?pre=300")
				}()
				time.Sleep(100 * time.Millisecond) // the request waits at PHP
				mc.Stop(node)
				time.Sleep(400 * time.Millisecond) // PHP's session_start meets the dead node
				mc.Restart(node)
				select {
				case <-done:
				case <-time.After(8 * time.Second):
					t.Fatalf("mc%d: no answer within 8 s", node)
				}
				if err != nil {
					t.Fatalf("mc%d: %v", node, err)
				}
				visits++
				if pg.ID != id || pg.Visits != visits || !pg.Started || pg.Error != "" {
					t.Fatalf("mc%d killed under the request: PHP answered id %s visits %d (started %v, error %q), want id %s visits %d",
						node, pg.ID, pg.Visits, pg.Started, pg.Error, id, visits)
				}
			}
			total := 0.0
			for i, g := range gates {
				n := metricValue(scrape(t, g.addrs.admin), "sessiongate_session_replays_total")
				var status struct{ Sessions struct{ Replays float64 } }
				if code, b := adminGet(t, g.addrs.admin, "/api/status", true); code != http.StatusOK || json.Unmarshal(b, &status) != nil || status.Sessions.Replays != n {
					t.Errorf("instance %d /api/status: %d, sessions.replays %v, want %v as in the metrics", i, code, status.Sessions.Replays, n)
				}
				total += n
			}
			if total < 1 {
				t.Errorf("sessiongate_session_replays_total = %v on both instances, want at least 1: no kill met PHP inside session_start", total)
			}
		})
	}
}
