// Package syntax holds the HTTP/1.1 field rules (RFC 9110 5.1, 5.5) that
// the client-facing server and the upstream client both check, as
// net/http checks them.
package syntax

import "strings"

// TokenByte reports whether b may appear in a token, such as a field name.
func TokenByte(b byte) bool {
	// Bitmaps of the allowed bytes 0-63 and 64-127: digits and
	// !#$%&'*+-.^_`|~ and letters. Bytes from 128 on are never allowed.
	const (
		lo = 1<<'!' | 1<<'#' | 1<<'$' | 1<<'%' | 1<<'&' | 1<<'\'' | 1<<'*' | 1<<'+' | 1<<'-' | 1<<'.' |
			(1<<10-1)<<'0'
		hi = (1<<26-1)<<('A'-64) | (1<<26-1)<<('a'-64) |
			1<<('^'-64) | 1<<('_'-64) | 1<<('`'-64) | 1<<('|'-64) | 1<<('~'-64)
	)
	if b < 64 {
		return uint64(lo)>>b&1 == 1
	}
	return b < 128 && uint64(hi)>>(b-64)&1 == 1
}

// FieldName reports whether s is a non-empty token.
func FieldName[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !TokenByte(s[i]) {
			return false
		}
	}
	return true
}

// FieldValue reports whether s holds no control bytes but tab.
func FieldValue[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}

// Host reports whether h is net/http's idea of a valid Host (httpguts):
// only bytes that may appear in a host, port or IPv6 literal.
func Host(h string) bool {
	for i := 0; i < len(h); i++ {
		b := h[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
			strings.IndexByte("!$%&'()*+,-.:;=[]_~", b) >= 0) {
			return false
		}
	}
	return true
}
