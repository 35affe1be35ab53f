package main

import (
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/sessiongate/sessiongate/acme"
	"github.com/sessiongate/sessiongate/config"
	"github.com/sessiongate/sessiongate/metrics"
)

// newCertManager sets up tls.acme for the bound client listener tlsLn and
// plain-HTTP listener httpLn (nil without tls.http_listen).
func newCertManager(c *config.ACME, tlsLn, httpLn net.Listener, log *slog.Logger) (*acme.Manager, error) {
	o := acme.Options{
		Domains:       c.Domains,
		Email:         c.Email,
		CA:            c.CA,
		Storage:       c.Storage,
		HTTP01:        slices.Contains(c.Challenges, "http-01"),
		TLSALPN01:     slices.Contains(c.Challenges, "tls-alpn-01"),
		TLSAddr:       tlsLn.Addr(),
		Profile:       c.Profile,
		RenewInterval: c.RenewInterval,
		Logger:        log,
	}
	if httpLn != nil {
		o.HTTPAddr = httpLn.Addr()
	}
	// Made now so that a directory that cannot be made stops the start
	// rather than every later renewal.
	if err := os.MkdirAll(c.Storage, 0o700); err != nil {
		return nil, err
	}
	if c.CARoot != "" {
		roots, err := acme.ReadRoots(c.CARoot)
		if err != nil {
			return nil, err
		}
		o.Roots = roots
	}
	return acme.New(o)
}

// httpServer serves tls.http_listen: ACME HTTP-01 challenges (when certs
// is not nil) and a redirect to HTTPS on tlsAddr's port for the rest.
func (a *app) httpServer(certs *acme.Manager, tlsAddr net.Addr) *http.Server {
	_, port, _ := net.SplitHostPort(tlsAddr.String())
	h := acme.Redirect(port)
	if certs != nil {
		h = certs.HTTPHandler(h)
	}
	s := a.cfg.Load().Server
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.ReadHeaderTimeout,
		ReadTimeout:       s.ReadTimeout,
		WriteTimeout:      s.WriteTimeout,
		IdleTimeout:       s.IdleTimeout,
		MaxHeaderBytes:    s.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
}

// servedCerts are the certificates the TLS listener serves, for the expiry
// metric: tls.cert's, read at start like the listener reads it (tls changes
// apply on restart), or tls.acme's, read from the manager at each scrape so
// that an obtained or renewed certificate shows at once.
type servedCerts struct {
	static []metrics.CertSample
	acme   *acme.Manager
}

func newServedCerts(t *config.TLS, m *acme.Manager) *servedCerts {
	s := &servedCerts{acme: m}
	if m == nil && t.Cert != "" {
		if c, ok := certFileSample(t.Cert); ok {
			s.static = []metrics.CertSample{c}
		}
	}
	return s
}

// samples lists them by name.
func (s *servedCerts) samples() []metrics.CertSample {
	out := slices.Clone(s.static)
	if s.acme != nil {
		for name, notAfter := range s.acme.NotAfter() {
			out = append(out, metrics.CertSample{Name: name, NotAfter: notAfter})
		}
	}
	slices.SortFunc(out, func(a, b metrics.CertSample) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// certFileSample is the first certificate in the PEM file, named by its
// first DNS name, else its common name, else the file. A file that does not
// parse gives none: the listener fails on it with the reason.
func certFileSample(file string) (metrics.CertSample, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return metrics.CertSample{}, false
	}
	for {
		var block *pem.Block
		if block, b = pem.Decode(b); block == nil {
			return metrics.CertSample{}, false
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return metrics.CertSample{}, false
		}
		name := c.Subject.CommonName
		if len(c.DNSNames) > 0 {
			name = c.DNSNames[0]
		}
		if name == "" {
			name = file
		}
		return metrics.CertSample{Name: name, NotAfter: c.NotAfter}, true
	}
}
