package syntax

import (
	"strings"
	"testing"
)

func TestTokenByte(t *testing.T) {
	const tokens = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	for b := range 256 {
		if got, want := TokenByte(byte(b)), strings.IndexByte(tokens, byte(b)) >= 0; got != want {
			t.Errorf("TokenByte(%#x) = %v, want %v", b, got, want)
		}
	}
}

func TestFieldNameAndValue(t *testing.T) {
	for s, want := range map[string]bool{"Content-Type": true, "X-!#$%&'*+.^_`|~": true, "": false, "A B": false, "A:": false, "Ä": false} {
		if FieldName(s) != want || FieldName([]byte(s)) != want {
			t.Errorf("FieldName(%q) = %v, want %v", s, !want, want)
		}
	}
	for s, want := range map[string]bool{"": true, "a b\tc": true, "Jos\xe9": true, "a\x00": false, "a\r": false, "a\n": false, "\x7f": false, "\x1f": false} {
		if FieldValue(s) != want || FieldValue([]byte(s)) != want {
			t.Errorf("FieldValue(%q) = %v, want %v", s, !want, want)
		}
	}
}

func TestHost(t *testing.T) {
	for s, want := range map[string]bool{"": true, "site.example": true, "site.example:8443": true, "[::1]:80": true, "xn--bcher-kva.example": true,
		"a b": false, "site/x": false, "site\"x": false, "site<x": false, "site\\x": false, "site@x": false, "site\x00": false, "sité": false} {
		if got := Host(s); got != want {
			t.Errorf("Host(%q) = %v, want %v", s, got, want)
		}
	}
}
