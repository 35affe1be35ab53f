package cookie

// Fuzz targets for what a client controls in the cookies: the session cookie's
// decoding and the renewal marker. The seed corpora under testdata/fuzz run
// with every go test.

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/sessiongate/sessiongate/sessionstore"
)

// phpID is the id grammar sessionstore.ValidID implements, written independently of it.
var phpID = regexp.MustCompile(`^[A-Za-z0-9,-]{22,256}$`)

// FuzzDecodeID: whatever the cookie holds, an accepted id is a ValidID of
// PHP's alphabet and length, and both handlers derive legal keys from it.
func FuzzDecodeID(f *testing.F) {
	for _, s := range []string{"3vdj8srh32rjq4kfeitc4hk4l5", "abc%2Cdef-ghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz%0d%0aflush_all",
		"abcdefghijklm+opqrstuvwxyz", "abcdefghijklm%ff%feopqrstuvwxyz", "%zz", "", strings.Repeat("a", 256), strings.Repeat("%2C", 257)} {
		f.Add(s)
	}
	// One Store per handler with its default prefix; New only validates and
	// never connects, so they need no memcached.
	prefixes := map[string]string{sessionstore.HandlerMemcache: "", sessionstore.HandlerMemcached: sessionstore.DefaultMemcachedPrefix}
	stores := map[string]*sessionstore.Store{}
	for h, p := range prefixes {
		s, err := sessionstore.New(sessionstore.Options{Servers: []string{"127.0.0.1:1"}, Handler: h, KeyPrefix: &p})
		if err != nil {
			f.Fatal(err)
		}
		stores[h] = s
	}
	// legal: at most memcached's 250 bytes, no whitespace or control bytes.
	legal := func(k string) bool {
		return k != "" && len(k) <= 250 && !strings.ContainsFunc(k, func(r rune) bool { return r <= ' ' || r == 0x7f })
	}
	f.Fuzz(func(t *testing.T, raw string) {
		id, ok := DecodeID(raw)
		if !ok {
			if id != "" {
				t.Fatalf("rejected %q but returned %q", raw, id)
			}
			if sessionstore.ValidID(raw) {
				t.Fatalf("rejected %q, which is a valid id as it stands", raw)
			}
			return
		}
		if !sessionstore.ValidID(id) || !phpID.MatchString(id) {
			t.Fatalf("accepted %q as %q, not a PHP id", raw, id)
		}
		if !strings.ContainsAny(raw, "%+") && id != raw {
			t.Fatalf("plain value %q decoded to %q", raw, id)
		}
		for h, s := range stores {
			data, lock := s.Keys(id)
			// 5: the lock key's suffix (".lock" or "lock.") beyond prefix+id.
			if data == "" && len(prefixes[h])+5+len(id) <= 250 {
				t.Fatalf("%s: no keys for usable id %q", h, id)
			}
			if data != "" && (!legal(data) || !legal(lock)) {
				t.Fatalf("%s: illegal keys %q, %q for id %q", h, data, lock, id)
			}
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
