package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// pagedPool serves ids in pages of two and records the queries.
type pagedPool struct {
	mu      sync.Mutex
	ids     []string
	queries []SessionQuery
	killed  []string
}

func (p *pagedPool) Logout(_ context.Context, user string, each func(string)) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range p.ids {
		p.killed = append(p.killed, id)
		each(id)
	}
	return len(p.ids), nil
}

func (p *pagedPool) Scan(context.Context) (*PoolView, error) {
	return &PoolView{Sessions: int64(len(p.ids))}, nil
}

func (p *pagedPool) List(_ context.Context, q SessionQuery) (SessionPage, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queries = append(p.queries, q)
	if q.User == "nobody" {
		return SessionPage{}, ErrNoUserKey
	}
	start := 0
	for start < len(p.ids) && q.Cursor != "" && p.ids[start] <= q.Cursor {
		start++
	}
	end := min(start+2, len(p.ids))
	page := SessionPage{}
	for _, id := range p.ids[start:end] {
		page.Sessions = append(page.Sessions, ListedSession{ID: id})
	}
	if end < len(p.ids) {
		page.Next = p.ids[end-1]
	}
	return page, nil
}

func TestPoolEndpoints(t *testing.T) {
	ids := []string{"aaaaaaaaaaaaaaaaaaaaaa01", "aaaaaaaaaaaaaaaaaaaaaa02", "aaaaaaaaaaaaaaaaaaaaaa03"}
	pool := &pagedPool{ids: ids}
	f := newFixture(t, func(o *Options) { o.Pool = pool })

	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/api/sessions?active_within=soon", http.StatusBadRequest},
		{"GET", "/api/sessions?min_bytes=-1", http.StatusBadRequest},
		{"GET", "/api/sessions?user=nobody", http.StatusBadRequest},
		{"DELETE", "/api/sessions", http.StatusBadRequest},
		{"DELETE", "/api/sessions?all=1", http.StatusBadRequest},
		{"GET", "/api/sessions?limit=5000&active_within=5m&min_bytes=10", http.StatusOK},
		{"POST", "/api/pool/scan", http.StatusOK},
	} {
		if w := f.do(c.method, c.path, bearer...); w.Code != c.code {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, w.Code, w.Body, c.code)
		}
		if w := f.do(c.method, c.path); w.Code != http.StatusUnauthorized {
			t.Errorf("%s %s without token: %d, want 401", c.method, c.path, w.Code)
		}
	}
	q := pool.queries[len(pool.queries)-1]
	if q.Limit != MaxListLimit || q.MinBytes != 10 || q.ActiveWithin.String() != "5m0s" {
		t.Errorf("query %+v: want limit capped at %d, min_bytes 10, active_within 5m", q, MaxListLimit)
	}

	w := f.do("DELETE", "/api/sessions?all=yes", bearer...)
	var got map[string]int64
	if err := json.Unmarshal(w.Body.Bytes(), &got); w.Code != http.StatusOK || err != nil || got["killed"] != 3 {
		t.Fatalf("DELETE all: %d %s, want 3 killed", w.Code, w.Body)
	}
	if len(pool.killed) != 3 {
		t.Errorf("killed %v, want all 3", pool.killed)
	}
	logs := f.logs.String()
	for _, id := range ids {
		if strings.Contains(logs, id) {
			t.Errorf("session id %s in full in the log", id)
		}
		if !strings.Contains(logs, "sid="+shortHash(id)) {
			t.Errorf("kill of %s not logged by its hash", shortHash(id))
		}
	}
	if w := f.do("GET", "/api/users/42/sessions", bearer...); w.Code != http.StatusOK || pool.queries[len(pool.queries)-1].User != "42" {
		t.Errorf("GET /api/users/42/sessions: %d, query %+v", w.Code, pool.queries[len(pool.queries)-1])
	}

	f = newFixture(t, nil) // no session layer
	for _, p := range []string{"/api/sessions?limit=1", "/api/users/42/sessions"} {
		if w := f.do("GET", p, bearer...); w.Code != http.StatusNotFound {
			t.Errorf("GET %s without a pool: %d, want 404", p, w.Code)
		}
	}
}
