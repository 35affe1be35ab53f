package main

import (
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"

	"github.com/sessiongate/sessiongate/acme"
	"github.com/sessiongate/sessiongate/config"
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
