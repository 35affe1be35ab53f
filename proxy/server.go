package proxy

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"
)

// ServerOptions are the client-facing timeouts and limits.
type ServerOptions struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	TLS               *tls.Config // nil serves plain HTTP/1.1
	Logger            *slog.Logger
}

// NewServer wraps h in an http.Server with the given limits. Requests whose
// headers exceed MaxHeaderBytes get 431 from net/http itself; with TLS the
// server also speaks HTTP/2.
func NewServer(h http.Handler, o ServerOptions) *http.Server {
	s := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		TLSConfig:         o.TLS,
	}
	if o.Logger != nil {
		// net/http logs TLS handshake noise and panics through ErrorLog.
		s.ErrorLog = slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug)
	}
	return s
}
