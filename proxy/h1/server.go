// Package h1 is sessiongate's HTTP/1.1 server: it accepts client
// connections and serves an http.Handler on them, like net/http's Server but
// with less work per request.
//
// Requests are parsed by net/http itself (http.ReadRequest, the parser
// net/http's server uses), except the common bodiless request whose head is
// already buffered, which readHead parses to the same result (a differential
// test and fuzzer hold it to ReadRequest's). They are checked the way
// net/http's server checks them, so framing is never more lenient than
// net/http's; differential tests against net/http's server hold h1 to that.
// In places h1 is stricter:
// CONNECT, absolute-form targets (ReadRequest drops their Host header
// unchecked), "*" but for OPTIONS and an empty Host are refused, and an
// HTTP/1.0 request with Transfer-Encoding closes its connection (RFC 9112
// 6.1; ReadRequest hides the field, and net/http keeps it). What h1
// saves is the machinery around the parser, measured under wrk:
//   - no goroutine, read syscall and two deadline changes per request to
//     notice a client hanging up: the connection is watched only once a
//     request has been in the handler for a while (watchAfter);
//   - one context per connection instead of a cancelable one per request;
//   - headers written straight from the handler's map, without a copy;
//   - read and write buffers held only while a request is read and its
//     response written (see conn.await), and a keep-alive connection idle
//     for parkAfter parked without its goroutine (see parker), so an idle
//     connection costs its socket and a few structs, about 2 kB.
//
// Over TLS (TLSConfig), h1 does the handshake itself and serves the clients
// that chose HTTP/1.1 by ALPN, or nothing; a connection whose client chose
// HTTP/2 goes to TLSNextProto (in sessiongate, net/http's HTTP/2 server).
package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessiongate/sessiongate/internal/sockio"
)

// Server serves HTTP/1.x on TCP connections, plain or TLS. Set the fields before
// calling Serve and do not change them afterwards.
type Server struct {
	Handler           http.Handler
	ReadHeaderTimeout time.Duration // from the first byte of a request to its last header byte; 0: ReadTimeout
	ReadTimeout       time.Duration // whole request, body included; 0: no limit
	WriteTimeout      time.Duration // writing a response; 0: no limit
	IdleTimeout       time.Duration // between requests on a keep-alive connection; 0: ReadTimeout
	MaxHeaderBytes    int           // request line and headers; 0: http.DefaultMaxHeaderBytes
	Logger            *slog.Logger  // handler panics; nil: discard
	// DisableRawIO reads and writes connections through net.Conn instead
	// of internal/sockio's direct socket calls.
	DisableRawIO bool
	// GatherWrites yields before a response is sent, so that the writes of
	// the requests ready to run go out together: worth it only when one P
	// runs the process (see internal/sockio's OneP).
	GatherWrites bool
	// TLSConfig, when not nil, serves every connection over TLS: its
	// handshake counts against the header timeout of the first request.
	// It needs a certificate and should offer "http/1.1" by ALPN.
	TLSConfig *tls.Config
	// TLSNextProto takes over, as net/http's field of the name does, the
	// TLS connections whose client chose one of its protocols by ALPN,
	// once their handshake is done; h1 forgets them. A connection that
	// chose a protocol neither here nor HTTP/1.x (acme-tls/1, whose
	// handshake was all it wanted) is closed.
	TLSNextProto map[string]func(*tls.Conn)

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	readers   sync.Pool // *bufio.Reader
	spares    sync.Pool // *[readBufSize]byte, see conn.await
	headers   sync.Pool // http.Header, empty
	parked    *parker   // made at the first park; under mu
	// parkAfter replaces the constant parkAfter when not zero (tests);
	// < 0: never park.
	parkAfter time.Duration
	writers   sync.Pool // *bufio.Writer
	dates     atomic.Pointer[dateLine]
}

// Serve accepts connections on l and serves each on its own goroutine until
// Shutdown or Close, after which it returns http.ErrServerClosed. It closes
// l when it returns.
func (s *Server) Serve(l net.Listener) error {
	if !s.track(&l, true) {
		l.Close()
		return http.ErrServerClosed
	}
	defer s.track(&l, false)
	defer l.Close()
	var pause time.Duration
	for {
		rw, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			// Out of file descriptors and the like: wait and try again, as
			// net/http does, rather than give up the listener.
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				s.logger().Warn("accept failed, retrying", "err", err, "in", pause)
				time.Sleep(pause)
				continue
			}
			return err
		}
		pause = 0
		c := &conn{srv: s, rw: rw, since: time.Now()}
		if !s.DisableRawIO {
			c.rw = sockio.Wrap(rw)
		}
		if s.TLSConfig != nil {
			// Over sockio, so that TLS records too are read and written
			// without the scheduler's bookkeeping.
			c.rw = tls.Server(c.rw, s.TLSConfig)
		}
		if !s.add(c) {
			rw.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections and waits for the
// others to finish their request, until ctx ends (then it returns ctx's
// error and leaves the remaining connections to Close).
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.closeListeners()
	s.unpark()
	wait := time.Millisecond
	for {
		if s.closeIdle() {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.closing.Store(true)
	s.closeListeners()
	s.unpark()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.rw.Close()
	}
	return nil
}

func (s *Server) track(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, l)
		return true
	}
	if s.closing.Load() {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[*net.Listener]struct{})
	}
	s.listeners[l] = struct{}{}
	return true
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range s.listeners {
		(*l).Close()
	}
}

func (s *Server) add(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) remove(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeIdle closes the connections waiting for a request (and those that
// never sent one within five seconds) and reports whether none are left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		st := c.state.Load()
		if st == stateIdle || st == stateNew && time.Since(c.since) > 5*time.Second {
			c.rw.Close()
			delete(s.conns, c)
		}
	}
	return len(s.conns) == 0
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) maxHeaderBytes() int64 {
	if s.MaxHeaderBytes > 0 {
		return int64(s.MaxHeaderBytes)
	}
	return http.DefaultMaxHeaderBytes
}

func (s *Server) headerTimeout() time.Duration {
	if s.ReadHeaderTimeout > 0 {
		return s.ReadHeaderTimeout
	}
	return s.ReadTimeout
}

// parkWait is how long an idle connection keeps its goroutine; <= 0:
// always.
func (s *Server) parkWait() time.Duration {
	if s.parkAfter != 0 {
		return s.parkAfter
	}
	return parkAfter
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return s.ReadTimeout
}

func (s *Server) reader(r *connReader) *bufio.Reader {
	if br, ok := s.readers.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, readBufSize)
}

// readBufSize is the size of a connection's read buffer while it reads a
// request.
const readBufSize = 4 << 10

func (s *Server) header() http.Header {
	if h, ok := s.headers.Get().(http.Header); ok {
		return h
	}
	return make(http.Header)
}

func (s *Server) spare() *[readBufSize]byte {
	if b, ok := s.spares.Get().(*[readBufSize]byte); ok {
		return b
	}
	return new([readBufSize]byte)
}

func (s *Server) writer(w *conn) *bufio.Writer {
	if bw, ok := s.writers.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, 4<<10)
}

// dateLine is a Date header for one second, built once per second rather
// than once per response.
type dateLine struct {
	unix int64
	line []byte // "Date: ...\r\n"
}

func (s *Server) date(now time.Time) []byte {
	sec := now.Unix()
	if d := s.dates.Load(); d != nil && d.unix == sec {
		return d.line
	}
	d := &dateLine{unix: sec}
	d.line = append([]byte("Date: "), now.UTC().AppendFormat(nil, http.TimeFormat)...)
	d.line = append(d.line, "\r\n"...)
	s.dates.Store(d)
	return d.line
}
