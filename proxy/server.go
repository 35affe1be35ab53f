package proxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/sessiongate/sessiongate/proxy/h1"
)

// ServerOptions are the client-facing timeouts and limits.
type ServerOptions struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// TLS, with CertFile and KeyFile or its own GetCertificate, serves
	// clients over TLS (HTTP/2 and HTTP/1.1); nil serves plain HTTP/1.1.
	TLS               *tls.Config
	CertFile, KeyFile string
	Logger            *slog.Logger
	// NetHTTP serves plain HTTP/1.1 with net/http's server instead of h1:
	// the escape hatch from h1, and the baseline that shows what it buys.
	NetHTTP bool
	// DisableRawIO makes h1 read and write through net.Conn instead of
	// proxy/internal/sockio (net/http never uses sockio).
	DisableRawIO bool
}

// Server is the client-facing server.
type Server interface {
	// Serve accepts connections on l until Shutdown or Close, then
	// returns http.ErrServerClosed.
	Serve(l net.Listener) error
	Shutdown(ctx context.Context) error
	Close() error
}

// NewServer serves h with the given limits: over plain HTTP/1.1 with h1,
// sessiongate's lean server (see its package doc for why), unless NetHTTP,
// and over TLS with net/http, which brings HTTP/2. Requests whose headers
// exceed MaxHeaderBytes get 431 either way.
func NewServer(h http.Handler, o ServerOptions) Server {
	if o.TLS == nil && !o.NetHTTP {
		return &h1.Server{
			Handler:           h,
			ReadHeaderTimeout: o.ReadHeaderTimeout,
			ReadTimeout:       o.ReadTimeout,
			WriteTimeout:      o.WriteTimeout,
			IdleTimeout:       o.IdleTimeout,
			MaxHeaderBytes:    o.MaxHeaderBytes,
			Logger:            o.Logger,
			DisableRawIO:      o.DisableRawIO,
		}
	}
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
	if o.TLS == nil {
		return s
	}
	return &tlsServer{Server: s, cert: o.CertFile, key: o.KeyFile}
}

// tlsServer is a net/http server that serves TLS from certificate files.
type tlsServer struct {
	*http.Server
	cert, key string
}

func (s *tlsServer) Serve(l net.Listener) error { return s.ServeTLS(l, s.cert, s.key) }
