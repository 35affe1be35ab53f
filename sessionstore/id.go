package sessionstore

import (
	"crypto/sha256"
	"encoding/hex"
)

// Session id length bounds of PHP 8.2 (session.sid_length accepts 22..256).
const (
	minIDLen = 22
	// MaxIDLen is the longest id ValidID accepts.
	MaxIDLen = 256
	// maxKeyLen is memcached's key length limit.
	maxKeyLen = 250
)

// ValidID reports whether id is an id PHP could have generated: 22 to 256 characters
// of [A-Za-z0-9,-] (session.sid_bits_per_character 4, 5 or 6). Anything else is never
// used as a key.
func ValidID(id string) bool {
	if len(id) < minIDLen || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == ',' || c == '-') {
			return false
		}
	}
	return true
}

// ShortID is what logs show instead of a session id: the first 8 hex digits of its
// SHA-256, enough to correlate log lines, useless to hijack a session.
func ShortID(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:4])
}

// legalPrefix reports whether p can start a memcached key: no whitespace or control
// bytes (memcached's text protocol and php-memcached's rule), and short enough to leave room for
// a 22-character id plus the longest lock suffix.
func legalPrefix(p string) bool {
	if len(p)+lockOverhead+minIDLen > maxKeyLen {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] == 0x7f {
			return false
		}
	}
	return true
}

// lockOverhead is how much longer than prefix+id the lock key is, for both handlers:
// ".lock" (memcache) and "lock." (memcached) are both 5 bytes.
const lockOverhead = 5

// Keys returns the data and lock key of id for the configured handler and prefix:
//
//	memcache:  data <prefix><id>, lock <prefix><id>.lock
//	memcached: data <prefix><id>, lock <prefix>lock.<id>
//
// Both are empty if id is not a ValidID or its keys would exceed memcached's 250-byte
// key limit (PHP's memcache would silently truncate such a key, php-memcached would
// reject it; either way it is not a session this store can find).
func (s *Store) Keys(id string) (data, lock string) {
	if !s.usable(id) {
		return "", ""
	}
	data = s.prefix + id
	if s.handler == HandlerMemcached {
		return data, s.prefix + "lock." + id
	}
	return data, data + ".lock"
}

// usable reports whether id may become a key.
func (s *Store) usable(id string) bool {
	return len(s.prefix)+lockOverhead+len(id) <= maxKeyLen && ValidID(id)
}
