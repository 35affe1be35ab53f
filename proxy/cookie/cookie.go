// Package cookie owns the proxy's cookie codecs: reading a session id out of
// PHP's session cookie the way PHP does (DecodeID), and the signed renewal
// bookkeeping cookie every instance reads and writes (Marker, marker.go). What
// a valid id is, and everything about memcached, is sessionstore's; when to
// set which cookie is the proxy's (proxy/session.go).
package cookie

import (
	"net/url"
	"strings"

	"github.com/sessiongate/sessiongate/sessionstore"
)

// DecodeID URL-decodes a session cookie value the way PHP does (PHP sends ","
// as "%2C" and decodes it again on the way in) and reports whether the result is a
// sessionstore.ValidID. Values without '%' or '+' are returned as they are, without
// allocating.
func DecodeID(raw string) (string, bool) {
	if len(raw) > 3*sessionstore.MaxIDLen { // even fully %-encoded it could not decode to a valid id
		return "", false
	}
	if !strings.ContainsAny(raw, "%+") {
		if !sessionstore.ValidID(raw) {
			return "", false
		}
		return raw, true
	}
	// PHP 8.2 decodes cookie values with php_raw_url_decode, which keeps '+' (observed:
	// "a+b" arrives as "a+b"); QueryUnescape makes it a space. Neither is a ValidID
	// byte, so the difference cannot matter here.
	id, err := url.QueryUnescape(raw)
	if err != nil || !sessionstore.ValidID(id) {
		return "", false
	}
	return id, true
}
