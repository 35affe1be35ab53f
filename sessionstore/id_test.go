package sessionstore

import (
	"strings"
	"testing"
)

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
