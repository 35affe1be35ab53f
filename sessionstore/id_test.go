package sessionstore

import (
	"strings"
	"testing"
)

func TestValidIDAndDecodeCookieID(t *testing.T) {
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
			got, ok := DecodeCookieID(tc.raw)
			if got != tc.want || ok != tc.ok {
				t.Errorf("DecodeCookieID(%q) = %q, %v; want %q, %v", tc.raw, got, ok, tc.want, tc.ok)
			}
			if !strings.ContainsAny(tc.raw, "%+") && ValidID(tc.raw) != tc.ok {
				t.Errorf("ValidID(%q) = %v, want %v", tc.raw, !tc.ok, tc.ok)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	id := "3vdj8srh32rjq4kfeitc4hk4l5"
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		handler    string
		prefix     *string
		data, lock string
	}{
		{"", nil, id, id + ".lock"},
		{"memcache", nil, id, id + ".lock"},
		{"memcache", str("myapp_"), "myapp_" + id, "myapp_" + id + ".lock"},
		{"memcache", str("shop.example.com"), "shop.example.com" + id, "shop.example.com" + id + ".lock"},
		{"memcached", nil, "memc.sess.key." + id, "memc.sess.key.lock." + id},
		{"memcached", str("app1_"), "app1_" + id, "app1_lock." + id},
		{"memcached", str(""), id, "lock." + id},
	} {
		s, err := New(Options{Servers: []string{"127.0.0.1:1"}, Handler: tc.handler, KeyPrefix: tc.prefix})
		if err != nil {
			t.Fatal(err)
		}
		if data, lock := s.Keys(id); data != tc.data || lock != tc.lock {
			t.Errorf("%s/%v: Keys = %q, %q; want %q, %q", tc.handler, tc.prefix, data, lock, tc.data, tc.lock)
		}
		if data, lock := s.Keys("bad id"); data != "" || lock != "" {
			t.Errorf("%s: invalid id became keys %q, %q", tc.handler, data, lock)
		}
	}
}

func TestKeysRespectMemcachedKeyLimit(t *testing.T) {
	s, err := New(Options{Servers: []string{"127.0.0.1:1"}, Handler: HandlerMemcached}) // 14-byte prefix
	if err != nil {
		t.Fatal(err)
	}
	fits := strings.Repeat("a", maxKeyLen-len(DefaultMemcachedPrefix)-lockOverhead)
	if data, lock := s.Keys(fits); len(lock) != maxKeyLen || data == "" {
		t.Errorf("longest usable id: lock key %d bytes, data %q", len(lock), data)
	}
	if data, _ := s.Keys(fits + "a"); data != "" {
		t.Errorf("an id whose lock key exceeds 250 bytes became a key")
	}
	if r := s.Check(t.Context(), fits+"a"); r.Verdict != Invalid {
		t.Errorf("Check of an over-long id = %v, want invalid", r.Verdict)
	}
}

func TestNewRejects(t *testing.T) {
	bad := "has space"
	for name, o := range map[string]Options{
		"no servers":       {},
		"unresolvable":     {Servers: []string{"no-such-host.invalid:11211"}},
		"duplicate":        {Servers: []string{"127.0.0.1:1", "127.0.0.1:1"}},
		"handler":          {Servers: []string{"127.0.0.1:1"}, Handler: "redis"},
		"replicas":         {Servers: []string{"127.0.0.1:1"}, Replicas: 2},
		"prefix":           {Servers: []string{"127.0.0.1:1"}, KeyPrefix: &bad},
		"lifetime too low": {Servers: []string{"127.0.0.1:1"}, Lifetime: 10},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
}
