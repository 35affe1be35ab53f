package sessionstore

import (
	"testing"
)

func TestParseDumpLine(t *testing.T) {
	const overhead = itemOverhead
	for _, c := range []struct {
		line string
		want dumpItem
		ok   bool
	}{
		// memcached 1.6.18 (Debian 12), as read from a real node.
		{"key=memc.sess.key.abcdefghijklmnopqrstuvwxyz exp=1796659202 la=1796657762 cas=1 fetch=no cls=2 size=102",
			dumpItem{Key: []byte("memc.sess.key.abcdefghijklmnopqrstuvwxyz"), Exp: 1796659202, LA: 1796657762, Size: 102 - overhead - 40}, true},
		// Never expires; fields newer memcached adds; a ',' dumped as %2C.
		{"key=a%2Cb exp=-1 la=5 cas=7 fetch=yes cls=1 size=300 flags=4",
			dumpItem{Key: []byte("a,b"), Exp: -1, LA: 5, Size: 300 - overhead - 3}, true},
		// A size below the overhead is an empty value, not a negative one.
		{"key=k exp=0 la=0 size=10", dumpItem{Key: []byte("k")}, true},
		// Numbers memcached did not write read as 0.
		{"key=k exp=12x la=-", dumpItem{Key: []byte("k")}, true},
		{"key=k la=99999999999999999999", dumpItem{Key: []byte("k")}, true},
		// A key memcached could not encode, and lines without a key.
		{"key=ab%2 exp=1", dumpItem{}, false},
		{"key=ab%zz exp=1", dumpItem{}, false},
		{"exp=1 la=2", dumpItem{}, false},
		{"", dumpItem{}, false},
	} {
		got, ok := parseDumpLine([]byte(c.line))
		if ok != c.ok {
			t.Errorf("parseDumpLine(%q) ok = %v, want %v", c.line, ok, c.ok)
			continue
		}
		if ok && (string(got.Key) != string(c.want.Key) || got.Exp != c.want.Exp || got.LA != c.want.LA || got.Size != c.want.Size) {
			t.Errorf("parseDumpLine(%q) = %+v (key %q); want %+v (key %q)",
				c.line, got, got.Key, c.want, c.want.Key)
		}
	}
}
