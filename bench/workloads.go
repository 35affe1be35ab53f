//go:build linux

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// allWorkloads are -workloads' values: the plain workload (small keep-alive
// GETs), which keeps its own rounds, paced runs and idle test (measureAll),
// and the others, which get alternating full-load rounds only (rows).
const allWorkloads = "plain,tls,tlsnew,h2,close,large,cold,log"

// row is one measured line of a workload: a workload may have two (tlsnew:
// full and resumed handshakes).
type row struct {
	key   string // workload flag value
	id    string // samples key in contender.extra
	title string
	kinds []int // contenders that run it; the last is the sessiongate -profile profiles
	conns int
	proc  func(c *contender) *proc // the process whose CPU is charged
	// A wrk row has url and wrk: its load against c's url for d. The
	// others have drive, which returns the result and the CPU time the
	// load generator used.
	url   func(c *contender) string
	wrk   func(b *bench, d time.Duration) load
	drive func(ctx context.Context, b *bench, c *contender, d time.Duration) (wrkResult, time.Duration, error)
}

// run is one run of x against c for d.
func (x row) run(ctx context.Context, b *bench, c *contender, d time.Duration) (wrkResult, time.Duration, error) {
	if x.wrk != nil {
		return runWrk(ctx, x.url(c), x.wrk(b, d))
	}
	return x.drive(ctx, b, c, d)
}

// command is x's load against c as a shell line, for the report.
func (x row) command(b *bench, c *contender) string {
	switch {
	case x.wrk != nil:
		return x.wrk(b, b.o.wduration).command(x.url(c))
	case x.key == "h2":
		return "h2load " + strings.Join(h2Args("https://"+c.tlsAddr+"/", b.o.wduration), " ")
	}
	return fmt.Sprintf("# the bench's Go TLS client, %d workers, against https://%s/ for %s", x.conns, c.tlsAddr, b.o.wduration)
}

// Conns for the workloads whose client is not wrk's -c: h2load's clients
// (with h2Streams streams each), the Go TLS client's workers, and wrk's
// connections for 1 MiB responses (64 × 1 MiB in flight would only
// measure the kernel's buffers).
const (
	h2Conns    = 16
	h2Streams  = 8
	tlsWorkers = 16
	largeConns = 16
	coldCount  = 100_000
)

func plainProc(c *contender) *proc { return c.proc }
func tlsProc(c *contender) *proc   { return c.tlsProc }

// rows are the extra workloads' lines, in report order.
func rows(o options) []row {
	httpsURL := func(c *contender) string { return "https://" + c.tlsAddr + "/" }
	largeURL := func(c *contender) string { return "http://" + c.addr + largePath }
	fourProxies := []int{cHAProxy, cNginx, cCaddy, cPlain}
	all := []row{
		{key: "tls", id: "tls", title: "TLS, HTTP/1.1 keep-alive (wrk over https)", kinds: fourProxies, conns: o.conns,
			proc: tlsProc, url: httpsURL, wrk: func(b *bench, d time.Duration) load { return load{conns: b.o.conns, duration: d} }},
		{key: "tlsnew", id: "tlsnew-full", title: "new TLS connection per request, full handshake (Go client)", kinds: fourProxies,
			conns: tlsWorkers, proc: tlsProc, drive: tlsDrive(false)},
		{key: "tlsnew", id: "tlsnew-resumed", title: "new TLS connection per request, resumed with a session ticket (Go client)",
			kinds: fourProxies, conns: tlsWorkers, proc: tlsProc, drive: tlsDrive(true)},
		{key: "h2", id: "h2", title: fmt.Sprintf("HTTP/2 over TLS (h2load, %d streams per connection)", h2Streams),
			kinds: fourProxies, conns: h2Conns, proc: tlsProc, drive: h2Drive},
		{key: "close", id: "close", title: "new TCP connection per request (wrk, `Connection: close`)", kinds: fourProxies,
			conns: o.conns, proc: plainProc, url: (*contender).url, wrk: func(b *bench, d time.Duration) load {
				return load{conns: b.o.conns, duration: d, headers: []string{"Connection: close"}}
			}},
		{key: "large", id: "large", title: "1 MiB responses (wrk, keep-alive): req/s = MiB/s, CPU µs/req = CPU µs per MiB",
			kinds: fourProxies, conns: largeConns, proc: plainProc, url: largeURL,
			wrk: func(b *bench, d time.Duration) load { return load{conns: largeConns, duration: d} }},
		{key: "cold", id: "cold", title: fmt.Sprintf("sessions, cold verification cache: each request another of %d live sessions", coldCount),
			kinds: []int{cHAProxy, cPlain, cSessions}, conns: o.conns, proc: plainProc, url: (*contender).url,
			wrk: func(b *bench, d time.Duration) load {
				return load{conns: b.o.conns, duration: d, script: b.lua, ids: b.coldFile}
			}},
		// The plain workload's load against each proxy's twin that logs, in
		// short rounds like the others: the plain workload's own (10 s,
		// paced, idle) would take the run past 10 minutes.
		{key: "log", id: "log", title: "access log to a file in each proxy's native format (HAProxy: httplog; nginx, " +
			"sessiongate: combined; Caddy: JSON), keep-alive GETs as in the plain workload",
			kinds: []int{cHAProxyLog, cNginxLog, cCaddyLog, cPlainLog}, conns: o.conns,
			proc: plainProc, url: (*contender).url, wrk: func(b *bench, d time.Duration) load { return load{conns: b.o.conns, duration: d} }},
	}
	var out []row
	for _, r := range all {
		if o.wants(r.key) {
			out = append(out, r)
		}
	}
	return out
}

// rowCommands are the other workloads' load commands, against the
// sessiongate of each row (the other contenders get the same, on their own
// ports).
func (b *bench) rowCommands() []string {
	var out []string
	for _, x := range rows(b.o) {
		for _, c := range b.cs {
			if c.kind == x.kinds[len(x.kinds)-1] {
				out = append(out, x.command(b, c)+"   # "+x.id+", each round, every contender ("+c.name+"'s port shown)")
			}
		}
	}
	return out
}

// measureRows runs the extra workloads' rounds: in each round every row,
// and within a row every contender, one after the other.
func (b *bench) measureRows(ctx context.Context) error {
	rs := rows(b.o)
	if len(rs) == 0 {
		return nil
	}
	byKind := map[int]*contender{}
	for _, c := range b.cs {
		byKind[c.kind] = c
	}
	// Warm-up: a TLS server's first handshakes and h2 connections set
	// things up (tickets keys, buffers) once. Its result is not used, and
	// on a busy machine a second may complete no request at all: only a
	// contender that died fails it (a broken setup fails the rounds).
	b.say("warming up the other workloads")
	for _, r := range rs {
		for _, k := range r.kinds {
			c := byKind[k]
			if _, _, err := r.run(ctx, b, c, time.Second); ctx.Err() != nil {
				return fmt.Errorf("%s, %s: %w", r.id, c.name, err)
			}
			if e := r.proc(c).exited(); e != nil {
				return e
			}
		}
	}
	for round := 1; round <= b.o.rounds; round++ {
		for _, r := range rs {
			for _, k := range r.kinds {
				c := byKind[k]
				s, err := b.measureProc(ctx, r.proc(c), func(ctx context.Context) (wrkResult, time.Duration, error) {
					return r.run(ctx, b, c, b.o.wduration)
				})
				if err != nil {
					return fmt.Errorf("%s, %s: %w", r.id, c.name, err)
				}
				if c.extra == nil {
					c.extra = map[string][]sample{}
				}
				c.extra[r.id] = append(c.extra[r.id], s)
				b.say("round %d/%d %-14s %-21s %7.0f req/s %7.1f µs/req CPU %3.0f%% p99 %-9s errors %d", round, b.o.rounds,
					r.id, c.name, s.wrk.RPS, s.usPerReq(), s.cpuPct(), s.wrk.P99.Round(10*time.Microsecond), s.wrk.Errors())
			}
		}
	}
	return nil
}

// writeTLSFiles makes a self-signed ECDSA P-256 certificate for localhost
// and 127.0.0.1 in dir: cert.pem, key.pem and both in one file for HAProxy.
func writeTLSFiles(dir string) (tlsFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tlsFiles{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(19),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tlsFiles{}, err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tlsFiles{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
	f := tlsFiles{cert: dir + "/cert.pem", key: dir + "/key.pem", combined: dir + "/cert+key.pem"}
	for p, b := range map[string][]byte{f.cert: certPEM, f.key: keyPEM, f.combined: append(slices.Clone(certPEM), keyPEM...)} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return tlsFiles{}, err
		}
	}
	return f, nil
}

// storeColdSessions writes ids onto every node as storeSessions does, but
// pipelined (set ... noreply), as 100 000 round trips per node would take
// longer than the measurement; a version command at the end waits until
// the node has read them all.
func storeColdSessions(ctx context.Context, pool, ids []string) error {
	const value = "visits|i:1;"
	var req strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&req, "set %s 0 3600 %d noreply\r\n%s\r\n", id, len(value), value)
	}
	req.WriteString("version\r\n")
	for _, addr := range pool {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		conn.SetDeadline(time.Now().Add(60 * time.Second))
		errc := make(chan error, 1)
		go func() { _, err := conn.Write([]byte(req.String())); errc <- err }()
		buf := make([]byte, 256)
		n, rerr := conn.Read(buf)
		werr := <-errc
		conn.Close()
		if err := errors.Join(werr, rerr); err != nil {
			return fmt.Errorf("store sessions on %s: %w", addr, err)
		}
		if !strings.HasPrefix(string(buf[:n]), "VERSION ") {
			return fmt.Errorf("store sessions on %s: answer %q (a set failed?)", addr, buf[:n])
		}
	}
	return nil
}

// profiles takes a CPU profile of sessiongate under each selected workload:
// one more run each, profileRun long, not counted in the results, with
// GET /debug/pprof/profile on the admin listener meanwhile. They land in
// o.profile as <row id>.pprof (plain and sessions for the plain workload).
func (b *bench) profiles(ctx context.Context) error {
	if err := os.MkdirAll(b.o.profile, 0o755); err != nil {
		return err
	}
	byKind := map[int]*contender{}
	for _, c := range b.cs {
		byKind[c.kind] = c
	}
	type job struct {
		id    string
		admin string
		drive func(ctx context.Context) (wrkResult, time.Duration, error)
	}
	var jobs []job
	if b.o.wants("plain") {
		for _, c := range []*contender{byKind[cPlain], byKind[cSessions]} {
			id := "plain"
			if c.sessions {
				id = "sessions"
			}
			jobs = append(jobs, job{id, c.admin, func(ctx context.Context) (wrkResult, time.Duration, error) {
				return runWrk(ctx, c.url(), b.load(c, profileRun, 0))
			}})
		}
	}
	for _, r := range rows(b.o) {
		c := byKind[r.kinds[len(r.kinds)-1]]
		admin := c.admin
		if r.proc(c) == c.tlsProc && c.tlsAdmin != "" {
			admin = c.tlsAdmin
		}
		jobs = append(jobs, job{r.id, admin, func(ctx context.Context) (wrkResult, time.Duration, error) {
			return r.run(ctx, b, c, profileRun)
		}})
	}
	for _, j := range jobs {
		path := filepath.Join(b.o.profile, j.id+".pprof")
		errc := make(chan error, 1)
		go func() { errc <- fetchProfile(ctx, j.admin, b.token, profileRun-time.Second, path) }()
		w, _, err := j.drive(ctx)
		if err := errors.Join(err, <-errc); err != nil {
			return fmt.Errorf("profile %s: %w", j.id, err)
		}
		b.say("profile %-14s %7.0f req/s → %s", j.id, w.RPS, path)
	}
	return nil
}

// fetchProfile saves a CPU profile of secs from sessiongate's admin
// listener to path.
func fetchProfile(ctx context.Context, admin, token string, d time.Duration, path string) error {
	ctx, cancel := context.WithTimeout(ctx, d+20*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, int(d/time.Second))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s %.200s", url, resp.Status, body)
	}
	return os.WriteFile(path, body, 0o644)
}

// resumeNotes says, for the resumed-handshake row, which contenders did
// not resume (nearly) every connection: their figures are then full
// handshakes, not resumptions.
func resumeNotes(cs []*contender) []string {
	var notes []string
	for _, c := range cs {
		var n, resumed int64
		for _, s := range c.extra["tlsnew-resumed"] {
			n += s.wrk.Requests
			resumed += s.wrk.Resumed
		}
		if n > 0 && resumed*10 < n*9 {
			notes = append(notes, fmt.Sprintf("**%s resumed only %d of %d connections in the resumed-handshake "+
				"runs: its figure there is not that of resumed handshakes.**", c.name, resumed, n))
		}
	}
	return notes
}
