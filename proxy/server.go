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
	// TLS, with CertFile and KeyFile, serves clients over TLS (HTTP/2 and
	// HTTP/1.1); nil serves plain HTTP/1.1.
	TLS               *tls.Config
	CertFile, KeyFile string
	Logger            *slog.Logger
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
// sessiongate's lean server (see its package doc for why), and over TLS
// with net/http, which brings HTTP/2. Requests whose headers exceed
// MaxHeaderBytes get 431 either way.
func NewServer(h http.Handler, o ServerOptions) Server {
	if o.TLS == nil {
		return &h1.Server{
			Handler:           h,
			ReadHeaderTimeout: o.ReadHeaderTimeout,
			ReadTimeout:       o.ReadTimeout,
			WriteTimeout:      o.WriteTimeout,
			IdleTimeout:       o.IdleTimeout,
			MaxHeaderBytes:    o.MaxHeaderBytes,
			Logger:            o.Logger,
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
	return &tlsServer{Server: s, cert: o.CertFile, key: o.KeyFile}
}

// tlsServer is a net/http server that serves TLS from certificate files.
type tlsServer struct {
	*http.Server
	cert, key string
}

func (s *tlsServer) Serve(l net.Listener) error { return s.ServeTLS(l, s.cert, s.key) }
