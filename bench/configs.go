//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
)

// The configurations below give every contender the same job: round robin
// over the three backends, keep-alive to them (64 idle connections per
// backend where the proxy has such a knob), no access logging, one worker
// process or thread, and no request limit per client connection. The +log
// contenders add an access log to a file in each proxy's native format,
// written in batches where the proxy can (nginx buffer=64k flush=1s;
// sessiongate batches by itself; Caddy writes through its logger; HAProxy
// to its stdout, a file).

// backendBody is what backend i (1-based) answers: 21 bytes, as in the
// issue's reference setup.
func backendBody(i int) string { return fmt.Sprintf("hello from lamp%02d ok\n", i) }

// nginxHead is the part of an nginx.conf that keeps nginx in the
// foreground, single-process, and inside dir (pid, logs, temp files), so
// it never touches /etc/nginx, /var/log or /var/lib/nginx.
func nginxHead(dir, name string, workerConns int) string {
	p := filepath.Join(dir, name)
	return fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s.pid;
error_log %[1]s.err crit;
events { worker_connections %[2]d; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path %[1]s-body;
    proxy_temp_path %[1]s-proxy;
    fastcgi_temp_path %[1]s-fastcgi;
    uwsgi_temp_path %[1]s-uwsgi;
    scgi_temp_path %[1]s-scgi;
`, p, workerConns)
}

// largeBody is the size of what the backends answer on largePath: the
// large-responses workload.
const (
	largeBody = 1 << 20
	largePath = "/large"
)

// backendConf is a fast backend: nginx answering every request itself, and
// largePath with the largeBody-byte file large (by sendfile).
func backendConf(dir, name string, port, i int, large string) string {
	return nginxHead(dir, name, 4096) + fmt.Sprintf(`    default_type text/plain;
    sendfile on;
    server {
        listen 127.0.0.1:%d;
        location / { return 200 %q; }
        location = %s { alias %s; }
    }
}
`, port, backendBody(i), largePath, large)
}

// tlsFiles are the contenders' certificate and key (PEM), and both in one
// file for HAProxy. port is the contender's TLS listener; 0 for none.
type tlsFiles struct {
	port                int
	cert, key, combined string
}

// nginxConf is the nginx contender; accessLog, if not "", is its access
// log file (combined format). With tls.port set it also listens there with
// TLS 1.2 and 1.3 and HTTP/2 (session tickets on, nginx's default).
//
// proxy_max_temp_file_size 0: a response larger than nginx's proxy buffers
// (64 kB here) is passed on as it comes instead of being spooled to a temp
// file first, as the other contenders do; only the large workload has such
// responses.
func nginxConf(dir, name string, port int, backends []string, workerConns int, accessLog string, tls tlsFiles) string {
	var b strings.Builder
	b.WriteString(nginxHead(dir, name, workerConns))
	b.WriteString("    upstream lamps {\n")
	for _, a := range backends {
		fmt.Fprintf(&b, "        server %s;\n", a)
	}
	fmt.Fprintf(&b, `        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:%d;
%s%s        location / {
            proxy_pass http://lamps;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }
    }
}
`, port, nginxTLS(tls), nginxAccessLog(accessLog))
	return b.String()
}

func nginxTLS(tls tlsFiles) string {
	if tls.port == 0 {
		return ""
	}
	// nginx 1.22's default ssl_protocols stops at TLSv1.2; the others offer
	// 1.2 and 1.3.
	return fmt.Sprintf("        listen 127.0.0.1:%d ssl http2;\n        ssl_protocols TLSv1.2 TLSv1.3;\n"+
		"        ssl_certificate %s;\n        ssl_certificate_key %s;\n", tls.port, tls.cert, tls.key)
}

func nginxAccessLog(path string) string {
	if path == "" {
		return ""
	}
	return fmt.Sprintf("        access_log %s combined buffer=64k flush=1s;\n", path)
}

// haproxyConf is the HAProxy contender. It checks the backends like
// sessiongate does (GET / every second).
//
// HAProxy sizes its fd needs as two per connection (client and server side)
// and refuses to start when maxconn does not fit ulimit-n that way. Idle
// client connections need one each, so "no strict-limits" lets it hold
// maxconn of them under the same fd limit the other contenders get.
// logged adds its HTTP log (option httplog) on stdout. With tls.port set
// it also listens there with TLS, ALPN h2 and http/1.1 (session tickets on,
// HAProxy's default).
func haproxyConf(port int, backends []string, maxconn, nofile int, logged bool, tls tlsFiles) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    nbthread 1
    maxconn %d
    ulimit-n %d
    no strict-limits
%s
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 120s
%s
frontend fe
    bind 127.0.0.1:%d
%s    default_backend lamps

backend lamps
    balance roundrobin
    option httpchk GET /
`, maxconn, nofile, haproxyLog(logged, "    log stdout format raw local0\n"),
		haproxyLog(logged, "    log global\n    option httplog\n"), port, haproxyTLS(tls))
	for i, a := range backends {
		fmt.Fprintf(&b, "    server lamp%02d %s check inter 1s\n", i+1, a)
	}
	return b.String()
}

func haproxyTLS(tls tlsFiles) string {
	if tls.port == 0 {
		return ""
	}
	return fmt.Sprintf("    bind 127.0.0.1:%d ssl crt %s alpn h2,http/1.1\n", tls.port, tls.combined)
}

func haproxyLog(logged bool, lines string) string {
	if !logged {
		return ""
	}
	return lines
}

// caddyConf is the Caddy contender: JSON config, admin endpoint off, no
// automatic HTTPS, active health checks like sessiongate's. accessLog, if
// not "", is its access log file (JSON, Caddy's format). With tls.port set
// a second server, the same routes, listens there with TLS (the certificate
// loaded from the files, HTTP/1.1 and HTTP/2, session tickets on, Go's
// default).
func caddyConf(port int, backends []string, accessLog string, tls tlsFiles) ([]byte, error) {
	ups := make([]map[string]any, len(backends))
	for i, a := range backends {
		ups[i] = map[string]any{"dial": a}
	}
	server := map[string]any{
		"listen":          []string{fmt.Sprintf("127.0.0.1:%d", port)},
		"automatic_https": map[string]any{"disable": true},
		"routes": []any{map[string]any{"handle": []any{map[string]any{
			"handler":        "reverse_proxy",
			"upstreams":      ups,
			"load_balancing": map[string]any{"selection_policy": map[string]any{"policy": "round_robin"}},
			"health_checks": map[string]any{"active": map[string]any{
				"uri": "/", "interval": "1s", "timeout": "500ms"}},
			"transport": map[string]any{"protocol": "http",
				"keep_alive": map[string]any{"max_idle_conns_per_host": 64}},
		}}}},
	}
	logs := map[string]any{"default": map[string]any{"level": "ERROR"}}
	if accessLog != "" {
		// The server's access logger, http.log.access.bench, goes to the
		// file alone; the default log keeps only errors.
		const logger = "http.log.access.bench"
		server["logs"] = map[string]any{"default_logger_name": "bench"}
		logs["default"] = map[string]any{"level": "ERROR", "exclude": []string{logger}}
		logs["access"] = map[string]any{"level": "INFO", "include": []string{logger},
			"writer":  map[string]any{"output": "file", "filename": accessLog},
			"encoder": map[string]any{"format": "json"}}
	}
	servers := map[string]any{"bench": server}
	apps := map[string]any{"http": map[string]any{"servers": servers}}
	if tls.port != 0 {
		servers["benchtls"] = map[string]any{
			"listen":          []string{fmt.Sprintf("127.0.0.1:%d", tls.port)},
			"automatic_https": map[string]any{"disable": true},
			"routes":          server["routes"],
			"protocols":       []string{"h1", "h2"},
			// Clients here connect to an IP and send no SNI: pick the
			// certificate as if they had asked for localhost.
			"tls_connection_policies": []any{map[string]any{"default_sni": "localhost"}},
		}
		apps["tls"] = map[string]any{"certificates": map[string]any{
			"load_files": []any{map[string]any{"certificate": tls.cert, "key": tls.key}}}}
	}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"logging": map[string]any{"logs": logs},
		"apps":    apps,
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// sgConf is what differs between the sessiongate contenders' configs.
type sgConf struct {
	port, adminPort int
	backends        []string
	memcached       []string // the session pool; none: plain proxy
	accessLog       string   // file (combined format); "": access_log off
	server          string   // lines of server: keys, each indented by two spaces
	cert, key       string   // tls: files; "": plain HTTP
	token           string   // admin token (for -profile); "": admin API off
}

// sessiongateConf is sessiongate plain, or with sessions when memcached
// lists the pool: handler memcache, strict, every other key at its default
// except passive health checks and the access log, which is off unless
// accessLog names its file (combined format).
//
// Passive checks are off, as HAProxy's and Caddy's are here, so that every
// contender runs active checks only. (Before 8d12e0f sessiongate counted
// requests abandoned by wrk at the end of a run as backend failures; that
// was fixed, the setting stays for equivalence.)
func sessiongateConf(c sgConf) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:%d\n", c.port)
	if c.cert != "" {
		fmt.Fprintf(&b, "tls:\n  cert: %s\n  key: %s\n", c.cert, c.key)
	}
	if c.server != "" {
		b.WriteString("server:\n" + c.server)
	}
	b.WriteString("backends:\n")
	for i, a := range c.backends {
		fmt.Fprintf(&b, "  - name: lamp%02d\n    url: http://%s\n", i+1, a)
	}
	b.WriteString("balancer:\n  policy: round_robin\nhealth:\n  path: /\n  passive:\n    failures: 0\n")
	if len(c.memcached) > 0 {
		b.WriteString("session:\n  handler: memcache\n  strict: true\nmemcached:\n  servers:\n")
		for _, a := range c.memcached {
			fmt.Fprintf(&b, "    - %s\n", a)
		}
	}
	if c.accessLog == "" {
		b.WriteString("access_log: off\n")
	} else {
		fmt.Fprintf(&b, "access_log:\n  path: %s\n  format: combined\n", c.accessLog)
	}
	fmt.Fprintf(&b, "admin:\n  listen: 127.0.0.1:%d\n", c.adminPort)
	if c.token != "" {
		fmt.Fprintf(&b, "  token: %s\n", c.token)
	}
	return b.String()
}
