// Package config owns sessiongate's configuration file: its schema, its
// defaults, strict YAML loading, and validation that reports every problem as
// "FILE:LINE: key: what is wrong". The documented sample is config.yaml at the
// repository root; every field here appears there with its default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sessiongate/sessiongate/health"
	"github.com/sessiongate/sessiongate/sessionstore"
	"github.com/sessiongate/sessiongate/sessionstore/phpsession"
)

// Config is the whole configuration file.
type Config struct {
	// Listen is the client-facing address (host:port).
	Listen string `yaml:"listen"`
	// TLS, when set, serves clients over TLS with HTTP/2 enabled, from
	// certificate files or from certificates obtained over ACME.
	TLS *TLS `yaml:"tls"`
	// TrustedProxies lists CIDRs (or single IPs) whose X-Forwarded-* headers
	// are believed. From any other peer those headers are dropped.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Server holds client-side timeouts and limits.
	Server Server `yaml:"server"`
	// Upstream holds backend connection settings.
	Upstream Upstream `yaml:"upstream"`
	// Backends are the PHP servers, in order.
	Backends []Backend `yaml:"backends"`
	// Balancer chooses the backend selection policy.
	Balancer Balancer `yaml:"balancer"`
	// Health configures active and passive backend checks.
	Health Health `yaml:"health"`
	// Session enables the session layer; nil runs a plain balancer.
	Session *Session `yaml:"session"`
	// Memcached is the session pool; required when Session is set.
	Memcached Memcached `yaml:"memcached"`
	// Admin is the dashboard, status, metrics and admin API listener.
	Admin Admin `yaml:"admin"`
	// Discovery sets how often DNS-named backends and memcached are re-resolved.
	Discovery Discovery `yaml:"discovery"`
	// AccessLog is the one-line-per-request log; `access_log: off` disables it.
	AccessLog AccessLog `yaml:"access_log"`
	// ProxyProtocol reads the client address from a PROXY protocol header
	// (v1 or v2) sent by a TCP balancer in front.
	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`
	// Limits are the per-client request rate and connection limits.
	Limits Limits `yaml:"limits"`

	file  string
	lines map[string]int
}

// TLS is the client listener's TLS: certificate and key files, or ACME.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// HTTPListen, when set, is a plain-HTTP listener (e.g. ":80") that
	// answers ACME HTTP-01 challenges and redirects every other request to
	// HTTPS with 308.
	HTTPListen string `yaml:"http_listen"`
	// ACME, instead of Cert and Key, obtains and renews the certificates.
	ACME *ACME `yaml:"acme"`
}

// ACME obtains and renews the client listener's certificates from an ACME
// CA (Let's Encrypt by default).
type ACME struct {
	// Domains are the names the certificate covers (no wildcards: those
	// need DNS-01).
	Domains []string `yaml:"domains"`
	// Email is the ACME account's contact for expiry notices; optional.
	Email string `yaml:"email"`
	// CA is the ACME directory URL.
	CA string `yaml:"ca"`
	// CARoot is a PEM file of the roots to trust for the CA's own HTTPS
	// (a private CA); empty trusts the system roots.
	CARoot string `yaml:"ca_root"`
	// Storage is the directory for account keys, certificates and locks;
	// instances sharing it (on a shared filesystem) share the certificates.
	Storage string `yaml:"storage"`
	// Challenges are the ACME challenge types to use: http-01 (answered on
	// HTTPListen) and tls-alpn-01 (answered on the TLS listener).
	Challenges []string `yaml:"challenges"`
	// Profile is the CA's certificate profile (Let's Encrypt: classic,
	// tlsserver, shortlived); empty is the CA's default.
	Profile string `yaml:"profile"`
	// RenewInterval is how often certificates are checked for renewal.
	RenewInterval time.Duration `yaml:"renew_interval"`
}

// LetsEncrypt is the default ACME directory: Let's Encrypt's production CA.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

func (a *ACME) setDefaults() {
	*a = ACME{
		CA:            LetsEncrypt,
		Storage:       "/var/lib/sessiongate/acme",
		Challenges:    []string{"http-01", "tls-alpn-01"},
		RenewInterval: 10 * time.Minute,
	}
}

// ProxyProtocol configures the PROXY protocol on the client listener.
type ProxyProtocol struct {
	// Enabled requires every client connection to open with a PROXY
	// protocol header, v1 or v2, whose source address becomes the client
	// address everywhere.
	Enabled bool `yaml:"enabled"`
	// Trusted lists the CIDRs (or single IPs) allowed to send the header;
	// a connection from anywhere else is closed unread. Required when
	// Enabled.
	Trusted []string `yaml:"trusted"`
	// HeaderTimeout bounds the wait for the header.
	HeaderTimeout time.Duration `yaml:"header_timeout"`
}

// Limits are per-client limits, keyed on the client address (after the
// PROXY protocol and trusted_proxies), IPv6 addresses grouped by /64.
type Limits struct {
	// RequestsPerSecond is each client's sustained request rate; 0 = off.
	RequestsPerSecond int `yaml:"requests_per_second"`
	// Burst is how many requests beyond the rate a client may send at
	// once; 0 = requests_per_second.
	Burst int `yaml:"burst"`
	// ConnectionsPerClient bounds each client's open connections; 0 = off.
	ConnectionsPerClient int `yaml:"connections_per_client"`
	// Exempt lists CIDRs (or single IPs) that no per-client limit applies to.
	Exempt []string `yaml:"exempt"`
}

// Server holds client-facing timeouts and size limits.
type Server struct {
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds request line plus headers; larger gets 431.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxBodyBytes bounds request bodies (413 beyond); 0 means unlimited.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxConnections bounds concurrent client connections; 0 means unlimited.
	MaxConnections int `yaml:"max_connections"`
	// UnderscoresInHeaders forwards request header names holding '_';
	// false (the default) drops them, as nginx does.
	UnderscoresInHeaders bool `yaml:"underscores_in_headers"`
	// ShutdownGrace is how long in-flight requests may run after SIGTERM.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// Engine serves HTTP/1.x, plain and over TLS, with "h1" (sessiongate's
	// own server) or "net/http" (the standard library's). HTTP/2 is always
	// net/http's.
	Engine string `yaml:"engine"`
	// Sockio reads and writes sockets with direct system calls on Linux
	// (internal/sockio), client side under h1, backend and memcached side;
	// false uses net.Conn's own I/O.
	Sockio bool `yaml:"sockio"`
	// RequestBuffering reads request bodies whole before a backend is picked.
	RequestBuffering RequestBuffering `yaml:"request_buffering"`
}

// RequestBuffering is nginx's proxy_request_buffering: each request body is
// read whole (in memory, or in a temp file) before a backend is picked, so a
// client that sends its body slowly never holds a PHP worker. The backend
// gets the body with a Content-Length, also when the client sent it chunked.
type RequestBuffering struct {
	// Enabled turns buffering on; off, bodies stream at the client's pace.
	Enabled bool `yaml:"enabled"`
	// MemoryBytes is the largest body held in memory.
	MemoryBytes int64 `yaml:"memory_bytes"`
	// MemoryTotal bounds the memory of all bodies being buffered together;
	// a body that finds it taken goes to disk.
	MemoryTotal int64 `yaml:"memory_total"`
	// DiskDir holds the temp files, unlinked as soon as they are created;
	// "" is the system temp directory ($TMPDIR or /tmp).
	DiskDir string `yaml:"disk_dir"`
	// DiskBytes is the largest body buffered at all: larger gets 413. 0
	// buffers in memory only (bodies over memory_bytes get 413).
	DiskBytes int64 `yaml:"disk_bytes"`
	// DiskTotal bounds the disk of all bodies being buffered together; a
	// body that finds it taken gets 503 with Retry-After.
	DiskTotal int64 `yaml:"disk_total"`
}

// Upstream holds settings for connections to backends.
type Upstream struct {
	DialTimeout     time.Duration `yaml:"dial_timeout"`
	ResponseTimeout time.Duration `yaml:"response_timeout"`
	// MaxIdleConns is the keep-alive pool size per backend.
	MaxIdleConns int `yaml:"max_idle_conns"`
	// Retries is how many other backends a failed request may try.
	Retries int `yaml:"retries"`
}

// Backend is one PHP server.
type Backend struct {
	Name string `yaml:"name"`
	URL  string `yaml:"url"`
	// DNS, instead of URL, names host:port whose addresses are each a
	// backend (e.g. a Kubernetes headless service), re-resolved every
	// discovery.interval. Each becomes "<name>-<ip>" with URL
	// <scheme>://<ip>:<port>.
	DNS    string `yaml:"dns"`
	Scheme string `yaml:"scheme"` // for DNS backends: http (default) or https
	Weight int    `yaml:"weight"`
}

// Balancer selects the backend selection policy.
type Balancer struct {
	Policy string `yaml:"policy"`
}

// Health configures backend checks.
type Health struct {
	Path         string        `yaml:"path"`
	Interval     time.Duration `yaml:"interval"`
	DownInterval time.Duration `yaml:"down_interval"`
	Timeout      time.Duration `yaml:"timeout"`
	Rise         int           `yaml:"rise"`
	Fall         int           `yaml:"fall"`
	ExpectStatus []int         `yaml:"expect_status"`
	ExpectBody   string        `yaml:"expect_body"`
	Host         string        `yaml:"host"`
	Passive      Passive       `yaml:"passive"`
	// SlowStart is how long a backend that comes back (up again, or
	// enabled after maintenance) takes to ramp up to its full share of
	// new requests; 0 = at once.
	SlowStart time.Duration `yaml:"slow_start"`
}

// Passive configures taking a backend out after a burst of failures.
type Passive struct {
	Failures int           `yaml:"failures"`
	Window   time.Duration `yaml:"window"`
	Cooldown time.Duration `yaml:"cooldown"`
}

// Session configures the session layer.
type Session struct {
	Cookie    string  `yaml:"cookie"`
	Handler   string  `yaml:"handler"`
	KeyPrefix *string `yaml:"key_prefix"`
	// Lifetime is the store TTL, equal to PHP's session.gc_maxlifetime.
	Lifetime time.Duration `yaml:"lifetime"`
	Strict   bool          `yaml:"strict"`
	// CookieLifetime > 0 makes the session cookie persistent and renewed.
	CookieLifetime time.Duration `yaml:"cookie_lifetime"`
	RenewAfter     time.Duration `yaml:"renew_after"`
	Secure         bool          `yaml:"secure"`
	HTTPOnly       bool          `yaml:"httponly"`
	SameSite       string        `yaml:"samesite"`
	Path           string        `yaml:"path"`
	Domain         string        `yaml:"domain"`
	// SigningKeys sign the bookkeeping cookie: the first signs, all verify.
	SigningKeys  []string      `yaml:"signing_keys"`
	MarkerCookie string        `yaml:"marker_cookie"`
	VerifyTTL    time.Duration `yaml:"verify_ttl"`
	// StaleLockAfter > 0 releases session locks found held, unchanged, this
	// long with no request of the session in flight here; 0 = off.
	StaleLockAfter time.Duration `yaml:"stale_lock_after"`
	// The edge queue: at most MaxInFlight requests of a session are at PHP
	// at once from this instance (0 = off); the others wait here, in order,
	// up to MaxQueue per session and MaxWaiters in all, for QueueTimeout.
	MaxInFlight  int           `yaml:"max_in_flight"`
	MaxQueue     int           `yaml:"max_queue"`
	MaxWaiters   int           `yaml:"max_waiters"`
	QueueTimeout time.Duration `yaml:"queue_timeout"`
	// BypassPaths never wait (prefixes or globs); ReleaseOnFirstBytePaths
	// free their slot when the response starts, as server-sent events do.
	BypassPaths             []string `yaml:"bypass_paths"`
	ReleaseOnFirstBytePaths []string `yaml:"release_on_first_byte_paths"`
	// Serializer is PHP's session.serialize_handler, for reading session data
	// (php, php_serialize or php_binary).
	Serializer string `yaml:"serializer"`
	// UserKey is the dotted path of the user id in the decoded session data
	// ("user", "auth.user.id"); empty = no per-user views.
	UserKey string `yaml:"user_key"`
}

// Memcached is the session pool.
type Memcached struct {
	Servers []string `yaml:"servers"`
	// DNS names host:port whose addresses are added to Servers, re-resolved
	// every discovery.interval.
	DNS      string        `yaml:"dns"`
	Timeout  time.Duration `yaml:"timeout"`
	Replicas Replicas      `yaml:"replicas"`
	// RestartHold is how long requests with a session wait for a node that
	// lost its connection or hangs (0: never wait).
	RestartHold time.Duration `yaml:"restart_hold"`
	// ScanInterval is how often the pool's sessions are counted (lru_crawler
	// metadump on each node; 0: only on POST /api/pool/scan).
	ScanInterval time.Duration `yaml:"scan_interval"`
	// ResyncRate bounds the sessions per second copied onto a node that
	// restarted empty or joined (0: no resync).
	ResyncRate int `yaml:"resync_rate"`
}

// Discovery configures DNS re-resolution.
type Discovery struct {
	Interval time.Duration `yaml:"interval"`
}

// Admin is the admin listener.
type Admin struct {
	Listen string `yaml:"listen"`
	Token  string `yaml:"token"`
	// Hosts are further names (or IPs) the admin listener answers to, e.g.
	// the name of a reverse proxy in front of it; without a port, as the
	// port is not compared. Its own address and loopback names are always
	// accepted; any other Host gets 421, so that a DNS-rebinding page
	// cannot read the admin listener through a visitor's browser.
	Hosts []string `yaml:"hosts"`
}

// AccessLog configures the access log. It is written as a mapping of the
// keys below or as the single value off.
type AccessLog struct {
	// Off is set by `access_log: off`.
	Off bool `yaml:"-"`
	// Path is the file to append to ("" = stdout); reopened on SIGUSR1.
	Path string `yaml:"path"`
	// Format is combined (Apache/nginx combined log format) or json.
	Format string `yaml:"format"`
}

func (a *AccessLog) parseScalar(s string) error {
	switch strings.ToLower(s) {
	case "off", "false":
		a.Off = true
	case "on", "true":
		a.Off = false
	default:
		return fmt.Errorf("%q must be off, or a mapping with path and format", s)
	}
	return nil
}

// Replicas is how many nodes hold each session: 0 means all of them.
type Replicas int

func (r *Replicas) parseScalar(s string) error {
	switch s {
	case "all":
		*r = 0
	case "1":
		*r = 1
	default:
		return fmt.Errorf("%q must be \"all\" (every node holds every session) or 1 (sharded)", s)
	}
	return nil
}

// String renders Replicas as written in the file.
func (r Replicas) String() string {
	if r == 0 {
		return "all"
	}
	return fmt.Sprint(int(r))
}

// Default returns the configuration used for every key the file omits.
func Default() *Config {
	return &Config{
		Listen: "127.0.0.1:8080",
		Server: Server{
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       60 * time.Second,
			WriteTimeout:      120 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ShutdownGrace:     15 * time.Second,
			Engine:            "h1",
			Sockio:            true,
			RequestBuffering: RequestBuffering{Enabled: true, MemoryBytes: 64 << 10, MemoryTotal: 64 << 20,
				DiskBytes: 128 << 20, DiskTotal: 1 << 30},
		},
		Upstream: Upstream{
			DialTimeout:     2 * time.Second,
			ResponseTimeout: 60 * time.Second,
			MaxIdleConns:    64,
			Retries:         2,
		},
		Balancer: Balancer{Policy: "round_robin"},
		// Defaults the health checker and the session store also apply
		// live in those packages; the config names them.
		Health: Health{
			Interval: health.DefaultInterval,
			Timeout:  health.DefaultTimeout,
			Rise:     health.DefaultRise,
			Fall:     health.DefaultFall,
			Passive: Passive{Failures: health.DefaultPassiveFailures, Window: health.DefaultPassiveWindow,
				Cooldown: health.DefaultPassiveCooldown},
		},
		Memcached: Memcached{Timeout: sessionstore.DefaultTimeout, RestartHold: sessionstore.DefaultRestartHold,
			ScanInterval: 30 * time.Second, ResyncRate: sessionstore.DefaultResyncRate},
		Admin:         Admin{Listen: "127.0.0.1:9090"},
		Discovery:     Discovery{Interval: 10 * time.Second},
		AccessLog:     AccessLog{Format: "combined"},
		ProxyProtocol: ProxyProtocol{HeaderTimeout: 5 * time.Second},
	}
}

func (s *Session) setDefaults() {
	*s = Session{
		Cookie:       "PHPSESSID",
		Handler:      sessionstore.HandlerMemcache,
		Lifetime:     sessionstore.DefaultLifetime,
		Strict:       true,
		RenewAfter:   time.Minute,
		Path:         "/",
		MarkerCookie: "SGRENEW",
		VerifyTTL:    sessionstore.DefaultVerifyTTL,
		MaxInFlight:  1,
		MaxQueue:     32,
		MaxWaiters:   10000,
		QueueTimeout: 10 * time.Second,
		Serializer:   phpsession.PHP,
	}
}

// Load reads, decodes and validates the file at path. On failure the error
// is a *Problems listing every problem found.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse decodes and validates data; file names the source in messages.
func Parse(file string, data []byte) (*Config, error) {
	c := Default()
	c.file = file
	c.lines = map[string]int{}
	probs := &Problems{}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			probs.add(file, 1, "", "the file is empty")
		} else {
			probs.add(file, yamlErrLine(err), "", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return nil, probs
	}
	d := &decoder{file: file, lines: c.lines, problems: probs}
	if len(root.Content) > 0 {
		d.decode(root.Content[0], reflect.ValueOf(c).Elem(), "")
	}
	// Validate even when some values did not decode, so one run reports
	// every problem. A key that failed to decode holds its default, not what
	// the file says: validation problems about it (or below it) are dropped.
	undecoded := slices.Clone(probs.List)
	c.validate(probs)
	probs.List = slices.DeleteFunc(probs.List[len(undecoded):], func(p Problem) bool {
		return slices.ContainsFunc(undecoded, func(u Problem) bool { return u.Key != "" && covers(u.Key, p.Key) })
	})
	probs.List = append(undecoded, probs.List...)
	if len(probs.List) > 0 {
		probs.sort()
		return nil, probs
	}
	return c, nil
}

// covers reports whether key is parent or the same as sub ("backends"
// covers "backends[1].url").
func covers(key, sub string) bool {
	rest, ok := strings.CutPrefix(sub, key)
	return ok && (rest == "" || rest[0] == '.' || rest[0] == '[')
}

// File is the path the configuration was loaded from.
func (c *Config) File() string { return c.file }

// Line is the line of key (a dotted path like "backends[1].url") in the
// file, or 0 if the key was not written there.
func (c *Config) Line(key string) int { return c.lines[key] }

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (p Problem) String() string {
	if p.Key == "" {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, p.Key, p.Msg)
}

// Problems is every problem found in one file; it is the error Load returns.
type Problems struct {
	List []Problem
}

func (ps *Problems) add(file string, line int, key, msg string) {
	ps.List = append(ps.List, Problem{File: file, Line: line, Key: key, Msg: msg})
}

func (ps *Problems) sort() {
	sort.SliceStable(ps.List, func(i, j int) bool { return ps.List[i].Line < ps.List[j].Line })
}

// Error renders one problem per line.
func (ps *Problems) Error() string {
	lines := make([]string, len(ps.List))
	for i, p := range ps.List {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// yamlErrLine pulls the line out of a yaml.v3 syntax error ("yaml: line 3: ...").
func yamlErrLine(err error) int {
	var line int
	if _, e := fmt.Sscanf(err.Error(), "yaml: line %d:", &line); e == nil {
		return line
	}
	return 1
}
