package main

// End-to-end tests of the pool's sessions (issue 15): counts, list and
// search, logging a user or everyone out, and resync, with real memcached,
// real PHP (both handlers) and the real sessiongate.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore"
	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

// poolGateYAML is gateYAML with the user key set, periodic scans off (the
// test scans when it wants) and memcached extras.
func poolGateYAML(p *pool, memcached string) string {
	y := gateYAML(p, "  user_key: auth.user.id\n")
	return strings.Replace(y, "memcached:\n  timeout: 100ms\n", "memcached:\n  timeout: 100ms\n  scan_interval: 0s\n"+memcached, 1)
}

// adminDo sends method url to the admin listener with token ("" for none)
// and returns the status and body.
func adminDo(t *testing.T, method, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, body
}

// adminCall is adminDo that decodes a JSON answer into v (if not nil).
func adminCall(t *testing.T, method, url, token string, v any) int {
	t.Helper()
	code, body := adminDo(t, method, url, token)
	if v != nil && code == http.StatusOK {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, body)
		}
	}
	if code != http.StatusOK && v != nil {
		t.Logf("%s %s: %d %s", method, url, code, body)
	}
	return code
}

type poolDoc struct {
	Sessions   int64            `json:"sessions"`
	WithData   int64            `json:"with_data"`
	Active     map[string]int64 `json:"active"`
	Incomplete int64            `json:"incomplete"`
	PerNode    map[string]struct {
		Sessions int64 `json:"sessions"`
		Locks    int64 `json:"locks"`
		Other    int64 `json:"other"`
	} `json:"per_node"`
	ScannedAt time.Time `json:"scanned_at"`
	ScanSecs  float64   `json:"scan_seconds"`
	Resync    *struct {
		Running bool   `json:"running"`
		Node    string `json:"node"`
		Done    int64  `json:"done"`
		Total   int64  `json:"total"`
		Copied  int64  `json:"copied"`
	} `json:"resync"`
}

type listDoc struct {
	Sessions []struct {
		ID     string   `json:"id"`
		Bytes  int      `json:"bytes"`
		TTL    int64    `json:"ttl"`
		Nodes  []string `json:"nodes"`
		Locked bool     `json:"locked"`
	} `json:"sessions"`
	Next string `json:"next"`
}

// listAll walks every page of url (which has a query already).
func listAll(t *testing.T, url string) (ids []string, pages int) {
	t.Helper()
	cursor := ""
	for range 100 {
		var doc listDoc
		if code := adminCall(t, "GET", url+"&cursor="+cursor, adminToken, &doc); code != http.StatusOK {
			t.Fatalf("GET %s: %d", url, code)
		}
		pages++
		for _, s := range doc.Sessions {
			ids = append(ids, s.ID)
		}
		if cursor = doc.Next; cursor == "" {
			return ids, pages
		}
	}
	t.Fatalf("%s: more than 100 pages", url)
	return nil, 0
}

// poolUsers makes, through sessiongate and PHP: 3 sessions of user 42, 2 of
// user 7, 2 that only count visits and 2 empty ones; and on every node a
// held lock key of a session being created and another application's keys.
func poolUsers(t *testing.T, p *pool, base string) (u42, u7, visitors, empties []*user) {
	t.Helper()
	mk := func(n int, path string) []*user {
		var us []*user
		for range n {
			u := p.newUser(t)
			var pg page
			if _, err := u.get(base+path, &pg); err != nil {
				t.Fatal(err)
			}
			u.id = pg.ID
			us = append(us, u)
		}
		return us
	}
	u42, u7 = mk(3, "/login.php?user=42"), mk(2, "/login.php?user=7")
	visitors, empties = mk(2, "/visit.php"), mk(2, "/empty.php")
	held := "heldlock0123456789abcdefgh"
	for _, a := range p.mc.Addrs() {
		c, r := mcConn(t, a)
		if p.handler == phptest.Memcached {
			fmt.Fprintf(c, "set memc.sess.key.lock.%s 0 60 1\r\n1\r\n", held)
		} else {
			fmt.Fprintf(c, "set %s.lock 768 15 1\r\n1\r\n", held)
		}
		fmt.Fprintf(c, "set user:42:profile 0 60 1\r\nx\r\nset cache.page.home 0 60 1\r\nx\r\nset short 0 60 1\r\nx\r\n")
		for range 4 {
			if line, err := r.ReadString('\n'); err != nil || line != "STORED\r\n" {
				t.Fatalf("set on %s: %q %v", a, line, err)
			}
		}
		c.Close()
	}
	return u42, u7, visitors, empties
}

func ids(us ...[]*user) []string {
	var out []string
	for _, l := range us {
		for _, u := range l {
			out = append(out, u.id)
		}
	}
	slices.Sort(out)
	return out
}

func TestPoolCountListAndLogout(t *testing.T) {
	for _, handler := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(handler, func(t *testing.T) { testPool(t, handler) })
	}
}

func testPool(t *testing.T, handler string) {
	p := newPool(t, handler)
	logs := &logSink{}
	yaml := poolGateYAML(p, "")
	g := startLogged(t, writeConfig(t, yaml), logs)
	g2 := start(t, writeConfig(t, yaml)) // a second instance on the same pool
	t.Cleanup(p.tr.CloseIdleConnections)
	api := "http://" + g.addrs.admin
	u42, u7, visitors, empties := poolUsers(t, p, front(g))
	all := ids(u42, u7, visitors, empties)

	// Without the token: 401 everywhere.
	for _, c := range []struct{ method, path string }{
		{"POST", "/api/pool/scan"}, {"GET", "/api/sessions?limit=5"}, {"GET", "/api/users/42/sessions"},
		{"DELETE", "/api/users/42/sessions"}, {"DELETE", "/api/sessions?all=yes"},
	} {
		if code := adminCall(t, c.method, api+c.path, "", nil); code != http.StatusUnauthorized {
			t.Errorf("%s %s without token: %d, want 401", c.method, c.path, code)
		}
		if code := adminCall(t, c.method, api+c.path, "wrong", nil); code != http.StatusUnauthorized {
			t.Errorf("%s %s with a wrong token: %d, want 401", c.method, c.path, code)
		}
	}

	// Counts: exact, lock keys and foreign keys left out.
	var pd poolDoc
	if code := adminCall(t, "POST", api+"/api/pool/scan", adminToken, &pd); code != http.StatusOK {
		t.Fatalf("scan: %d", code)
	}
	if pd.Sessions != 9 || pd.WithData != 7 || pd.Incomplete != 0 || pd.Active["1m"] != 9 || pd.Active["15m"] != 9 {
		t.Errorf("scan: %+v, want 9 sessions, 7 with data, none incomplete, 9 active", pd)
	}
	for addr, n := range pd.PerNode {
		if n.Sessions != 9 || n.Other < 3 || n.Locks < 1 {
			t.Errorf("node %s: %+v, want 9 sessions, the 3 foreign keys as other, the held lock", addr, n)
		}
	}
	var st struct {
		Pool *poolDoc `json:"pool"`
	}
	if code := adminCall(t, "GET", api+"/api/status", "", &st); code != http.StatusOK || st.Pool == nil ||
		st.Pool.Sessions != 9 || st.Pool.ScannedAt.IsZero() || len(st.Pool.PerNode) != 3 {
		t.Errorf("status pool: %d %+v", code, st.Pool)
	}

	// List: paged, every session once, in id order; filters.
	got, pages := listAll(t, api+"/api/sessions?limit=4")
	if !slices.Equal(got, all) || pages != 3 {
		t.Errorf("list in pages of 4: %d pages %v, want 3 pages %v", pages, got, all)
	}
	var one listDoc
	adminCall(t, "GET", api+"/api/sessions?limit=1000", adminToken, &one)
	for _, s := range one.Sessions {
		if len(s.Nodes) != 3 || s.TTL < 1000 || s.Locked {
			t.Errorf("listed %+v: want on 3 nodes, TTL about 1440, not locked", s)
		}
	}
	if got, _ := listAll(t, api+"/api/sessions?min_bytes=1"); !slices.Equal(got, ids(u42, u7, visitors)) {
		t.Errorf("min_bytes=1: %v, want the 7 with data", got)
	}
	if got, _ := listAll(t, api+"/api/sessions?active_within=5m"); len(got) != 9 {
		t.Errorf("active_within=5m: %d sessions, want 9", len(got))
	}
	if got, _ := listAll(t, api+"/api/sessions?user=7"); !slices.Equal(got, ids(u7)) {
		t.Errorf("user=7: %v, want %v", got, ids(u7))
	}
	var ud listDoc
	if adminCall(t, "GET", api+"/api/users/42/sessions", adminToken, &ud); len(ud.Sessions) != 3 {
		t.Errorf("GET /api/users/42/sessions: %+v, want user 42's 3", ud)
	}

	// Log user 42 out everywhere, through the second instance: each of the
	// 3 gets a fresh id from PHP at its next request through the first.
	var killed map[string]int64
	if code := adminCall(t, "DELETE", "http://"+g2.addrs.admin+"/api/users/42/sessions", adminToken, &killed); code != http.StatusOK || killed["killed"] != 3 {
		t.Fatalf("DELETE user 42: %d %v, want 3 killed", code, killed)
	}
	for _, u := range u42 {
		old := u.id
		if pg := u.visit(t, front(g), "/visit.php"); pg.ID == old || pg.Visits != 1 {
			t.Errorf("user 42 after logout: %+v, want a fresh session (was %s)", pg, sessionstore.ShortID(old))
		}
	}
	for _, u := range u7 {
		old := u.id
		if pg := u.visit(t, front(g), "/visit.php"); pg.ID != old {
			t.Errorf("user 7 lost the session after user 42's logout")
		}
	}

	// Everyone out.
	if code := adminCall(t, "DELETE", api+"/api/sessions", adminToken, nil); code != http.StatusBadRequest {
		t.Errorf("DELETE /api/sessions without all=yes: %d, want 400", code)
	}
	if code := adminCall(t, "DELETE", api+"/api/sessions?all=yes", adminToken, &killed); code != http.StatusOK || killed["killed"] < 9 {
		t.Fatalf("DELETE all: %d %v, want every session killed", code, killed)
	}
	for _, u := range slices.Concat(u7, visitors, empties) {
		old := u.id
		if pg := u.visit(t, front(g2), "/visit.php"); pg.ID == old || pg.Visits != 1 {
			t.Errorf("after everyone out: %+v, want a fresh session", pg)
		}
	}
	log := logs.String()
	for _, id := range all {
		if strings.Contains(log, id) {
			t.Errorf("a session id appears in full in the log")
		}
	}
	if n := strings.Count(log, `msg="admin: session killed"`); n < 9 {
		t.Errorf("%d kills logged, want every one (at least 9)", n)
	}
}

// TestPoolResyncWithoutTraffic: a node restarted empty gets every session
// back from the others with no request at all, and the status shows it.
func TestPoolResyncWithoutTraffic(t *testing.T) {
	p := newPool(t, phptest.Memcache)
	g := start(t, writeConfig(t, poolGateYAML(p, "  resync_rate: 200\n")))
	t.Cleanup(p.tr.CloseIdleConnections)
	api := "http://" + g.addrs.admin
	// Straight to PHP: sessiongate's re-check of the sessions it saw
	// recently (reconcile) must not be what fills the node.
	u42, u7, visitors, empties := poolUsers(t, p, p.php.URL(0))
	all := ids(u42, u7, visitors, empties)
	if code := adminCall(t, "POST", api+"/api/pool/scan", adminToken, nil); code != http.StatusOK {
		t.Fatalf("scan: %d", code)
	}
	p.mc.Restart(0)
	var st struct {
		Pool *poolDoc `json:"pool"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		adminCall(t, "GET", api+"/api/status", "", &st)
		if r := st.Pool.Resync; r != nil && r.Node == p.mc.Addr(0) && !r.Running && r.Done >= r.Total && r.Total > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no finished resync of the restarted node in the status within 20s: %+v", st.Pool.Resync)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, id := range all {
		got, want := mg(t, p.mc.Addr(0), id), mg(t, p.mc.Addr(1), id)
		if !got.found || string(got.value) != string(want.value) || got.flags != want.flags || got.ttl < want.ttl-30 {
			t.Errorf("session %s on the restarted node: %+v, want %+v", sessionstore.ShortID(id), got, want)
		}
	}
	for _, u := range u42 {
		if pg := u.visit(t, front(g), "/visit.php"); pg.Visits != 2 {
			t.Errorf("after the resync a user 42 session counts %d visits, want 2", pg.Visits)
		}
	}
}
