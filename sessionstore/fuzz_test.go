package sessionstore

// Fuzz targets for everything a client controls on its way to a memcached key:
// id validation and key derivation (cookie decoding and the renewal marker are
// fuzzed in proxy/cookie). The seed corpora under testdata/fuzz run with every
// go test.

import (
	"regexp"
	"strings"
	"testing"
)

// phpID is the id grammar ValidID implements, written independently of it.
var phpID = regexp.MustCompile(`^[A-Za-z0-9,-]{22,256}$`)

// checkKey fails t unless k is a legal memcached text-protocol key.
func checkKey(t *testing.T, what, k string) {
	t.Helper()
	if k == "" || len(k) > maxKeyLen {
		t.Fatalf("%s key is %d bytes: %q", what, len(k), k)
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] == 0x7f {
			t.Fatalf("%s key %q has byte %#x at %d", what, k, k[i], i)
		}
	}
}

func addIDSeeds(f *testing.F) {
	for _, s := range []string{
		"3vdj8srh32rjq4kfeitc4hk4l5",
		"abc%2Cdef-ghijklmnopqrstuvwxyz",
		"abc,def-ghijklmnopqrstuvwxyz",
		"abcdefghijklmnopqrstuvwxyz%0d%0aflush_all",
		"abcdefghijklmnopqrstuvwxyz\r\nset x 0 0 1",
		"abcdefghijklm opqrstuvwxyz",
		"abcdefghijklm+opqrstuvwxyz",
		`"abcdefghijklmnopqrstuvwxyz"`,
		"abcdefghijklm\xff\xfeopqrstuvwxyz",
		"abcdefghijklm%ff%feopqrstuvwxyz",
		"abcdefghijklm%00opqrstuvwxyz",
		"abc.def!xyzxyzxyzxyzxyzxyz",
		"%61%62%63%64%65%66%67%68%69%6a%6b%6c%6d%6e%6f%70%71%72%73%74%75%76",
		"%", "%zz", "%%%", "",
		strings.Repeat("a", 21), strings.Repeat("a", 22),
		strings.Repeat("a", 256), strings.Repeat("a", 257), strings.Repeat("a", 300),
		strings.Repeat("%41", 256), strings.Repeat("%41", 257),
	} {
		f.Add(s)
	}
}

// FuzzValidID: ValidID agrees with the grammar [A-Za-z0-9,-]{22,256}.
func FuzzValidID(f *testing.F) {
	addIDSeeds(f)
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := ValidID(id), phpID.MatchString(id); got != want {
			t.Fatalf("ValidID(%q) = %v, grammar says %v", id, got, want)
		}
	})
}

// FuzzKeys: for any id, any prefix New accepts and both handlers, Keys gives
// either nothing or two distinct legal memcached keys of at most 250 bytes
// that start with the prefix and end with the id.
func FuzzKeys(f *testing.F) {
	for _, s := range []string{"3vdj8srh32rjq4kfeitc4hk4l5", strings.Repeat("Z", 256), "bad id", "a\x00b"} {
		for _, p := range []string{"", "memc.sess.key.", "myapp_", "shop.example.com", "has space", strings.Repeat("p", 223)} {
			f.Add(s, p, false)
			f.Add(s, p, true)
		}
	}
	f.Fuzz(func(t *testing.T, id, prefix string, memcached bool) {
		h := HandlerMemcache
		if memcached {
			h = HandlerMemcached
		}
		s, err := New(Options{Servers: []string{"127.0.0.1:1"}, Handler: h, KeyPrefix: &prefix})
		if err != nil {
			return // New refuses prefixes that could not start a key
		}
		data, lock := s.Keys(id)
		if data == "" || lock == "" {
			if data != lock {
				t.Fatalf("half a key pair: %q, %q", data, lock)
			}
			if ValidID(id) && len(prefix)+lockOverhead+len(id) <= maxKeyLen {
				t.Fatalf("%s/%q: no keys for usable id %q", h, prefix, id)
			}
			return
		}
		if !ValidID(id) {
			t.Fatalf("invalid id %q became keys %q, %q", id, data, lock)
		}
		checkKey(t, "data", data)
		checkKey(t, "lock", lock)
		if data == lock || !strings.HasPrefix(data, prefix) || !strings.HasPrefix(lock, prefix) ||
			!strings.HasSuffix(data, id) || !strings.Contains(lock, id) {
			t.Fatalf("%s/%q: keys %q, %q for id %q", h, prefix, data, lock, id)
		}
	})
}
