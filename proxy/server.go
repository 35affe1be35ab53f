package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sessiongate/sessiongate/internal/sockio"
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
	// Its NextProtos should offer "h2" and "http/1.1".
	TLS               *tls.Config
	CertFile, KeyFile string
	Logger            *slog.Logger
	// NetHTTP serves HTTP/1.x with net/http's server instead of h1, plain
	// and over TLS: the escape hatch from h1, and the baseline that shows
	// what it buys.
	NetHTTP bool
	// DisableRawIO makes h1 read and write through net.Conn instead of
	// internal/sockio (net/http never uses sockio).
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

// NewServer serves h with the given limits: HTTP/1.x with h1,
// sessiongate's lean server (see its package doc for why), unless NetHTTP,
// and HTTP/2 over TLS with net/http. Requests whose headers exceed
// MaxHeaderBytes get 431 either way.
func NewServer(h http.Handler, o ServerOptions) Server {
	s := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
	}
	if o.Logger != nil {
		// net/http logs TLS handshake noise and panics through ErrorLog.
		s.ErrorLog = slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug)
	}
	if o.NetHTTP {
		s.Handler = closeHTTP10{h}
		if o.TLS == nil {
			return s
		}
		s.TLSConfig = o.TLS
		return &netHTTPTLS{Server: s, cert: o.CertFile, key: o.KeyFile}
	}
	one := &h1.Server{
		Handler:           h,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		Logger:            o.Logger,
		DisableRawIO:      o.DisableRawIO,
		GatherWrites:      sockio.OneP(),
	}
	if o.TLS == nil {
		return one
	}
	// h1 does every handshake and hands h2 connections to s through a
	// listener, so that s's Shutdown tracks and drains them as its own.
	// (s has no TLSConfig: its Serve then sets up HTTP/2 for the
	// *tls.Conns it is given, and never handshakes them, done already.)
	t := &tlsServer{h1: one, h2: s, h2conns: newConnQueue()}
	one.TLSConfig, t.err = serverTLS(o)
	one.TLSNextProto = map[string]func(*tls.Conn){"h2": t.h2conns.put}
	return t
}

// closeHTTP10 closes the connection after every HTTP/1.0 request that
// net/http serves. Why: RFC 9112 6.1 wants it closed after an HTTP/1.0
// request with Transfer-Encoding, or the bytes behind the head are read as
// a request of their own (smuggled past a proxy in front that took them as
// the body); net/http ignores Transfer-Encoding on HTTP/1.0 and removes the
// field, so the handler cannot tell such a request apart. h1 sees the raw
// head and closes only those (see its closeAfter). Browsers speak HTTP/1.1.
type closeHTTP10 struct{ h http.Handler }

func (c closeHTTP10) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 {
		w.Header().Set("Connection", "close")
	}
	c.h.ServeHTTP(w, r)
}

// serverTLS is o.TLS with the certificate from CertFile and KeyFile, when
// given, as net/http's ServeTLS loads them.
func serverTLS(o ServerOptions) (*tls.Config, error) {
	c := o.TLS
	if o.CertFile == "" && o.KeyFile == "" {
		return c, nil
	}
	cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, err
	}
	c = c.Clone()
	c.Certificates = []tls.Certificate{cert}
	return c, nil
}

// netHTTPTLS is net/http's server serving TLS from certificate files.
type netHTTPTLS struct {
	*http.Server
	cert, key string
}

func (s *netHTTPTLS) Serve(l net.Listener) error { return s.ServeTLS(l, s.cert, s.key) }

// tlsServer serves TLS clients: HTTP/1.x with h1, which does every
// handshake, and HTTP/2 with net/http, to which h1 hands the connections
// whose client chose "h2".
type tlsServer struct {
	h1      *h1.Server
	h2      *http.Server
	h2conns *connQueue
	err     error // loading the certificate
	h2once  sync.Once
}

func (s *tlsServer) Serve(l net.Listener) error {
	if s.err != nil {
		l.Close()
		return s.err
	}
	s.h2once.Do(func() {
		s.h2conns.addr = l.Addr()
		// Ends when Shutdown or Close closes h2conns.
		go s.h2.Serve(s.h2conns)
	})
	return s.h1.Serve(l)
}

// Shutdown drains both servers at once, under the same deadline.
func (s *tlsServer) Shutdown(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.h2.Shutdown(ctx) }()
	err := s.h1.Shutdown(ctx)
	s.h2conns.Close() // in case h2's Serve never started
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err // one error: both say ctx's when it ends first
}

func (s *tlsServer) Close() error {
	err := s.h1.Close()
	s.h2conns.Close()
	return errors.Join(err, s.h2.Close())
}

// connQueue is a net.Listener whose connections are put into it: those h1
// hands to net/http's server.
type connQueue struct {
	addr  net.Addr // set before the first Accept
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{conns: make(chan net.Conn), done: make(chan struct{})}
}

// put waits for Accept to take c, or closes c once the queue is closed.
func (q *connQueue) put(c *tls.Conn) {
	select {
	case q.conns <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }
