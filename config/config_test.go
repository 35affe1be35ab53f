package config

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// issueSample is the contract from the foundation issue, byte for byte.
const issueSample = `listen: 127.0.0.1:8080
backends:
  - name: lamp01
    url: http://127.0.0.1:8081
  - name: lamp02
    url: http://127.0.0.1:8082
  - name: lamp03
    url: http://127.0.0.1:8083
balancer:
  policy: round_robin
health:
  path: /health.php
  interval: 1s
  timeout: 500ms
  rise: 2
  fall: 2
session:
  cookie: PHPSESSID
  handler: memcache
  lifetime: 24m
  strict: true
memcached:
  servers:
    - 127.0.0.1:11211
    - 127.0.0.1:11212
    - 127.0.0.1:11213
  timeout: 100ms
admin:
  listen: 127.0.0.1:9090
  token: change-me
`

func TestIssueSampleAccepted(t *testing.T) {
	c, err := Parse("sample.yaml", []byte(issueSample))
	if err != nil {
		t.Fatalf("sample rejected:\n%v", err)
	}
	if len(c.Backends) != 3 || c.Backends[2].Name != "lamp03" || c.Backends[2].URL != "http://127.0.0.1:8083" {
		t.Errorf("backends = %+v", c.Backends)
	}
	if c.Health.Interval != time.Second || c.Health.Timeout != 500*time.Millisecond || c.Health.Rise != 2 {
		t.Errorf("health = %+v", c.Health)
	}
	s := c.Session
	if s == nil || s.Cookie != "PHPSESSID" || s.Handler != "memcache" || s.Lifetime != 24*time.Minute || !s.Strict {
		t.Fatalf("session = %+v", s)
	}
	if s.MarkerCookie != "SGRENEW" || s.VerifyTTL != 2*time.Second {
		t.Errorf("session defaults not applied: %+v", s)
	}
	if c.Memcached.Timeout != 100*time.Millisecond || len(c.Memcached.Servers) != 3 || c.Memcached.Replicas != 0 ||
		c.Memcached.RestartHold != 2*time.Second {
		t.Errorf("memcached = %+v", c.Memcached)
	}
	if c.Admin.Token != "change-me" || c.Server.MaxHeaderBytes != 64<<10 {
		t.Errorf("admin/server = %+v %+v", c.Admin, c.Server)
	}
	if got := c.Line("backends[1].url"); got != 6 {
		t.Errorf("Line(backends[1].url) = %d, want 6", got)
	}
}

func TestRepositorySampleAccepted(t *testing.T) {
	if _, err := Load("../config.yaml"); err != nil {
		t.Fatalf("config.yaml rejected:\n%v", err)
	}
}

func TestNoSessionSectionIsPlainBalancer(t *testing.T) {
	c, err := Parse("plain.yaml", []byte("listen: 127.0.0.1:8080\nbackends:\n  - name: a\n    url: http://127.0.0.1:1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Session != nil {
		t.Errorf("Session = %+v, want nil", c.Session)
	}
}

func TestProblemsNameFileLineAndKey(t *testing.T) {
	const file = `listen: 127.0.0.1:8080
backends:
  - name: lamp01
    url: http://127.0.0.1:8081
    wieght: 3
  - name: lamp01
    url: ftp://x
  - name: lamp03
    url: http://127.0.0.1:8083
    weight: 5000
health:
  interval: soon
  rise: 0
balancer:
  policy: sticky
memcached:
  servers: [127.0.0.1:11211, nope]
  timeout: 1h
  replicas: 2
session:
  handler: redis
  samesite: sideways
trusted_proxies: [10.0.0.0/8, 300.1.1.1]
`
	_, err := Parse("bad.yaml", []byte(file))
	var ps *Problems
	if !errors.As(err, &ps) {
		t.Fatalf("err = %v, want *Problems", err)
	}
	// Values that fail to decode and values that fail validation are all
	// reported at once, sorted by line.
	want := []string{
		`bad.yaml:5: backends[0].wieght: unknown key (did you mean "weight"?)`,
		`bad.yaml:6: backends[1].name: "lamp01" is already used by backends[0]`,
		`bad.yaml:7: backends[1].url: "ftp://x" is not an http:// or https:// URL`,
		`bad.yaml:10: backends[2].weight: 5000 is out of range 1-1000`,
		`bad.yaml:12: health.interval: "soon" is not a duration`,
		`bad.yaml:13: health.rise: 0 is out of range 1-100`,
		`bad.yaml:15: balancer.policy: "sticky" is not one of round_robin`,
		`bad.yaml:17: memcached.servers[1]: "nope" is not host:port`,
		`bad.yaml:18: memcached.timeout: 1h0m0s is out of range 1ms-10s`,
		`bad.yaml:19: memcached.replicas: "2" must be "all"`,
		`bad.yaml:21: session.handler: "redis" must be memcache or memcached`,
		`bad.yaml:22: session.samesite: "sideways" must be Lax, Strict, None or empty`,
		`bad.yaml:23: trusted_proxies[1]: "300.1.1.1" is not an IP address or CIDR`,
	}
	if len(ps.List) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(ps.List), len(want), err)
	}
	for i, w := range want {
		if got := ps.List[i].String(); !strings.HasPrefix(got, w) {
			t.Errorf("problem %d = %q, want %q…", i, got, w)
		}
	}
}

func TestEmptyBackendListAndSyntaxErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty backends", "listen: 127.0.0.1:8080\nbackends: []\n", "x.yaml:2: backends: at least one backend is required"},
		{"no backends", "listen: 127.0.0.1:8080\n", "x.yaml:1: backends: at least one backend is required"},
		{"empty file", "", "x.yaml:1: the file is empty"},
		{"syntax", "listen: [\n", "x.yaml:"},
		{"wrong shape", "backends: lamp01\n", "x.yaml:1: backends: expected a list"},
		{"duplicate key", "listen: a:1\nlisten: b:2\nbackends: [{name: a, url: 'http://h'}]\n", "x.yaml:2: listen: duplicate key"},
		{"session without servers", "backends: [{name: a, url: 'http://h'}]\nsession:\n  cookie: SID\n", "memcached.servers: at least one server (or memcached.dns) is required"},
		{"scan interval too short", "backends: [{name: a, url: 'http://h'}]\nmemcached:\n  servers: ['h:1']\n  scan_interval: 10ms\n", "x.yaml:4: memcached.scan_interval: 10ms is out of range 1s-24h (0 = off)"},
		{"negative resync rate", "backends: [{name: a, url: 'http://h'}]\nmemcached:\n  servers: ['h:1']\n  resync_rate: -1\n", "x.yaml:4: memcached.resync_rate: -1 is out of range 0-1000000"},
		{"restart hold too long", "backends: [{name: a, url: 'http://h'}]\nmemcached:\n  servers: ['h:1']\n  restart_hold: 1m\n", "x.yaml:4: memcached.restart_hold: 1m0s is out of range 0-30s"},
		{"short signing key", "backends: [{name: a, url: 'http://h'}]\nmemcached: {servers: ['h:1']}\nsession:\n  signing_keys: [short]\n", "x.yaml:4: session.signing_keys[0]: must be at least 32 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDNSEntries(t *testing.T) {
	good := "backends:\n  - name: lamp\n    dns: lamp.default.svc.cluster.local:80\n" +
		"session: {}\nmemcached:\n  dns: memcached.default.svc:11211\ndiscovery:\n  interval: 5s\n"
	c, err := Parse("k8s.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Backends[0].DNS != "lamp.default.svc.cluster.local:80" || c.Memcached.DNS != "memcached.default.svc:11211" || c.Discovery.Interval != 5*time.Second {
		t.Errorf("parsed %+v %+v", c.Backends, c.Memcached)
	}
	bad := "backends:\n  - name: a\n    url: http://h:1\n    dns: h:1\n  - name: b\n    dns: nohost\n    scheme: gopher\n"
	_, err = Parse("x.yaml", []byte(bad))
	for _, w := range []string{
		"x.yaml:4: backends[0].dns: give url or dns, not both",
		`x.yaml:6: backends[1].dns: "nohost" is not host:port`,
		`x.yaml:7: backends[1].scheme: "gopher" must be http or https`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in %v", w, err)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.yaml")
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want not-exist", err)
	}
}

// FuzzParse: no input may panic the loader, and an accepted config must
// satisfy the invariants the rest of the program relies on.
func FuzzParse(f *testing.F) {
	f.Add([]byte(issueSample))
	f.Add([]byte("backends: [{name: a, url: 'http://h', wieght: 2}]\n"))
	f.Add([]byte("session:\n  key_prefix: null\nmemcached: {replicas: all}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("backends:\n  - &b {name: a, url: 'http://h:1'}\n  - *b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			var ps *Problems
			if !errors.As(err, &ps) || len(ps.List) == 0 {
				t.Fatalf("error without problems: %v", err)
			}
			return
		}
		if len(c.Backends) == 0 {
			t.Fatal("accepted a config without backends")
		}
		if c.Session != nil && len(c.Memcached.Servers) == 0 && c.Memcached.DNS == "" {
			t.Fatal("accepted a session config without memcached servers")
		}
	})
}

func TestRequestBufferingAndAdminHosts(t *testing.T) {
	base := "backends: [{name: a, url: 'http://h'}]\n"
	c, err := Parse("x.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Server.RequestBuffering; !b.Enabled || b.MemoryBytes != 64<<10 || b.MemoryTotal != 64<<20 ||
		b.DiskDir != "" || b.DiskBytes != 128<<20 || b.DiskTotal != 1<<30 {
		t.Errorf("request_buffering defaults = %+v", b)
	}
	c, err = Parse("x.yaml", []byte(base+"server:\n  request_buffering:\n    enabled: false\n    disk_bytes: 0\n"+
		"admin:\n  hosts: [admin.example.com, 10.0.0.5, '[::1]']\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.RequestBuffering.Enabled || c.Server.RequestBuffering.DiskBytes != 0 || len(c.Admin.Hosts) != 3 {
		t.Errorf("parsed %+v %+v", c.Server.RequestBuffering, c.Admin)
	}
	bad := base + `server:
  request_buffering:
    memory_bytes: 0
    memory_total: -1
    disk_dir: /does/not/exist
    disk_bytes: 2048
    disk_total: 1024
admin:
  hosts: ["admin.example.com:9090", "http://x", ""]
`
	_, err = Parse("x.yaml", []byte(bad))
	for _, w := range []string{
		"x.yaml:4: server.request_buffering.memory_bytes: must be 1 or more",
		"x.yaml:5: server.request_buffering.memory_total: -1 is less than memory_bytes (0)",
		"x.yaml:6: server.request_buffering.disk_dir: stat /does/not/exist: no such file or directory",
		"x.yaml:8: server.request_buffering.disk_total: 1024 is less than disk_bytes (2048)",
		`x.yaml:10: admin.hosts[0]: "admin.example.com:9090" is not a host name or IP address (without port)`,
		`x.yaml:10: admin.hosts[1]: "http://x" is not`,
		`x.yaml:10: admin.hosts[2]: "" is not`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}

func TestStaleLockAfter(t *testing.T) {
	const base = "backends:\n  - name: lamp01\n    url: http://127.0.0.1:8081\nmemcached:\n  servers: [127.0.0.1:11211]\nsession:\n  handler: memcached\n"
	c, err := Parse("ok.yaml", []byte(base+"  stale_lock_after: 30s\n"))
	if err != nil || c.Session.StaleLockAfter != 30*time.Second {
		t.Fatalf("stale_lock_after: 30s: %v, %+v", err, c)
	}
	if c, err := Parse("ok.yaml", []byte(base)); err != nil || c.Session.StaleLockAfter != 0 {
		t.Fatalf("default: %v, want 0 (off)", err)
	}
	_, err = Parse("bad.yaml", []byte(base+"  stale_lock_after: 10ms\n"))
	if w := "bad.yaml:8: session.stale_lock_after: 10ms is out of range 1s-24h (0 = off)"; err == nil || !strings.Contains(err.Error(), w) {
		t.Errorf("err = %v, want %q", err, w)
	}
}

func TestSessionQueue(t *testing.T) {
	const base = "backends:\n  - name: lamp01\n    url: http://127.0.0.1:8081\nmemcached:\n  servers: [127.0.0.1:11211]\nsession:\n  handler: memcached\n"
	c, err := Parse("ok.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Session; s.MaxInFlight != 1 || s.MaxQueue != 32 || s.MaxWaiters != 10000 || s.QueueTimeout != 10*time.Second {
		t.Errorf("defaults: %d %d %d %v, want 1 32 10000 10s", s.MaxInFlight, s.MaxQueue, s.MaxWaiters, s.QueueTimeout)
	}
	c, err = Parse("ok.yaml", []byte(base+"  max_in_flight: 0\n  bypass_paths: [/static/, '*.css']\n  release_on_first_byte_paths: [/download/]\n"))
	if err != nil || c.Session.MaxInFlight != 0 || len(c.Session.BypassPaths) != 2 || c.Session.ReleaseOnFirstBytePaths[0] != "/download/" {
		t.Fatalf("queue off with paths: %v, %+v", err, c.Session)
	}
	_, err = Parse("bad.yaml", []byte(base+"  max_queue: 0\n  queue_timeout: 1ms\n  max_waiters: -1\n  max_in_flight: 1001\n  bypass_paths: [/ok/, static, '[']\n"))
	for _, w := range []string{
		"bad.yaml:8: session.max_queue: 0 is out of range 1-10000",
		"bad.yaml:9: session.queue_timeout: 1ms is out of range 10ms-5m",
		"bad.yaml:10: session.max_waiters: -1 is out of range",
		"bad.yaml:11: session.max_in_flight: 1001 is out of range 0-1000",
		`bad.yaml:12: session.bypass_paths[1]: "static" must be a path prefix`,
		`bad.yaml:12: session.bypass_paths[2]: "[" must be`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}

func TestAccessLog(t *testing.T) {
	base := "backends: [{name: a, url: 'http://h'}]\n"
	c, err := Parse("x.yaml", []byte(base))
	if err != nil || c.AccessLog != (AccessLog{Format: "combined"}) {
		t.Fatalf("default: %v %+v, want on, stdout, combined", err, c.AccessLog)
	}
	for _, off := range []string{"off", "false", "Off"} {
		if c, err := Parse("x.yaml", []byte(base+"access_log: "+off+"\n")); err != nil || !c.AccessLog.Off {
			t.Errorf("access_log: %s: %v %+v", off, err, c)
		}
	}
	dir := t.TempDir()
	c, err = Parse("x.yaml", []byte(base+"access_log:\n  path: "+dir+"/access.log\n  format: json\n"))
	if err != nil || c.AccessLog != (AccessLog{Path: dir + "/access.log", Format: "json"}) {
		t.Fatalf("mapping: %v %+v", err, c)
	}
	_, err = Parse("x.yaml", []byte(base+"access_log:\n  path: /does/not/exist/access.log\n  format: common\n"))
	for _, w := range []string{
		`x.yaml:3: access_log.path: directory of "/does/not/exist/access.log" does not exist`,
		`x.yaml:4: access_log.format: "common" must be combined or json`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	_, err = Parse("x.yaml", []byte(base+"access_log: yes please\n"))
	if w := `x.yaml:2: access_log: "yes please" must be off, or a mapping with path and format`; err == nil || !strings.Contains(err.Error(), w) {
		t.Errorf("err = %v, want %q", err, w)
	}
	_, err = Parse("x.yaml", []byte(base+"access_log:\n  fromat: json\n"))
	if w := `x.yaml:3: access_log.fromat: unknown key (did you mean "format"?)`; err == nil || !strings.Contains(err.Error(), w) {
		t.Errorf("err = %v, want %q", err, w)
	}
}

func TestSessionSerializerAndUserKey(t *testing.T) {
	const base = "backends:\n  - name: lamp01\n    url: http://127.0.0.1:8081\nmemcached:\n  servers: [127.0.0.1:11211]\nsession:\n  handler: memcached\n"
	c, err := Parse("ok.yaml", []byte(base))
	if err != nil || c.Session.Serializer != "php" || c.Session.UserKey != "" {
		t.Fatalf("defaults: %v, %+v; want serializer php, user_key off", err, c)
	}
	c, err = Parse("ok.yaml", []byte(base+"  serializer: php_binary\n  user_key: auth.user.id\n"))
	if err != nil || c.Session.Serializer != "php_binary" || c.Session.UserKey != "auth.user.id" {
		t.Fatalf("set: %v, %+v", err, c)
	}
	_, err = Parse("bad.yaml", []byte(base+"  serializer: igbinary\n  user_key: auth..id\n"))
	for _, w := range []string{
		`bad.yaml:8: session.serializer: "igbinary" must be php, php_serialize or php_binary`,
		`bad.yaml:9: session.user_key: "auth..id" must be empty or a dotted path`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}
