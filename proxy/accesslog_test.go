package proxy

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddr(t *testing.T) {
	p := New(Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}})
	for _, tc := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"192.0.2.1:1234", []string{"203.0.113.5"}, "192.0.2.1"},                     // untrusted peer: its claims are ignored
		{"10.1.1.1:1234", nil, "10.1.1.1"},                                           // trusted peer, no header
		{"10.1.1.1:1234", []string{"203.0.113.5"}, "203.0.113.5"},                    // one hop
		{"10.1.1.1:1234", []string{"1.1.1.1, 203.0.113.5, 10.2.2.2"}, "203.0.113.5"}, // rightmost untrusted
		{"10.1.1.1:1234", []string{"1.1.1.1", "203.0.113.5, 10.2.2.2"}, "203.0.113.5"},
		{"10.1.1.1:1234", []string{"10.3.3.3, 10.2.2.2"}, "10.3.3.3"},            // all trusted: the leftmost
		{"10.1.1.1:1234", []string{"1.1.1.1, evil stuff, 10.2.2.2"}, "10.2.2.2"}, // malformed: stop at the last trusted hop
		{"[::1]:80", []string{"2001:db8::7"}, "2001:db8::7"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.peer
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := p.clientAddr(r, p.trusted(r.RemoteAddr)); got != tc.want {
			t.Errorf("peer %s, X-Forwarded-For %q: client %q, want %q", tc.peer, tc.xff, got, tc.want)
		}
	}
}

func TestValidRequestID(t *testing.T) {
	for _, s := range []string{"a", "Edge-7f3a.b_c:9", strings.Repeat("Z", 128)} {
		if !validRequestID(s) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", strings.Repeat("Z", 129), "a b", "a/b", "a\"b", "a\r\nb", "caf\xc3\xa9", "a,b", "a;b"} {
		if validRequestID(s) {
			t.Errorf("%q accepted", s)
		}
	}
	a, b := newIDSource(), newIDSource()
	x, y := a.next(new(idHeader))[0], a.next(new(idHeader))[0]
	if x == y || x[:16] != y[:16] || len(x) != 32 || b.next(new(idHeader))[0][:16] == x[:16] {
		t.Errorf("ids %s %s, other source %s", x, y, b.next(new(idHeader))[0])
	}
}
