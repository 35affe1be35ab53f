package cookie

import (
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/sessionstore"
)

func TestDecodeID(t *testing.T) {
	id26 := "3vdj8srh32rjq4kfeitc4hk4l5" // Debian's default shape: 26 chars, 5 bits
	for _, tc := range []struct {
		name, raw, want string
		ok              bool
	}{
		{"debian default", id26, id26, true},
		{"22 chars", strings.Repeat("a", 22), strings.Repeat("a", 22), true},
		{"21 chars", strings.Repeat("a", 21), "", false},
		{"256 chars", strings.Repeat("Z", 256), strings.Repeat("Z", 256), true},
		{"257 chars", strings.Repeat("Z", 257), "", false},
		{"bits 6 alphabet", "abc,DEF-0123456789xyzXYZ", "abc,DEF-0123456789xyzXYZ", true},
		{"%2C decodes to comma", "abc%2CDEF-0123456789xyzXYZ", "abc,DEF-0123456789xyzXYZ", true},
		{"%2c lower case", "abc%2cDEF-0123456789xyzXYZ", "abc,DEF-0123456789xyzXYZ", true},
		{"%0d%0a injection", "abcdef0123456789abcdef%0d%0a", "", false},
		{"raw CRLF", "abcdef0123456789abcdef\r\n", "", false},
		{"space", "abcdef0123456789 abcdef0123", "", false},
		{"plus is a space to PHP", "abcdef0123456789+abcdef0123", "", false},
		{"%20", "abcdef0123456789%20abcdef0123", "", false},
		{"double quotes", `"3vdj8srh32rjq4kfeitc4hk4l5"`, "", false},
		{"single quote", "3vdj8srh32rjq4kfeitc4hk4l'", "", false},
		{"dot and bang (PHP's memcache would take it)", "abc.def!x0123456789abcdef", "", false},
		{"non-UTF-8", "3vdj8srh32rjq4kfeitc4hk4\xff\xfe", "", false},
		{"%-encoded non-UTF-8", "3vdj8srh32rjq4kfeitc4hk4%ff", "", false},
		{"broken escape", "3vdj8srh32rjq4kfeitc4hk4%zz", "", false},
		{"%00", "3vdj8srh32rjq4kfeitc4hk4%00", "", false},
		{"empty", "", "", false},
		{"encoded too long", strings.Repeat("%2C", 257), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := DecodeID(tc.raw)
			if got != tc.want || ok != tc.ok {
				t.Errorf("DecodeID(%q) = %q, %v; want %q, %v", tc.raw, got, ok, tc.want, tc.ok)
			}
			if !strings.ContainsAny(tc.raw, "%+") && sessionstore.ValidID(tc.raw) != tc.ok {
				t.Errorf("ValidID(%q) = %v, want %v", tc.raw, !tc.ok, tc.ok)
			}
		})
	}
}
