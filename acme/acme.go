// Package acme gives the client listener certificates obtained and renewed
// over ACME (RFC 8555), with certmagic, the library Caddy is built on: it
// keeps accounts, certificates and locks in a storage directory, renews in
// the background (ACME Renewal Information when the CA offers it, else a
// third of the lifetime before expiry), staples OCSP where the CA still
// offers it, and coordinates instances that share the directory. The
// package also owns the plain-HTTP listener's handler: HTTP-01 challenges,
// and a redirect to HTTPS for everything else.
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
)

// Options configure a Manager.
type Options struct {
	// Domains are the names to obtain a certificate for.
	Domains []string
	// Email is the account's contact; optional.
	Email string
	// CA is the ACME directory URL.
	CA string
	// Roots, if not nil, are the roots trusted for the CA's HTTPS instead
	// of the system's (a private CA).
	Roots *x509.CertPool
	// Storage is the directory for accounts, certificates and locks.
	Storage string
	// HTTP01 and TLSALPN01 enable the two challenge types.
	HTTP01, TLSALPN01 bool
	// HTTPAddr and TLSAddr are the bound addresses of the plain-HTTP and
	// the TLS listener, which answer the challenges. certmagic starts a
	// challenge server of its own unless it finds the port taken; naming
	// the listeners makes it find them.
	HTTPAddr, TLSAddr net.Addr
	// Profile is the CA's certificate profile; "" is the CA's default.
	Profile string
	// RenewInterval is how often certificates are checked for renewal.
	RenewInterval time.Duration
	Logger        *slog.Logger
}

// Manager obtains, renews and serves the certificates for Options.Domains.
type Manager struct {
	domains []string
	cache   *certmagic.Cache
	cfg     *certmagic.Config
	issuer  *certmagic.ACMEIssuer
}

// ReadRoots loads the PEM certificates in file into a pool.
func ReadRoots(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// New prepares certificate management; nothing is obtained until Run.
func New(o Options) (*Manager, error) {
	if len(o.Domains) == 0 {
		return nil, errors.New("acme: no domains")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	logger := zapLogger(o.Logger.With("component", "acme"))
	m := &Manager{domains: slices.Clone(o.Domains)}
	// The cache asks which config manages a certificate; there is one.
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.cfg, nil },
		RenewCheckInterval: o.RenewInterval,
		Logger:             logger,
	})
	m.cfg = certmagic.New(m.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: o.Storage},
		Logger:  logger,
		// Clients that send no SNI (an IP address in the URL) get the
		// first domain's certificate rather than a failed handshake.
		DefaultServerName: o.Domains[0],
	})
	issuer := certmagic.ACMEIssuer{
		CA:                      o.CA,
		Email:                   o.Email,
		Agreed:                  true,
		Profile:                 o.Profile,
		TrustedRoots:            o.Roots,
		DisableHTTPChallenge:    !o.HTTP01,
		DisableTLSALPNChallenge: !o.TLSALPN01,
		Logger:                  logger,
	}
	if o.HTTP01 && o.HTTPAddr != nil {
		issuer.ListenHost, issuer.AltHTTPPort = hostPort(o.HTTPAddr)
	}
	if o.TLSALPN01 && o.TLSAddr != nil {
		var host string
		host, issuer.AltTLSALPNPort = hostPort(o.TLSAddr)
		if issuer.ListenHost == "" {
			issuer.ListenHost = host
		}
	}
	m.issuer = certmagic.NewACMEIssuer(m.cfg, issuer)
	m.cfg.Issuers = []certmagic.Issuer{m.issuer}
	return m, nil
}

func hostPort(a net.Addr) (string, int) {
	host, port, _ := net.SplitHostPort(a.String())
	p, _ := strconv.Atoi(port)
	return host, p
}

// Run obtains the certificates that storage does not hold yet (in the
// background: the listeners must already be serving, as they answer the
// challenges) and keeps them renewed until ctx ends, which also stops
// certmagic's retries and its maintenance goroutine.
func (m *Manager) Run(ctx context.Context) {
	if err := m.cfg.ManageAsync(ctx, m.domains); err != nil {
		m.cfg.Logger.Error("starting certificate management: " + err.Error())
	}
	<-ctx.Done()
	m.cache.Stop()
}

// NotAfter is when the certificate held for each domain expires, as
// obtained, loaded from storage or renewed; a domain without one yet is
// absent.
func (m *Manager) NotAfter() map[string]time.Time {
	out := make(map[string]time.Time, len(m.domains))
	for _, d := range m.domains {
		for _, c := range m.cache.AllMatchingCertificates(d) {
			// During a renewal the cache may briefly hold both; the
			// newer one is the one served from then on.
			if c.Leaf != nil && c.Leaf.NotAfter.After(out[d]) {
				out[d] = c.Leaf.NotAfter
			}
		}
	}
	return out
}

// TLSConfig is base with the managed certificates and the TLS-ALPN-01
// challenge's protocol added.
func (m *Manager) TLSConfig(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.GetCertificate = m.cfg.GetCertificate
	// Last, so that clients offering h2 or http/1.1 never get it; the
	// CA's validator offers acme-tls/1 alone.
	c.NextProtos = append(c.NextProtos, acmez.ACMETLS1Protocol)
	return c
}

// HTTPHandler answers the HTTP-01 challenges of this instance and, through
// the shared storage, of the others; next serves every other request.
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	return m.issuer.HTTPChallengeHandler(next)
}
