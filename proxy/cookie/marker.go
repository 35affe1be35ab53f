package cookie

// This file holds the renewal bookkeeping cookie codec (Marker).

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/sessiongate/sessiongate/sessionstore"
)

// minMarkerKey is the shortest accepted signing key (HMAC-SHA256 hash key).
const minMarkerKey = 32

// Marker encodes and verifies the renewal bookkeeping cookie shared by all proxy
// instances: when a session's store TTL and cookie were last renewed. The value is
// signed (HMAC-SHA256 via securecookie), not encrypted: it holds a unix time and a
// truncated SHA-256 of the session id, nothing secret. It is safe for concurrent use.
type Marker struct {
	name   string
	maxAge time.Duration
	codecs []securecookie.Codec
	now    func() time.Time
}

// NewMarker builds a Marker for the cookie name. keys[0] signs, every key verifies
// (rotation: put the new key first, keep the old one until its cookies expired). Each
// key is a secret of at least 32 bytes. With no keys a random per-process key is
// generated: then instances do not accept each other's markers, which is harmless
// but makes them renew more often. Markers older than maxAge are rejected.
func NewMarker(name string, keys []string, maxAge time.Duration) (*Marker, error) {
	if name == "" {
		return nil, errors.New("cookie: marker cookie name is empty")
	}
	if maxAge <= 0 {
		return nil, errors.New("cookie: marker max age must be positive")
	}
	secrets := make([][]byte, 0, max(1, len(keys)))
	for i, k := range keys {
		if len(k) < minMarkerKey {
			return nil, fmt.Errorf("cookie: marker key %d is %d bytes, need at least %d", i, len(k), minMarkerKey)
		}
		secrets = append(secrets, []byte(k))
	}
	if len(secrets) == 0 {
		k := securecookie.GenerateRandomKey(minMarkerKey)
		if k == nil {
			return nil, errors.New("cookie: cannot generate a marker key")
		}
		secrets = append(secrets, k)
	}
	m := &Marker{name: name, maxAge: maxAge, now: time.Now}
	// securecookie checks its own embedded timestamp too; a second of slack keeps its
	// whole-second clock from rejecting what our own check accepts.
	secs := int((maxAge+time.Second-1)/time.Second) + 1
	for _, k := range secrets {
		sc := securecookie.New(k, nil).SetSerializer(securecookie.NopEncoder{}).MaxAge(secs)
		m.codecs = append(m.codecs, sc)
	}
	return m, nil
}

// Name returns the cookie name.
func (m *Marker) Name() string { return m.name }

// Encode returns the signed cookie value recording that id was renewed at renewedAt.
func (m *Marker) Encode(id string, renewedAt time.Time) (string, error) {
	if !sessionstore.ValidID(id) {
		return "", sessionstore.ErrInvalidID
	}
	v := strconv.FormatInt(renewedAt.Unix(), 10) + "." + idTag(id)
	return securecookie.EncodeMulti(m.name, []byte(v), m.codecs...)
}

// RenewedAt returns the renewal time recorded in value for id. It reports false if the
// signature is bad (under every key), the marker is older than maxAge (or as far in
// the future), or it was made for another id.
func (m *Marker) RenewedAt(value, id string) (time.Time, bool) {
	var b []byte
	if value == "" || securecookie.DecodeMulti(m.name, value, &b, m.codecs...) != nil {
		return time.Time{}, false
	}
	secs, tag, ok := strings.Cut(string(b), ".")
	if !ok || tag != idTag(id) {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(secs, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	t := time.Unix(n, 0)
	if age := m.now().Sub(t); age > m.maxAge || age < -m.maxAge {
		return time.Time{}, false
	}
	return t, true
}

// idTag binds a marker to one session id without spelling it out: 96 bits of SHA-256.
func idTag(id string) string {
	sum := sha256.Sum256([]byte(id))
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}
