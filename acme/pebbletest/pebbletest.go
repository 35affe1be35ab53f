//go:build unix

// Package pebbletest runs pebble, Let's Encrypt's ACME test server, for
// tests: built from the module cache (go.mod names it as a tool), on free
// loopback ports, with a DNS responder that sends every name the CA
// validates to a loopback address, and killed when the test ends. Its
// validation authority connects to the HTTP and TLS ports the test names:
// those of the ACME client under test.
package pebbletest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Timeouts for building pebble (the first build compiles it and its
// dependencies) and for it to start answering.
const (
	buildTimeout = 5 * time.Minute
	startTimeout = 10 * time.Second
)

// Options are the ports pebble validates challenges on and the lifetimes of
// the certificates it issues.
type Options struct {
	// HTTPPort and TLSPort are where pebble connects for HTTP-01 and
	// TLS-ALPN-01 (the real CAs use 80 and 443).
	HTTPPort, TLSPort int
	// Profiles maps certificate profile names to lifetimes, besides
	// "default" (90 days unless given). Beware: pebble gives an order that
	// names no profile one of all of them at random (wfe.go: "in true
	// pebble chaos fashion"), not "default"; so a pebble with profiles
	// other than "default" is for clients that name theirs.
	Profiles map[string]time.Duration
}

// Pebble is one running pebble.
type Pebble struct {
	// Directory is the ACME directory URL.
	Directory string
	// TLSRootFile is the PEM file of the certificate pebble's own HTTPS
	// (ACME API) presents: the ACME client's ca_root.
	TLSRootFile string

	mgmt string // management API address
	dns  *dns.Server
	mu   sync.Mutex
	ips  map[string]string // DNS name → IP; others get 127.0.0.1
	cmd  *exec.Cmd
	done chan struct{}
	out  *bytes.Buffer // pebble's output, read after done
}

// Start builds pebble if needed and runs it until the test ends.
func Start(t testing.TB, o Options) *Pebble {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "pebble")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/letsencrypt/pebble/v2/cmd/pebble").CombinedOutput(); err != nil {
		t.Fatalf("pebbletest: go build pebble: %v\n%s", err, out)
	}
	p := &Pebble{ips: map[string]string{}, TLSRootFile: filepath.Join(dir, "pebble-tls.pem")}
	keyFile := filepath.Join(dir, "pebble-tls-key.pem")
	if err := selfSigned(p.TLSRootFile, keyFile); err != nil {
		t.Fatal(err)
	}

	p.startDNS(t)
	t.Cleanup(func() { p.dns.Shutdown() })

	profiles := map[string]any{}
	if _, ok := o.Profiles["default"]; !ok {
		profiles["default"] = map[string]any{"description": "default", "validityPeriod": 90 * 24 * 3600}
	}
	for name, d := range o.Profiles {
		profiles[name] = map[string]any{"description": name, "validityPeriod": int(d / time.Second)}
	}
	api, mgmt := freeAddr(t), freeAddr(t)
	conf, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":           api,
		"managementListenAddress": mgmt,
		"certificate":             p.TLSRootFile,
		"privateKey":              keyFile,
		"httpPort":                o.HTTPPort,
		"tlsPort":                 o.TLSPort,
		"keyAlgorithm":            "ecdsa",
		"retryAfter":              map[string]int{"authz": 1, "order": 1},
		"profiles":                profiles,
	}})
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	p.Directory, p.mgmt = "https://"+api+"/dir", mgmt
	p.cmd = exec.Command(bin, "-config", confFile, "-dnsserver", p.dns.Listener.Addr().String())
	p.cmd.Env = append(os.Environ(),
		"PEBBLE_VA_NOSLEEP=1",      // validate at once
		"PEBBLE_VA_ALWAYS_VALID=0", // really connect to the client's listeners
		"PEBBLE_WFE_NONCEREJECT=0", // no spurious badNonce retries
		"PEBBLE_AUTHZREUSE=0")      // every order (renewals too) is validated anew
	p.out = new(bytes.Buffer)
	p.cmd.Stdout, p.cmd.Stderr = syncWriter{&p.mu, p.out}, syncWriter{&p.mu, p.out}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Stop)

	deadline := time.Now().Add(startTimeout)
	for {
		if _, err := p.get(p.Directory); err == nil {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("pebbletest: pebble exited:\n%s", p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebbletest: pebble did not answer within %v:\n%s", startTimeout, p.Output())
		}
		time.Sleep(20 * time.Millisecond) // polling a port that is about to open
	}
}

// Resolve makes the DNS responder answer name with ip (default 127.0.0.1).
func (p *Pebble) Resolve(name, ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ips[strings.ToLower(dns.Fqdn(name))] = ip
}

// Roots is a pool with the root that signs the certificates pebble issues.
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	b, err := p.get("https://" + p.mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("pebbletest: root: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebbletest: no root in %q", b)
	}
	return pool
}

// Output is what pebble has logged so far.
func (p *Pebble) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Stop kills pebble and waits for it.
func (p *Pebble) Stop() {
	p.cmd.Process.Kill()
	<-p.done
}

// get fetches u from pebble's own HTTPS, trusting its certificate.
func (p *Pebble) get(u string) ([]byte, error) {
	b, err := os.ReadFile(p.TLSRootFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr, Timeout: 2 * time.Second}).Get(u)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", u, res.Status)
	}
	return body, err
}

// startDNS answers A queries over TCP (pebble asks over TCP) with the
// address Resolve gave, else 127.0.0.1; AAAA queries get no answer.
func (p *Pebble) startDNS(t testing.TB) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.dns = &dns.Server{Listener: ln, Net: "tcp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, question := range q.Question {
			if question.Qtype != dns.TypeA {
				continue
			}
			p.mu.Lock()
			ip, ok := p.ips[strings.ToLower(question.Name)]
			p.mu.Unlock()
			if !ok {
				ip = "127.0.0.1"
			}
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
				A:   net.ParseIP(ip),
			})
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	p.dns.NotifyStartedFunc = func() { close(started) }
	go p.dns.ActivateAndServe()
	select {
	case <-started:
	case <-time.After(startTimeout):
		t.Fatal("pebbletest: DNS responder did not start")
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pebbletest"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr(t testing.TB) string { return fmt.Sprintf("127.0.0.1:%d", FreePort(t)) }

// FreePort is a loopback port free a moment ago, for the listeners pebble
// validates on, which must be known before pebble starts and are opened
// again by each instance under test. It lies below the ephemeral range, so
// that no outgoing connection on the machine (of this test or of others)
// takes it while no instance listens.
func FreePort(t testing.TB) int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
	for range 200 {
		port := 10000 + mathrand.IntN(low-10000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("pebbletest: no free port below the ephemeral range")
	return 0
}

type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}
