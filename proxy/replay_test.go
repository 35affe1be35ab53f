package proxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sessiongate/sessiongate/sessionstore"
)

// faultStore is a scriptedStore that also tells whether a memcached fault
// happened since a Check (Faults).
type faultStore struct {
	*scriptedStore
	fault     atomic.Bool
	unsettled atomic.Bool // a resumed node's lock left for the request
}

func (s *faultStore) Epoch() uint64            { return 7 }
func (s *faultStore) FaultSince(e uint64) bool { return e != 7 || s.fault.Load() }
func (s *faultStore) Recheck(ctx context.Context, id string) sessionstore.Result {
	return s.Check(ctx, id)
}
func (s *faultStore) Unsettled(string) bool { return s.unsettled.Load() }

// TestLostAnswerReplayRules: which answers of a live session are dropped and
// the request sent to PHP again (the real-PHP side is cmd/sessiongate's
// TestLostAnswerReplayed). The backend's first answer to the request under
// test is the case's; a second one says "second" with PHP's session headers.
func TestLostAnswerReplayRules(t *testing.T) {
	const newCookie = "PHPSESSID=" + otherID + "; path=/"
	for _, tc := range []struct {
		name      string
		method    string
		body      string
		first     string // Set-Cookie of the first answer, "" none
		started   bool   // the first answer carries PHP's session Expires
		learned   bool   // an earlier answer of a live session carried it
		fault     bool
		empty     bool // the session holds no data
		unsettled bool // a resumed node's lock was left when it went to PHP
		wantCalls int
	}{
		{"new id at a fault", "GET", "", newCookie, true, true, true, false, false, 2},
		{"new id at a fault, marker never seen", "HEAD", "", newCookie, false, false, true, false, false, 2},
		{"session did not start at a fault", "GET", "", "", false, true, true, false, false, 2},
		{"new id without a fault (session_regenerate_id)", "GET", "", newCookie, true, true, false, false, false, 1},
		{"session did not start, no fault", "GET", "", "", false, true, false, false, false, 1},
		{"no session headers on a site that never sends them", "GET", "", "", false, false, true, false, false, 1},
		{"same id set again at a fault", "GET", "", "PHPSESSID=" + liveID + "; path=/", true, true, true, false, false, 1},
		{"cookie deleted at a fault", "GET", "", "PHPSESSID=deleted; Max-Age=0", true, true, true, false, false, 1},
		{"POST is never sent twice", "POST", "x=1", newCookie, false, true, true, false, false, 1},
		{"empty session: nothing to lose", "GET", "", newCookie, false, true, true, true, false, 1},
		{"session did not start, a resumed node's lock left", "GET", "", "", false, true, false, false, true, 2},
		{"new id, a resumed node's lock left, no fault", "GET", "", newCookie, true, true, false, false, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			be := backend(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				if r.URL.Path == "/prime" || calls.Add(1) > 1 {
					w.Header().Set("Expires", phpSessionExpires)
					io.WriteString(w, "second")
					return
				}
				if tc.first != "" {
					w.Header().Set("Set-Cookie", tc.first)
				}
				if tc.started {
					w.Header().Set("Expires", phpSessionExpires)
				}
				io.WriteString(w, "first")
			})
			st := &faultStore{scriptedStore: &scriptedStore{verdict: map[string]sessionstore.Verdict{liveID: sessionstore.Verified}}}
			so := SessionOptions{Strict: true, Store: st, Cookie: "PHPSESSID"}
			if tc.empty {
				so.Store = emptyStore{st}
			}
			f := newFarm(t, []string{be.URL}, func(o *Options) { o.Session = &so })
			hdr := map[string]string{"Cookie": "PHPSESSID=" + liveID}
			if tc.learned {
				get(t, f.front.URL+"/prime", hdr)
			}
			st.fault.Store(tc.fault)
			st.unsettled.Store(tc.unsettled)
			req, _ := http.NewRequest(tc.method, f.front.URL+"/page", strings.NewReader(tc.body))
			if tc.body == "" {
				req.Body, req.ContentLength = nil, 0
			}
			req.Header.Set("Cookie", hdr["Cookie"])
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if got := int(calls.Load()); got != tc.wantCalls {
				t.Fatalf("PHP got the request %d times, want %d", got, tc.wantCalls)
			}
			want := map[int]string{1: "first", 2: "second"}[tc.wantCalls]
			if tc.method == "HEAD" {
				want = ""
			}
			if string(b) != want {
				t.Errorf("client got %q, want %q", b, want)
			}
		})
	}
}

// emptyStore answers every live id as a session holding no data.
type emptyStore struct{ *faultStore }

func (s emptyStore) Check(ctx context.Context, id string) sessionstore.Result {
	r := s.faultStore.Check(ctx, id)
	r.Empty = true
	return r
}

func (s emptyStore) Recheck(ctx context.Context, id string) sessionstore.Result {
	return s.Check(ctx, id)
}
