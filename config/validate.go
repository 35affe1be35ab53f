package config

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sessiongate/sessiongate/balancer"
	"github.com/sessiongate/sessiongate/sessionstore/phpsession"
)

// validate appends every semantic problem to ps. Each problem names the key
// and the line it was written on (or the line of its parent section).
func (c *Config) validate(ps *Problems) {
	bad := func(key, format string, args ...any) {
		ps.add(c.file, c.lineOf(key), key, fmt.Sprintf(format, args...))
	}
	checkAddr := func(key, addr string) {
		if _, port, err := net.SplitHostPort(addr); err != nil {
			bad(key, "%q is not host:port", addr)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			bad(key, "port %q is out of range 0-65535", port)
		}
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be greater than 0")
		}
	}
	inRange := func(key string, v, lo, hi int) {
		if v < lo || v > hi {
			bad(key, "%d is out of range %d-%d", v, lo, hi)
		}
	}

	checkAddr("listen", c.Listen)
	if t := c.TLS; t != nil {
		if t.ACME != nil {
			if t.Cert != "" || t.Key != "" {
				bad("tls.acme", "give tls.cert and tls.key, or tls.acme, not both")
			}
			c.validateACME(bad)
		} else {
			for key, f := range map[string]string{"tls.cert": t.Cert, "tls.key": t.Key} {
				if f == "" {
					bad(key, "is required when tls is set (or tls.acme)")
				} else if _, err := os.Stat(f); err != nil {
					bad(key, "cannot read %q: %v", f, err)
				}
			}
		}
		if t.HTTPListen != "" {
			checkAddr("tls.http_listen", t.HTTPListen)
			if (t.HTTPListen == c.Listen || t.HTTPListen == c.Admin.Listen) && !strings.HasSuffix(t.HTTPListen, ":0") {
				bad("tls.http_listen", "must differ from listen and admin.listen")
			}
		}
	}
	for i, p := range c.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			bad(fmt.Sprintf("trusted_proxies[%d]", i), "%q is not an IP address or CIDR", p)
		}
	}

	s := c.Server
	positive("server.read_header_timeout", s.ReadHeaderTimeout)
	positive("server.read_timeout", s.ReadTimeout)
	positive("server.write_timeout", s.WriteTimeout)
	positive("server.idle_timeout", s.IdleTimeout)
	positive("server.shutdown_grace", s.ShutdownGrace)
	inRange("server.max_header_bytes", s.MaxHeaderBytes, 4<<10, 1<<20)
	if s.MaxBodyBytes < 0 {
		bad("server.max_body_bytes", "must be 0 (unlimited) or more")
	}
	if s.MaxConnections < 0 {
		bad("server.max_connections", "must be 0 (unlimited) or more")
	}
	if s.Engine != "h1" && s.Engine != "net/http" {
		bad("server.engine", "%q is not h1 or net/http", s.Engine)
	}
	c.validateBuffering(bad)

	u := c.Upstream
	positive("upstream.dial_timeout", u.DialTimeout)
	positive("upstream.response_timeout", u.ResponseTimeout)
	inRange("upstream.max_idle_conns", u.MaxIdleConns, 0, 100000)
	inRange("upstream.retries", u.Retries, 0, 10)

	if len(c.Backends) == 0 {
		bad("backends", "at least one backend is required")
	}
	names := map[string]int{}
	for i, b := range c.Backends {
		key := fmt.Sprintf("backends[%d]", i)
		if b.Name == "" {
			bad(key+".name", "is required")
		} else if j, dup := names[b.Name]; dup {
			bad(key+".name", "%q is already used by backends[%d]", b.Name, j)
		} else {
			names[b.Name] = i
		}
		switch {
		case b.URL != "" && b.DNS != "":
			bad(key+".dns", "give url or dns, not both")
		case b.DNS != "":
			checkAddr(key+".dns", b.DNS)
			if b.Scheme != "" && b.Scheme != "http" && b.Scheme != "https" {
				bad(key+".scheme", "%q must be http or https", b.Scheme)
			}
		case b.URL == "":
			bad(key+".url", "is required (or dns)")
		default:
			if pu, err := url.Parse(b.URL); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				bad(key+".url", "%q is not an http:// or https:// URL with a host", b.URL)
			} else if pu.RawQuery != "" || pu.Fragment != "" || pu.User != nil {
				bad(key+".url", "%q must not carry a query, fragment or user info", b.URL)
			}
			if b.Scheme != "" {
				bad(key+".scheme", "applies to dns backends only; put the scheme in url")
			}
		}
		if c.wasSet(key+".weight") || b.Weight != 0 {
			inRange(key+".weight", b.Weight, 1, 1000)
		}
	}
	if !slices.Contains(balancer.Policies(), c.Balancer.Policy) {
		bad("balancer.policy", "%q is not one of %s", c.Balancer.Policy, strings.Join(balancer.Policies(), ", "))
	}

	h := c.Health
	if h.Path != "" && !strings.HasPrefix(h.Path, "/") {
		bad("health.path", "%q must start with /", h.Path)
	}
	positive("health.interval", h.Interval)
	positive("health.timeout", h.Timeout)
	if h.DownInterval < 0 {
		bad("health.down_interval", "must be 0 (half of interval) or more")
	}
	inRange("health.rise", h.Rise, 1, 100)
	inRange("health.fall", h.Fall, 1, 100)
	for i, st := range h.ExpectStatus {
		inRange(fmt.Sprintf("health.expect_status[%d]", i), st, 100, 599)
	}
	inRange("health.passive.failures", h.Passive.Failures, 0, 10000)
	if h.Passive.Failures > 0 {
		positive("health.passive.window", h.Passive.Window)
		positive("health.passive.cooldown", h.Passive.Cooldown)
	}

	if c.Session != nil {
		c.validateSession(bad, positive)
		if len(c.Memcached.Servers) == 0 && c.Memcached.DNS == "" {
			bad("memcached.servers", "at least one server (or memcached.dns) is required when session is set")
		}
	}
	seen := map[string]int{}
	for i, srv := range c.Memcached.Servers {
		key := fmt.Sprintf("memcached.servers[%d]", i)
		checkAddr(key, srv)
		if j, dup := seen[srv]; dup {
			bad(key, "%q is already listed as memcached.servers[%d]", srv, j)
		}
		seen[srv] = i
	}
	if c.Memcached.DNS != "" {
		checkAddr("memcached.dns", c.Memcached.DNS)
	}
	if d := c.Discovery.Interval; d < time.Second || d > time.Hour {
		bad("discovery.interval", "%v is out of range 1s-1h", d)
	}
	if t := c.Memcached.Timeout; t < time.Millisecond || t > 10*time.Second {
		bad("memcached.timeout", "%v is out of range 1ms-10s", t)
	}
	if h := c.Memcached.RestartHold; h < 0 || h > 30*time.Second {
		bad("memcached.restart_hold", "%v is out of range 0-30s", h)
	}
	if d := c.Memcached.ScanInterval; d != 0 && (d < time.Second || d > 24*time.Hour) {
		bad("memcached.scan_interval", "%v is out of range 1s-24h (0 = off)", d)
	}
	if r := c.Memcached.ResyncRate; r < 0 || r > 1_000_000 {
		bad("memcached.resync_rate", "%d is out of range 0-1000000", r)
	}

	if c.Admin.Listen != "" {
		checkAddr("admin.listen", c.Admin.Listen)
		if c.Admin.Listen == c.Listen && !strings.HasSuffix(c.Listen, ":0") { // :0 picks two free ports
			bad("admin.listen", "must differ from listen")
		}
	}
	for i, h := range c.Admin.Hosts {
		if !validHostName(h) {
			bad(fmt.Sprintf("admin.hosts[%d]", i), "%q is not a host name or IP address (without port)", h)
		}
	}
	c.validateFrontDoor(bad)
	if a := c.AccessLog; !a.Off {
		if a.Format != "combined" && a.Format != "json" {
			bad("access_log.format", "%q must be combined or json", a.Format)
		}
		if a.Path != "" {
			if st, err := os.Stat(filepath.Dir(a.Path)); err != nil || !st.IsDir() {
				bad("access_log.path", "directory of %q does not exist", a.Path)
			}
		}
	}
}

// validateFrontDoor checks proxy_protocol, limits and health.slow_start.
func (c *Config) validateFrontDoor(bad func(key, format string, args ...any)) {
	cidrs := func(key string, list []string) {
		for i, p := range list {
			if _, err := ParsePrefix(p); err != nil {
				bad(fmt.Sprintf("%s[%d]", key, i), "%q is not an IP address or CIDR", p)
			}
		}
	}
	pp := c.ProxyProtocol
	cidrs("proxy_protocol.trusted", pp.Trusted)
	if pp.Enabled && len(pp.Trusted) == 0 {
		bad("proxy_protocol.trusted", "is required when proxy_protocol.enabled is true: list the balancers that send the header")
	}
	if t := pp.HeaderTimeout; t < time.Millisecond || t > time.Minute {
		bad("proxy_protocol.header_timeout", "%v is out of range 1ms-1m", t)
	}
	l := c.Limits
	if l.RequestsPerSecond < 0 || l.RequestsPerSecond > 1000000 {
		bad("limits.requests_per_second", "%d is out of range 0-1000000 (0 = off)", l.RequestsPerSecond)
	}
	if l.Burst < 0 || l.Burst > 1000000 {
		bad("limits.burst", "%d is out of range 0-1000000 (0 = requests_per_second)", l.Burst)
	} else if l.Burst > 0 && l.RequestsPerSecond == 0 {
		bad("limits.burst", "applies only with limits.requests_per_second")
	}
	if l.ConnectionsPerClient < 0 || l.ConnectionsPerClient > 1000000 {
		bad("limits.connections_per_client", "%d is out of range 0-1000000 (0 = off)", l.ConnectionsPerClient)
	}
	cidrs("limits.exempt", l.Exempt)
	if s := c.Health.SlowStart; s < 0 || s > time.Hour {
		bad("health.slow_start", "%v is out of range 0-1h (0 = off)", s)
	}
}

func (c *Config) validateACME(bad func(string, string, ...any)) {
	a := c.TLS.ACME
	const k = "tls.acme."
	if len(a.Domains) == 0 {
		bad(k+"domains", "at least one domain is required")
	}
	seen := map[string]int{}
	for i, d := range a.Domains {
		key := fmt.Sprintf("%sdomains[%d]", k, i)
		switch _, err := netip.ParseAddr(strings.Trim(d, "[]")); {
		case strings.Contains(d, "*"):
			bad(key, "%q: wildcard names need the DNS-01 challenge, which sessiongate does not do", d)
		case err == nil || !validHostName(d) || !strings.Contains(strings.Trim(d, "."), "."):
			bad(key, "%q is not a fully qualified DNS name", d)
		}
		if j, dup := seen[strings.ToLower(d)]; dup {
			bad(key, "%q is already listed as %sdomains[%d]", d, k, j)
		}
		seen[strings.ToLower(d)] = i
	}
	if a.Email != "" {
		if _, err := mail.ParseAddress(a.Email); err != nil || strings.ContainsAny(a.Email, "<> ") {
			bad(k+"email", "%q is not an e-mail address", a.Email)
		}
	}
	if u, err := url.Parse(a.CA); err != nil || u.Scheme != "https" || u.Host == "" {
		bad(k+"ca", "%q is not an https:// ACME directory URL", a.CA)
	}
	if a.CARoot != "" {
		if b, err := os.ReadFile(a.CARoot); err != nil {
			bad(k+"ca_root", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(b) {
			bad(k+"ca_root", "%q holds no PEM certificate", a.CARoot)
		}
	}
	if a.Storage == "" {
		bad(k+"storage", "is required")
	} else if st, err := os.Stat(a.Storage); err == nil && !st.IsDir() {
		bad(k+"storage", "%q is not a directory", a.Storage) // a missing one is made on start
	}
	if len(a.Challenges) == 0 {
		bad(k+"challenges", "at least one of http-01 and tls-alpn-01 is required")
	}
	kinds := map[string]int{}
	for i, ch := range a.Challenges {
		key := fmt.Sprintf("%schallenges[%d]", k, i)
		if ch != "http-01" && ch != "tls-alpn-01" {
			bad(key, "%q must be http-01 or tls-alpn-01", ch)
		} else if j, dup := kinds[ch]; dup {
			bad(key, "%q is already listed as %schallenges[%d]", ch, k, j)
		}
		kinds[ch] = i
	}
	if i, ok := kinds["http-01"]; ok && c.TLS.HTTPListen == "" {
		bad(fmt.Sprintf("%schallenges[%d]", k, i), "http-01 is answered on tls.http_listen, which is not set (e.g. \":80\"); set it or list only tls-alpn-01")
	}
	if d := a.RenewInterval; d < time.Second || d > 24*time.Hour {
		bad(k+"renew_interval", "%v is out of range 1s-24h", d)
	}
}

// validHostName accepts a DNS name or an IP address (IPv6 with or without
// brackets), without a port.
func validHostName(h string) bool {
	if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func (c *Config) validateBuffering(bad func(string, string, ...any)) {
	b := c.Server.RequestBuffering
	const k = "server.request_buffering."
	if b.MemoryBytes < 1 {
		bad(k+"memory_bytes", "must be 1 or more")
	}
	if b.MemoryTotal < b.MemoryBytes {
		bad(k+"memory_total", "%d is less than memory_bytes (%d)", b.MemoryTotal, b.MemoryBytes)
	}
	if b.DiskBytes < 0 {
		bad(k+"disk_bytes", "must be 0 (memory only) or more")
	} else if b.DiskTotal < b.DiskBytes {
		bad(k+"disk_total", "%d is less than disk_bytes (%d)", b.DiskTotal, b.DiskBytes)
	}
	if b.Enabled && b.DiskBytes > 0 && b.DiskDir != "" {
		if st, err := os.Stat(b.DiskDir); err != nil {
			bad(k+"disk_dir", "%v", err)
		} else if !st.IsDir() {
			bad(k+"disk_dir", "%q is not a directory", b.DiskDir)
		}
	}
}

func (c *Config) validateSession(bad func(string, string, ...any), positive func(string, time.Duration)) {
	s := c.Session
	if !validCookieName(s.Cookie) {
		bad("session.cookie", "%q is not a valid cookie name", s.Cookie)
	}
	if s.Handler != "memcache" && s.Handler != "memcached" {
		bad("session.handler", "%q must be memcache or memcached", s.Handler)
	}
	if p := s.KeyPrefix; p != nil && strings.ContainsFunc(*p, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		bad("session.key_prefix", "must not contain spaces or control characters")
	}
	positive("session.lifetime", s.Lifetime)
	if s.Lifetime > 30*24*time.Hour {
		bad("session.lifetime", "%v is longer than memcached's 30-day relative expiry", s.Lifetime)
	}
	if s.CookieLifetime < 0 {
		bad("session.cookie_lifetime", "must be 0 (browser-session cookie) or more")
	}
	if s.CookieLifetime > 0 {
		positive("session.renew_after", s.RenewAfter)
	}
	switch strings.ToLower(s.SameSite) {
	case "", "lax", "strict", "none":
	default:
		bad("session.samesite", "%q must be Lax, Strict, None or empty", s.SameSite)
	}
	if strings.EqualFold(s.SameSite, "none") && !s.Secure {
		bad("session.samesite", "None requires secure: true (browsers reject it otherwise)")
	}
	if s.Path != "" && !strings.HasPrefix(s.Path, "/") {
		bad("session.path", "%q must start with /", s.Path)
	}
	if !validCookieName(s.MarkerCookie) || s.MarkerCookie == s.Cookie {
		bad("session.marker_cookie", "%q must be a valid cookie name different from session.cookie", s.MarkerCookie)
	}
	for i, k := range s.SigningKeys {
		if len(k) < 32 {
			bad(fmt.Sprintf("session.signing_keys[%d]", i), "must be at least 32 bytes (e.g. openssl rand -hex 32)")
		}
	}
	if s.VerifyTTL < 0 || s.VerifyTTL > time.Minute {
		bad("session.verify_ttl", "%v is out of range 0-1m", s.VerifyTTL)
	}
	if s.StaleLockAfter != 0 && (s.StaleLockAfter < time.Second || s.StaleLockAfter > 24*time.Hour) {
		bad("session.stale_lock_after", "%v is out of range 1s-24h (0 = off)", s.StaleLockAfter)
	}
	if s.MaxInFlight < 0 || s.MaxInFlight > 1000 {
		bad("session.max_in_flight", "%d is out of range 0-1000 (0 = no queue)", s.MaxInFlight)
	}
	if s.MaxQueue < 1 || s.MaxQueue > 10000 {
		bad("session.max_queue", "%d is out of range 1-10000", s.MaxQueue)
	}
	if s.MaxWaiters < 1 || s.MaxWaiters > 1000000 {
		bad("session.max_waiters", "%d is out of range 1-1000000", s.MaxWaiters)
	}
	if s.QueueTimeout < 10*time.Millisecond || s.QueueTimeout > 5*time.Minute {
		bad("session.queue_timeout", "%v is out of range 10ms-5m", s.QueueTimeout)
	}
	for _, k := range []struct {
		key  string
		pats []string
	}{{"session.bypass_paths", s.BypassPaths}, {"session.release_on_first_byte_paths", s.ReleaseOnFirstBytePaths}} {
		for i, p := range k.pats {
			if !validPathPattern(p) {
				bad(fmt.Sprintf("%s[%d]", k.key, i), "%q must be a path prefix starting with / or a glob such as *.css", p)
			}
		}
	}
	switch s.Serializer {
	case phpsession.PHP, phpsession.PHPSerialize, phpsession.PHPBinary:
	default:
		bad("session.serializer", "%q must be php, php_serialize or php_binary (PHP's session.serialize_handler)", s.Serializer)
	}
	if !validUserKey(s.UserKey) {
		bad("session.user_key", "%q must be empty or a dotted path such as user or auth.user.id", s.UserKey)
	}
}

// validUserKey: empty, or dot-separated non-empty segments without spaces or
// control characters, at most 256 bytes.
func validUserKey(k string) bool {
	if k == "" {
		return true
	}
	if len(k) > 256 || strings.ContainsFunc(k, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return false
	}
	for seg := range strings.SplitSeq(k, ".") {
		if seg == "" {
			return false
		}
	}
	return true
}

// lineOf finds the line of key, or of its nearest parent written in the file.
func (c *Config) lineOf(key string) int {
	for k := key; k != ""; {
		if l, ok := c.lines[k]; ok {
			return l
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return 1
}

func (c *Config) wasSet(key string) bool { _, ok := c.lines[key]; return ok }

// ParsePrefix accepts a CIDR or a single IP (as a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// validCookieName reports whether s is an RFC 6265 token.
func validCookieName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return false
		}
	}
	return true
}

// validPathPattern reports whether p is a path prefix ("/static/") or a
// well-formed glob (path.Match syntax: "*.css", "/img/*.png").
func validPathPattern(p string) bool {
	if !strings.ContainsAny(p, "*?[") {
		return strings.HasPrefix(p, "/")
	}
	_, err := path.Match(p, "")
	return err == nil
}
