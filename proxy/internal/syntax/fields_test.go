package syntax

import (
	"net/textproto"
	"testing"
)

func TestCanonical(t *testing.T) {
	for _, k := range []string{"Host", "Content-Type", "ETag", "content-type", "X-Forwarded-For", "x", "X", "A-", "-a", "Www-Authenticate", "WWW-Authenticate", "Sec-Ch-Ua", "sec-ch-ua", "X-1a", "X_y"} {
		if got, want := canonical([]byte(k)), textproto.CanonicalMIMEHeaderKey(k) == k; got != want {
			t.Errorf("canonical(%q) = %v, want %v", k, got, want)
		}
	}
}

func TestHasToken(t *testing.T) {
	for v, want := range map[string]bool{"close": true, "Keep-Alive, CLOSE": true, " close ,x": true, "closed": false, "": false, "x,,close\t": true, "clo se": false,
		"clo\u017fe": false, "\u212aeep-alive, close": true, ",": false, "close,": true} {
		if got := HasToken([]byte(v), "close"); got != want || HasToken(v, "close") != want {
			t.Errorf("HasToken(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestGet(t *testing.T) {
	h := map[string][]string{"Content-Type": {"text/html", "x"}, "Empty": {}, "lower": {"v"}}
	for _, k := range []string{"Content-Type", "Empty", "Missing", "Lower"} {
		if got, want := Get(h, k), textproto.MIMEHeader(h).Get(k); got != want {
			t.Errorf("Get(%q) = %q, want %q", k, got, want)
		}
	}
}
