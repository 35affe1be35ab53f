package proxy

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/proxy/cookie"
	"github.com/sessiongate/sessiongate/sessionstore"
)

// scriptedStore answers Check from a table; real-memcached behaviour is
// covered by the integration tests, this isolates the proxy's cookie work.
type scriptedStore struct {
	mu      sync.Mutex
	verdict map[string]sessionstore.Verdict
	checked []string
	touched []string
}

func (s *scriptedStore) Check(_ context.Context, id string) sessionstore.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked = append(s.checked, id)
	v, ok := s.verdict[id]
	if !ok {
		v = sessionstore.Unknown
	}
	return sessionstore.Result{Verdict: v}
}

func (s *scriptedStore) Touch(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.touched = append(s.touched, id)
	return nil
}

const (
	liveID  = "3vdj8srh32rjq4kfeitc4hk4l5"
	otherID = "abcdefghijklmnopqrstuvwxyz"
	commaID = "abc,def-ghijklmnopqrstuvwxyz"
)

func sessionFarm(t *testing.T, so SessionOptions, phpSetCookie string) (*farm, *scriptedStore, chan string) {
	t.Helper()
	cookies := make(chan string, 4)
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		cookies <- r.Header.Get("Cookie")
		if phpSetCookie != "" {
			w.Header().Add("Set-Cookie", phpSetCookie)
		}
		w.Header().Add("Set-Cookie", "theme=dark; path=/")
	})
	st := &scriptedStore{verdict: map[string]sessionstore.Verdict{
		liveID:  sessionstore.Verified,
		commaID: sessionstore.Repaired,
		otherID: sessionstore.StoreDown,
	}}
	so.Store = st
	so.Cookie = "PHPSESSID"
	f := newFarm(t, []string{be.URL}, func(o *Options) { o.Session = &so })
	return f, st, cookies
}

func TestSessionCookieHandling(t *testing.T) {
	for _, tc := range []struct {
		name    string
		strict  bool
		cookie  string
		want    string // Cookie header PHP gets
		checked []string
		outcome string
	}{
		{"live id kept", true, "a=1; PHPSESSID=" + liveID + "; b=2", "a=1; PHPSESSID=" + liveID + "; b=2", []string{liveID}, "verified"},
		{"%2C decoded for the store, forwarded as sent", true, "PHPSESSID=abc%2Cdef-ghijklmnopqrstuvwxyz", "PHPSESSID=abc%2Cdef-ghijklmnopqrstuvwxyz", []string{commaID}, "repaired"},
		{"unknown id stripped, others kept", true, "a=1; PHPSESSID=zzzzzzzzzzzzzzzzzzzzzzzzzz; b=2", "a=1; b=2", []string{"zzzzzzzzzzzzzzzzzzzzzzzzzz"}, "unknown_stripped"},
		{"forged id never reaches the store", true, "PHPSESSID=../../etc/passwd%0d%0aset x", "", nil, "invalid_stripped"},
		{"too short", true, "PHPSESSID=abc", "", nil, "invalid_stripped"},
		{"quotes and spaces", true, `PHPSESSID="a b"`, "", nil, "invalid_stripped"},
		{"first valid of several wins, only it is forwarded", true, "PHPSESSID=bad!; PHPSESSID=" + liveID + "; PHPSESSID=" + otherID, "PHPSESSID=" + liveID, []string{liveID}, "verified"},
		{"store down fails open", true, "PHPSESSID=" + otherID, "PHPSESSID=" + otherID, []string{otherID}, "store_down"},
		{"not strict: unknown forwarded", false, "PHPSESSID=zzzzzzzzzzzzzzzzzzzzzzzzzz", "PHPSESSID=zzzzzzzzzzzzzzzzzzzzzzzzzz", []string{"zzzzzzzzzzzzzzzzzzzzzzzzzz"}, "unknown"},
		{"not strict: malformed forwarded as sent", false, "PHPSESSID=abc.def!x; a=1", "PHPSESSID=abc.def!x; a=1", nil, "invalid"},
		{"not strict: of several, the first as sent", false, "PHPSESSID=abc.def!x; PHPSESSID=also.bad", "PHPSESSID=abc.def!x", nil, "invalid"},
		{"no session cookie", true, "a=1", "a=1", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, st, cookies := sessionFarm(t, SessionOptions{Strict: tc.strict}, "")
			get(t, f.front.URL, map[string]string{"Cookie": tc.cookie})
			if got := <-cookies; got != tc.want {
				t.Errorf("PHP got Cookie %q, want %q", got, tc.want)
			}
			if strings.Join(st.checked, ",") != strings.Join(tc.checked, ",") {
				t.Errorf("store checked %q, want %q", st.checked, tc.checked)
			}
			got := strings.Join(f.obs.sessions, ",")
			if got != tc.outcome {
				t.Errorf("outcome %q, want %q", got, tc.outcome)
			}
		})
	}
}

func TestRenewal(t *testing.T) {
	marker, err := cookie.NewMarker("SGRENEW", []string{strings.Repeat("k", 32)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second) // the marker checks age against the real clock
	so := SessionOptions{Strict: true, CookieLifetime: time.Hour, RenewAfter: time.Minute, Renewals: marker,
		Secure: true, HTTPOnly: true, SameSite: http.SameSiteLaxMode, Now: func() time.Time { return now }}
	f, st, cookies := sessionFarm(t, so, "")

	res, _ := get(t, f.front.URL, map[string]string{"Cookie": "PHPSESSID=" + liveID})
	<-cookies
	var sess, mark *http.Cookie
	for _, c := range res.Cookies() {
		switch c.Name {
		case "PHPSESSID":
			sess = c
		case "SGRENEW":
			mark = c
		}
	}
	if sess == nil || sess.Value != liveID || sess.MaxAge != 3600 || !sess.Secure || !sess.HttpOnly || sess.SameSite != http.SameSiteLaxMode {
		t.Fatalf("renewed cookie = %+v", sess)
	}
	if len(st.touched) != 1 || st.touched[0] != liveID {
		t.Errorf("store touched %v, want the session once", st.touched)
	}
	if mark == nil {
		t.Fatal("no renewal marker cookie")
	}

	// Within renew_after: no renewal, and the marker does not reach PHP.
	now = now.Add(30 * time.Second)
	res, _ = get(t, f.front.URL, map[string]string{"Cookie": "PHPSESSID=" + liveID + "; SGRENEW=" + mark.Value})
	if got := <-cookies; got != "PHPSESSID="+liveID {
		t.Errorf("PHP got Cookie %q", got)
	}
	if n := len(res.Header.Values("Set-Cookie")); n != 1 { // only the app's theme cookie
		t.Errorf("Set-Cookie lines = %q, want none from sessiongate", res.Header.Values("Set-Cookie"))
	}
	// After renew_after: renewed again.
	now = now.Add(time.Minute)
	get(t, f.front.URL, map[string]string{"Cookie": "PHPSESSID=" + liveID + "; SGRENEW=" + mark.Value})
	<-cookies
	if len(st.touched) != 2 || f.obs.renewals != 2 {
		t.Errorf("touches %d renewals %d, want 2 each", len(st.touched), f.obs.renewals)
	}
	// A marker for another session does not count.
	other, _ := marker.Encode(commaID, now)
	get(t, f.front.URL, map[string]string{"Cookie": "PHPSESSID=" + liveID + "; SGRENEW=" + other})
	<-cookies
	if len(st.touched) != 3 {
		t.Errorf("a marker signed for another id suppressed renewal")
	}
}

func TestAttributesEnforcedOnPHPCookie(t *testing.T) {
	so := SessionOptions{Strict: true, Secure: true, HTTPOnly: true, SameSite: http.SameSiteStrictMode, Domain: "example.com"}
	f, st, cookies := sessionFarm(t, so, "PHPSESSID=newid0123456789abcdefghij; path=/")
	res, _ := get(t, f.front.URL, nil)
	<-cookies
	lines := res.Header.Values("Set-Cookie")
	if len(lines) != 2 {
		t.Fatalf("Set-Cookie = %q", lines)
	}
	want := "PHPSESSID=newid0123456789abcdefghij; Path=/; Domain=example.com; HttpOnly; Secure; SameSite=Strict"
	if lines[0] != want {
		t.Errorf("session cookie = %q, want %q", lines[0], want)
	}
	if lines[1] != "theme=dark; path=/" {
		t.Errorf("other cookie changed: %q", lines[1])
	}
	if len(st.touched) != 0 {
		t.Errorf("touched %v without a live session", st.touched)
	}
}
