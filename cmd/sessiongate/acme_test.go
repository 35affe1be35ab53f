package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/acme/pebbletest"
)

// acmeInstance is one sessiongate with tls.acme, on the ports pebble
// validates on.
type acmeInstance struct {
	ip                string // loopback address it listens on
	tlsPort, httpPort int
	domains           []string
	storage           string
	extra             string // further tls.acme lines
	httpListen        bool
}

func (i acmeInstance) config(be string, p *pebbletest.Pebble) string {
	cfg := strings.Replace(plainConfig(be), "\nlisten: 127.0.0.1:0\n", fmt.Sprintf("\nlisten: %s:%d\n", i.ip, i.tlsPort), 1)
	cfg += "tls:\n"
	if i.httpListen {
		cfg += fmt.Sprintf("  http_listen: %s:%d\n", i.ip, i.httpPort)
	}
	cfg += fmt.Sprintf("  acme:\n    domains: [%s]\n    ca: %s\n    ca_root: %s\n    storage: %s\n    email: ops@sg.test\n%s",
		strings.Join(i.domains, ", "), p.Directory, p.TLSRootFile, i.storage, i.extra)
	return cfg
}

// logBuffer collects an instance's log for the failure message.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stop ends r before the test does (its cleanup then finds it stopped).
func stop(t *testing.T, r *running) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
}

// servedCert does a TLS handshake with addr for name, verifying the chain
// against roots, and returns the leaf.
func servedCert(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// waitCert waits (bounded) until addr serves a certificate for name that
// verifies against roots and that accept takes.
func waitCert(t *testing.T, addr, name string, roots *x509.CertPool, within time.Duration, accept func(*x509.Certificate) bool, logs fmt.Stringer) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		c, err := servedCert(addr, name, roots)
		if err == nil && (accept == nil || accept(c)) {
			return c
		}
		if err != nil {
			last = err
		}
		time.Sleep(100 * time.Millisecond) // waiting for an issuance in the background
	}
	t.Fatalf("%s served no acceptable certificate for %s within %v (last error: %v); log:\n%s", addr, name, within, last, logs)
	return nil
}

// TestACMEAgainstPebble obtains certificates from a real ACME server (pebble,
// on loopback, validating against sessiongate's own listeners): through
// HTTP-01 and through TLS-ALPN-01, served on the TLS listener and verified
// against pebble's root; the HTTP listener redirects what is not a
// challenge; a short-lived certificate is renewed and the new one served
// without a restart; two instances sharing the storage directory serve one
// certificate; and a restart serves the stored certificate with the CA gone.
func TestACMEAgainstPebble(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from lamp via "+r.Header.Get("X-Forwarded-Proto"))
	}))
	defer be.Close()
	tlsPort, httpPort := pebbletest.FreePort(t), pebbletest.FreePort(t)
	// Only the default profile: pebble gives an order that names no
	// profile a random one of those it has, so the short-lived profile
	// has a pebble of its own below.
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: tlsPort})
	roots := p.Roots(t)
	var lastConfig string
	launchOn := func(p *pebbletest.Pebble, i acmeInstance) (*running, *logBuffer) {
		t.Helper()
		i.tlsPort, i.httpPort = tlsPort, httpPort
		if i.ip == "" {
			i.ip = "127.0.0.1"
		}
		logs := &logBuffer{}
		lastConfig = writeConfig(t, i.config(be.URL, p))
		return startLogged(t, lastConfig, logs), logs
	}
	launch := func(i acmeInstance) (*running, *logBuffer) { t.Helper(); return launchOn(p, i) }
	// An order naming no profile gets the CA's default: 90 days. (A
	// 20-second one here expired before the restart below served it.)
	defaultLife := func(c *x509.Certificate) {
		t.Helper()
		if life := c.NotAfter.Sub(c.NotBefore); life < 24*time.Hour {
			t.Errorf("%v: a %v certificate where the CA's default profile gives 90 days", c.DNSNames, life)
		}
	}

	// HTTP-01 only: answered on tls.http_listen.
	http01 := acmeInstance{domains: []string{"http01.sg.test"}, storage: t.TempDir(), httpListen: true,
		extra: "    challenges: [http-01]\n"}
	r, logs := launch(http01)
	first := waitCert(t, r.addrs.front, "http01.sg.test", roots, 30*time.Second, nil, logs)
	defaultLife(first)
	if len(first.DNSNames) != 1 || first.DNSNames[0] != "http01.sg.test" {
		t.Errorf("certificate names %v", first.DNSNames)
	}
	// The expiry metric gives the served certificate's, per domain.
	expiryIs := func(r *running, name string, c *x509.Certificate) {
		t.Helper()
		if got, ok := certExpiry(t, r.addrs.admin, name); !ok || !got.Equal(c.NotAfter) {
			t.Errorf("expiry metric for %s: %v (present %v), want the served certificate's %v", name, got, ok, c.NotAfter)
		}
	}
	expiryIs(r, "http01.sg.test", first)

	// The certificate serves real requests, to the backend.
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, r.addrs.front)
		},
		ForceAttemptHTTP2: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	get := func() {
		t.Helper()
		res, err := client.Get(fmt.Sprintf("https://http01.sg.test:%d/", tlsPort))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(body) != "from lamp via https" || res.ProtoMajor != 2 {
			t.Errorf("GET over the issued certificate: %s %s %q", res.Proto, res.Status, body)
		}
	}
	get()

	// A reload applies, says that tls changes wait for a restart, and the
	// certificate goes on being served.
	cfg, _ := os.ReadFile(lastConfig)
	os.WriteFile(lastConfig, bytes.Replace(cfg, []byte("ops@sg.test"), []byte("other@sg.test"), 1), 0o644)
	r.reload <- syscall.SIGHUP
	acmeWait(t, "the reload", func() bool { return strings.Contains(logs.String(), "configuration reloaded") })
	if !strings.Contains(logs.String(), `msg="this setting changes only on restart; the running value stays" key=tls`) {
		t.Errorf("no restart-only warning for tls:\n%s", logs)
	}
	tr.CloseIdleConnections()
	get()
	if c, err := servedCert(r.addrs.front, "http01.sg.test", roots); err != nil || c.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Errorf("after the reload: %v, serial changed: %v", err, err == nil)
	}

	// The HTTP listener redirects everything that is not a challenge it
	// knows, with the method kept (308), the host, path and query.
	noFollow := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range []struct{ method, path string }{
		{"GET", "/login.php?next=%2Faccount&x=1"},
		{"POST", "/form"},
		{"GET", "/.well-known/acme-challenge/no-such-token"},
	} {
		req, _ := http.NewRequest(c.method, "http://"+r.addrs.http+c.path, strings.NewReader("a=b"))
		req.Host = "http01.sg.test"
		res, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		want := fmt.Sprintf("https://http01.sg.test:%d%s", tlsPort, c.path)
		if res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Location") != want {
			t.Errorf("%s %s: %d Location %q, want 308 %q", c.method, c.path, res.StatusCode, res.Header.Get("Location"), want)
		}
	}
	stop(t, r)

	// TLS-ALPN-01 only, without an HTTP listener: answered on the TLS
	// listener itself.
	r, logs = launch(acmeInstance{domains: []string{"alpn.sg.test"}, storage: t.TempDir(), extra: "    challenges: [tls-alpn-01]\n"})
	defaultLife(waitCert(t, r.addrs.front, "alpn.sg.test", roots, 30*time.Second, nil, logs))
	stop(t, r)

	// Renewal: 20-second certificates (tls.acme.profile), checked every
	// second; a new certificate is served without a restart.
	short := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: tlsPort,
		Profiles: map[string]time.Duration{"shortlived": 20 * time.Second}})
	shortRoots := short.Roots(t)
	r, logs = launchOn(short, acmeInstance{domains: []string{"renew.sg.test"}, storage: t.TempDir(), httpListen: true,
		extra: "    profile: shortlived\n    renew_interval: 1s\n"})
	c1 := waitCert(t, r.addrs.front, "renew.sg.test", shortRoots, 30*time.Second, nil, logs)
	if life := c1.NotAfter.Sub(c1.NotBefore); life > time.Minute {
		t.Fatalf("profile shortlived gave a %v certificate", life)
	}
	expiryIs(r, "renew.sg.test", c1)
	c2 := waitCert(t, r.addrs.front, "renew.sg.test", shortRoots, 60*time.Second, func(c *x509.Certificate) bool {
		return c.SerialNumber.Cmp(c1.SerialNumber) != 0
	}, logs)
	expiryIs(r, "renew.sg.test", c2)
	if !c2.NotBefore.After(c1.NotBefore.Add(-time.Second)) {
		t.Errorf("renewed certificate from %v is older than the first, from %v", c2.NotBefore, c1.NotBefore)
	}
	stop(t, r)
	short.Stop()

	// Two instances side by side on one storage directory: the second
	// finds the first's certificate there and serves it; the CA issues
	// once.
	shared := t.TempDir()
	p.Resolve("shared.sg.test", "127.0.0.2")
	r2, logs2 := launch(acmeInstance{ip: "127.0.0.2", domains: []string{"shared.sg.test"}, storage: shared, httpListen: true})
	s2 := waitCert(t, r2.addrs.front, "shared.sg.test", roots, 30*time.Second, nil, logs2)
	defaultLife(s2)
	issued := strings.Count(p.Output(), "Issued certificate serial")
	r1, logs1 := launch(acmeInstance{domains: []string{"shared.sg.test"}, storage: shared, httpListen: true})
	s1 := waitCert(t, r1.addrs.front, "shared.sg.test", roots, 10*time.Second, nil, logs1)
	if s1.SerialNumber.Cmp(s2.SerialNumber) != 0 {
		t.Errorf("instances serve serials %x and %x, want the shared one", s1.SerialNumber, s2.SerialNumber)
	}
	if n := strings.Count(p.Output(), "Issued certificate serial"); n != issued {
		t.Errorf("the CA issued %d more certificates when the second instance started", n-issued)
	}
	stop(t, r1)

	// Challenge data goes through the storage too: another sessiongate
	// process (nothing in memory shared) orders a certificate whose
	// HTTP-01 check the CA sends to the instance on 127.0.0.2, which
	// answers it from the storage.
	p.Resolve("solo.sg.test", "127.0.0.2")
	solo := acmeInstance{ip: "127.0.0.1", tlsPort: tlsPort, httpPort: httpPort, domains: []string{"solo.sg.test"},
		storage: shared, httpListen: true, extra: "    challenges: [http-01]\n"}
	out := startProcess(t, writeConfig(t, solo.config(be.URL, p)))
	defaultLife(waitCert(t, fmt.Sprintf("127.0.0.1:%d", tlsPort), "solo.sg.test", roots, 30*time.Second, nil, out))
	if !strings.Contains(logs2.String(), "served key authentication") || !strings.Contains(logs2.String(), "distributed=true") {
		t.Errorf("the instance on 127.0.0.2 did not answer the other process's challenge from storage:\n%s", logs2)
	}
	out.stop(t)
	stop(t, r2)

	// A restart serves the stored certificate, with the CA unreachable.
	p.Stop()
	r, logs = launch(http01)
	again := waitCert(t, r.addrs.front, "http01.sg.test", roots, 10*time.Second, nil, logs)
	if again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Errorf("after a restart the serial is %x, want the stored %x", again.SerialNumber, first.SerialNumber)
	}
	expiryIs(r, "http01.sg.test", again)
	stop(t, r)

	// Shutdown stops certmagic's goroutines: maintenance, retries, jobs.
	// Not its rate limiter per CA and account, which the library keeps in
	// a package-level map for the process's life: one per account,
	// reused by a later start.
	acmeWait(t, "certmagic's goroutines to end", func() bool {
		buf := make([]byte, 1<<20)
		for _, g := range bytes.Split(buf[:runtime.Stack(buf, true)], []byte("\n\n")) {
			if bytes.Contains(g, []byte("caddyserver/certmagic")) && !bytes.Contains(g, []byte("created by github.com/caddyserver/certmagic.NewRateLimiter")) {
				return false
			}
		}
		return true
	})
}

// acmeWait polls cond for up to 10 seconds.
func acmeWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestACMEHelperProcess is not a test of its own: startProcess runs the test
// binary through it as a separate sessiongate process.
func TestACMEHelperProcess(t *testing.T) {
	if cfg := os.Getenv("SESSIONGATE_TEST_PROCESS_CONFIG"); cfg != "" {
		os.Exit(run([]string{"run", "-config", cfg, "-log-level", "debug"}, os.Stdout, os.Stderr))
	}
}

// process is a sessiongate running in a process of its own.
type process struct {
	logBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

// startProcess runs sessiongate on the config at path in a new process
// (this test binary), stopped by SIGTERM when the test ends.
func startProcess(t *testing.T, path string) *process {
	t.Helper()
	p := &process{done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestACMEHelperProcess$")
	p.cmd.Env = append(os.Environ(), "SESSIONGATE_TEST_PROCESS_CONFIG="+path)
	p.cmd.Stdout, p.cmd.Stderr = &p.logBuffer, &p.logBuffer
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop sends SIGTERM and waits (bounded) for the process to end.
func (p *process) stop(t *testing.T) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("sessiongate process did not stop on SIGTERM:\n%s", p)
	}
}

// TestHTTPListenWithStaticCert: tls.http_listen works with tls.cert/key
// too; without ACME a challenge path is redirected like any other.
func TestHTTPListenWithStaticCert(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer be.Close()
	certFile, keyFile, _ := selfSigned(t, t.TempDir())
	r := start(t, writeConfig(t, plainConfig(be.URL)+"tls:\n  cert: "+certFile+"\n  key: "+keyFile+"\n  http_listen: 127.0.0.1:0\n"))
	_, port, _ := net.SplitHostPort(r.addrs.front)
	noFollow := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", "http://"+r.addrs.http+"/.well-known/acme-challenge/abc?x=1", nil)
	req.Host = "www.example.com"
	res, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if want := "https://www.example.com:" + port + "/.well-known/acme-challenge/abc?x=1"; res.StatusCode != 308 || res.Header.Get("Location") != want {
		t.Errorf("%d Location %q, want 308 %q", res.StatusCode, res.Header.Get("Location"), want)
	}
}
