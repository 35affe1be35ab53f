package sessionstore

// Fuzz targets for everything a client controls on its way to a memcached key
// or a signed cookie: cookie decoding, id validation, key derivation and the
// renewal marker. The seed corpora under testdata/fuzz run with every go test.

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/securecookie"
)

// phpID is the id grammar ValidID implements, written independently of it.
var phpID = regexp.MustCompile(`^[A-Za-z0-9,-]{22,256}$`)

// fuzzStores are one Store per handler with its default prefix; New only
// validates and never connects, so they need no memcached.
func fuzzStores(f *testing.F) []*Store {
	var out []*Store
	for _, h := range []string{HandlerMemcache, HandlerMemcached} {
		s, err := New(Options{Servers: []string{"127.0.0.1:1"}, Handler: h})
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

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

// FuzzDecodeCookieID: whatever the cookie holds, an accepted id is a ValidID
// of PHP's alphabet and length, and both handlers derive legal keys from it.
func FuzzDecodeCookieID(f *testing.F) {
	addIDSeeds(f)
	stores := fuzzStores(f)
	f.Fuzz(func(t *testing.T, raw string) {
		id, ok := DecodeCookieID(raw)
		if !ok {
			if id != "" {
				t.Fatalf("rejected %q but returned %q", raw, id)
			}
			if ValidID(raw) {
				t.Fatalf("rejected %q, which is a valid id as it stands", raw)
			}
			return
		}
		if !ValidID(id) || !phpID.MatchString(id) {
			t.Fatalf("accepted %q as %q, not a PHP id", raw, id)
		}
		if !strings.ContainsAny(raw, "%+") && id != raw {
			t.Fatalf("plain value %q decoded to %q", raw, id)
		}
		for _, s := range stores {
			data, lock := s.Keys(id)
			if data == "" && len(s.prefix)+lockOverhead+len(id) <= maxKeyLen {
				t.Fatalf("%s: no keys for usable id %q", s.handler, id)
			}
			if data != "" {
				checkKey(t, s.handler+" data", data)
				checkKey(t, s.handler+" lock", lock)
			}
		}
	})
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

// FuzzMarker: RenewedAt never panics and accepts only what Encode produces
// under the marker's own key for that very id: a value it accepts is signed
// with that key (another key rejects it), carries exactly Encode's payload for
// the time returned, and is bound to the id.
func FuzzMarker(f *testing.F) {
	const (
		key   = "fuzz-marker-key-0123456789abcdef0123456789"
		other = "fuzz-other-key-0123456789abcdef0123456789"
		idA   = "3vdj8srh32rjq4kfeitc4hk4l5"
		idB   = "4vdj8srh32rjq4kfeitc4hk4l5"
	)
	m, err := NewMarker("SGRENEW", []string{key}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	foreign, err := NewMarker("SGRENEW", []string{other}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	for _, at := range []time.Time{now, now.Add(-2 * time.Hour), now.Add(2 * time.Hour)} {
		v, err := m.Encode(idA, at)
		if err != nil {
			f.Fatal(err)
		}
		fv, _ := foreign.Encode(idA, at)
		f.Add(v, idA)
		f.Add(v, idB)
		f.Add(fv, idA)
		f.Add(v[:len(v)/2], idA)
		f.Add(v+"A", idA)
	}
	f.Add("", idA)
	f.Add("MTcwMDAwMDAwMHxfX3xfXw==", idA)
	f.Add("not|a|marker", "")
	// A codec like the marker's, to read back what an accepted value carries.
	codec := securecookie.New([]byte(key), nil).SetSerializer(securecookie.NopEncoder{})

	f.Fuzz(func(t *testing.T, value, id string) {
		at, ok := m.RenewedAt(value, id)
		if !ok {
			if !at.IsZero() {
				t.Fatalf("rejected but returned %v", at)
			}
			return
		}
		if _, ok := foreign.RenewedAt(value, id); ok {
			t.Fatalf("value %q accepted under an unrelated key too", value)
		}
		var payload []byte
		if err := codec.Decode("SGRENEW", value, &payload); err != nil {
			t.Fatalf("accepted %q, which does not verify under the key: %v", value, err)
		}
		if want := strconv.FormatInt(at.Unix(), 10) + "." + idTag(id); string(payload) != want {
			t.Fatalf("accepted payload %q, Encode would write %q", payload, want)
		}
		if age := time.Since(at); age > time.Hour+time.Second || age < -time.Hour-time.Second {
			t.Fatalf("accepted a marker %v old", age)
		}
		if _, ok := m.RenewedAt(value, id+"x"); ok {
			t.Fatalf("marker for %q also accepted for another id", id)
		}
	})
}
