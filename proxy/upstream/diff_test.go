package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The differential test of the connection reuse decision: the same
// scripted backend bytes go to Lean and to net/http's Transport, which
// must agree on the first response and, above all, Lean must never send
// the next request on a connection Transport would not have reused.

// diffMaxHead is the head bound both clients get, small enough for the
// fuzzer to cross.
const diffMaxHead = 1024

// script is what the backend does on the first connection: answer the
// first request with first, then, once the client is done with it, send
// later. Every other request, on any connection, gets "next".
type script struct {
	method string
	first  []byte
	later  []byte
}

// outcome is what a client made of a script.
type outcome struct {
	err     error // of the first round trip
	status  int
	body    string
	bodyErr error
	reused  bool // the second request went on the first connection
	next    string
	nextErr error
}

// scriptServer serves one script on loopback.
type scriptServer struct {
	ln        net.Listener
	sc        script
	needEOF   bool          // the first answer ends only where the connection does
	release   chan struct{} // the client is done with the first response
	sent      chan struct{} // later has been written
	written   atomic.Int64  // bytes written on the first connection
	reused    atomic.Bool
	conns     atomic.Int32
	wg        sync.WaitGroup
	mu        sync.Mutex
	accepted  []net.Conn
	closeOnce sync.Once
}

func newScriptServer(t *testing.T, sc script) *scriptServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptServer{ln: ln, sc: sc, needEOF: needsEOF(sc), release: make(chan struct{}), sent: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			noTimeWait(c)
			s.mu.Lock()
			s.accepted = append(s.accepted, c)
			s.mu.Unlock()
			n := s.conns.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.serve(c, n == 1)
			}()
		}
	}()
	return s
}

func (s *scriptServer) close() {
	s.closeOnce.Do(func() {
		s.ln.Close()
		s.mu.Lock()
		for _, c := range s.accepted {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

func (s *scriptServer) serve(c net.Conn, first bool) {
	br := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for i := 0; ; i++ {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		if !first || i > 0 {
			if first {
				s.reused.Store(true)
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
			continue
		}
		n, _ := c.Write(s.sc.first)
		s.written.Add(int64(n))
		if s.needEOF {
			c.(*net.TCPConn).CloseWrite()
			close(s.sent)
			continue
		}
		select {
		case <-s.release:
		case <-time.After(10 * time.Second):
			return
		}
		if len(s.sc.later) > 0 {
			n, _ := c.Write(s.sc.later)
			s.written.Add(int64(n))
		}
		close(s.sent)
	}
}

// needsEOF reports whether a client reading sc.first as a response would
// wait for more bytes or for the connection's end: then the server ends
// it, so that both clients see the same thing without a timeout.
func needsEOF(sc script) bool {
	r := &eofFlag{r: bytes.NewReader(sc.first)}
	br := bufio.NewReaderSize(r, 4<<10)
	req, _ := http.NewRequest(sc.method, "http://backend/", nil)
	for {
		res, err := http.ReadResponse(br, req)
		if err != nil {
			return r.hit
		}
		if res.StatusCode == http.StatusSwitchingProtocols {
			return true // no longer HTTP: the connection's end ends it
		}
		if res.StatusCode >= 100 && res.StatusCode < 200 {
			continue
		}
		io.Copy(io.Discard, res.Body)
		return r.hit
	}
}

// eofFlag notes a read past the end of r.
type eofFlag struct {
	r   io.Reader
	hit bool
}

func (e *eofFlag) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.hit = true
	}
	return n, err
}

// noTimeWait makes closing c reset the connection rather than leave it
// in TIME_WAIT: the fuzzer opens thousands of connections a second, and
// their TIME_WAITs would take every ephemeral port of the machine (and of
// whoever else runs tests on it) within seconds.
func noTimeWait(c net.Conn) {
	c.(*net.TCPConn).SetLinger(0)
}

// watchedConn is the Transport's connection, watched for when the
// Transport has settled after the first response.
type watchedConn struct {
	net.Conn
	read    atomic.Int64
	pending atomic.Bool
	closed  atomic.Bool
}

func (w *watchedConn) Read(p []byte) (int, error) {
	w.pending.Store(true)
	n, err := w.Conn.Read(p)
	w.pending.Store(false)
	w.read.Add(int64(n))
	return n, err
}

func (w *watchedConn) Close() error {
	w.closed.Store(true)
	return w.Conn.Close()
}

// settle waits, bounded, until cond holds.
func settle(t *testing.T, what string, cond func() bool) {
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not settle in 5s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// run sends the script's first request, reads the answer, lets the
// backend send what comes later, waits until the client has seen it, and
// sends a second request.
func run(t *testing.T, sc script, rt http.RoundTripper, settled func(s *scriptServer) bool) outcome {
	s := newScriptServer(t, sc)
	defer s.close()
	var o outcome
	url := "http://" + s.ln.Addr().String()
	req, _ := http.NewRequest(sc.method, url+"/one", nil)
	res, err := rt.RoundTrip(req)
	o.err = err
	if err == nil {
		o.status = res.StatusCode
		b, err := io.ReadAll(res.Body)
		o.body, o.bodyErr = string(b), err
		res.Body.Close()
	}
	if !s.needEOF {
		close(s.release)
	}
	select {
	case <-s.sent:
	case <-time.After(5 * time.Second):
		// The first connection never got as far (a dial or write failure).
	}
	settle(t, fmt.Sprintf("%T", rt), func() bool { return settled(s) })
	req, _ = http.NewRequest(http.MethodGet, url+"/two", nil)
	res, err = rt.RoundTrip(req)
	o.nextErr = err
	if err == nil {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		o.next = fmt.Sprintf("%d %s", res.StatusCode, b)
	}
	s.close()
	o.reused = s.reused.Load()
	return o
}

// runLean runs sc through a Lean.
func runLean(t *testing.T, sc script) outcome {
	var mu sync.Mutex
	var first *net.TCPConn
	l := &Lean{ResponseTimeout: 5 * time.Second, MaxIdle: 4, IdleTimeout: time.Minute, MaxHeaderBytes: diffMaxHead,
		dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err == nil {
				noTimeWait(c)
			}
			mu.Lock()
			if first == nil && err == nil {
				first = c.(*net.TCPConn)
			}
			mu.Unlock()
			return c, err
		}}
	defer l.CloseIdleConnections()
	// Settled: the bytes sent later are readable at the client's end of
	// the first connection (or it is closed).
	settled := func(s *scriptServer) bool {
		mu.Lock()
		c := first
		mu.Unlock()
		if c == nil || len(sc.later) == 0 || s.needEOF {
			return true
		}
		raw, err := c.SyscallConn()
		if err != nil {
			return true
		}
		var b [1]byte
		r := false
		if raw.Read(func(fd uintptr) bool { r = readable(fd, b[:]); return true }) != nil {
			return true // closed
		}
		return r
	}
	return run(t, sc, l, settled)
}

// runTransport runs sc through net/http's Transport as NewTransport
// builds it.
func runTransport(t *testing.T, sc script) outcome {
	tr := NewTransport(TransportOptions{ResponseTimeout: 5 * time.Second, MaxIdleConns: 4, MaxHeaderBytes: diffMaxHead})
	defer tr.CloseIdleConnections()
	var mu sync.Mutex
	var first *watchedConn
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		noTimeWait(c)
		w := &watchedConn{Conn: c}
		mu.Lock()
		if first == nil {
			first = w
		}
		mu.Unlock()
		return w, nil
	}
	// Settled: the Transport closed the first connection, or it has read
	// everything the backend sent on it and waits for more (its read loop
	// peeks at an idle connection and closes it on unsolicited bytes).
	settled := func(s *scriptServer) bool {
		mu.Lock()
		c := first
		mu.Unlock()
		return c == nil || c.closed.Load() || c.pending.Load() && c.read.Load() == s.written.Load()
	}
	return run(t, sc, tr, settled)
}

// checkScript holds Lean to Transport on sc.
func checkScript(t *testing.T, sc script) {
	t.Helper()
	got, want := runLean(t, sc), runTransport(t, sc)
	desc := fmt.Sprintf("%s, backend sent %q then %q", sc.method, sc.first, sc.later)
	// Whatever the bytes, the second request gets its own answer.
	if got.nextErr != nil || got.next != "200 next" {
		t.Fatalf("%s: Lean's next request got %q, %v; want its own answer", desc, got.next, got.nextErr)
	}
	if got.reused && !want.reused {
		t.Fatalf("%s: Lean reused the connection, Transport did not", desc)
	}
	switch {
	case errors.Is(got.err, errTooManyInterim):
		return // Transport bounds 1xx heads by bytes only
	case want.err == nil && want.status == http.StatusSwitchingProtocols:
		return // terminal for Transport; never asked for on Lean's path
	}
	tooLarge := func(err error) bool {
		return errors.Is(err, errHeadTooLarge) || err != nil && strings.Contains(err.Error(), "exceeded")
	}
	if tooLarge(got.err) != tooLarge(want.err) {
		t.Fatalf("%s: head bound: Lean %v, Transport %v", desc, got.err, want.err)
	}
	if (got.err == nil) != (want.err == nil) {
		t.Fatalf("%s: Lean's error %v, Transport's %v", desc, got.err, want.err)
	}
	if got.status != want.status || got.body != want.body || (got.bodyErr == nil) != (want.bodyErr == nil) {
		t.Fatalf("%s: Lean got %d %q (%v), Transport %d %q (%v)", desc,
			got.status, got.body, got.bodyErr, want.status, want.body, want.bodyErr)
	}
}

// diffSeeds are backend answers that must not poison the next request:
// junk after bodies, bodies where none may be, 1xx floods, huge heads.
var diffSeeds = []script{
	{"GET", []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), nil},
	{"GET", []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECRET"), nil},
	{"GET", []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), []byte("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECRET")},
	{"GET", []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokX"), nil},
	{"GET", []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), []byte("\r\n")},
	{"GET", []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"), []byte("junk")},
	{"GET", []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"), nil},
	{"HEAD", []byte("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"), nil},
	{"HEAD", []byte("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECRET"), nil},
	{"HEAD", []byte("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"), []byte("SECRET")},
	{"GET", []byte("HTTP/1.1 204 No Content\r\n\r\n"), nil},
	{"GET", []byte("HTTP/1.1 204 No Content\r\nContent-Length: 6\r\n\r\nSECRET"), nil},
	{"GET", []byte("HTTP/1.1 204 No Content\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECRET")},
	{"GET", []byte("HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\nSECRET"), nil},
	{"GET", []byte("HTTP/1.1 304 Not Modified\r\n\r\n"), []byte("SECRET")},
	{"GET", []byte("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"), nil},
	{"GET", []byte("HTTP/1.1 200 OK\r\n\r\nuntil the end"), nil},
	{"GET", []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok"), nil},
	{"GET", []byte("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"), nil},
	{"GET", []byte(strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", 2) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), nil},
	{"GET", []byte(strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 6) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), nil},
	{"GET", []byte(strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 40) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), nil},
	{"GET", []byte("HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), []byte("HTTP/1.1 103 Early Hints\r\n\r\n")},
	{"GET", []byte("HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Pad: 0123456789\r\n", 60) + "Content-Length: 2\r\n\r\nok"), nil},
	{"GET", []byte("HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Pad: 0123456789\r\n", 40) + "Content-Length: 2\r\n\r\nok"), nil},
	{"GET", []byte("HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("a", 3000) + "\r\nContent-Length: 2\r\n\r\nok"), nil},
	{"GET", []byte("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"), nil},
	{"GET", []byte("garbage\r\n\r\n"), nil},
	{"GET", []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"), nil},
	{"GET", nil, nil},
}

// FuzzReuse: on any backend bytes, Lean answers the first request as
// Transport does (status, body, whether it failed; except where Lean is
// stricter: more than maxInterim 1xx heads), never reuses a connection
// Transport would not, and the next request always gets its own answer.
func FuzzReuse(f *testing.F) {
	for _, sc := range diffSeeds {
		f.Add(sc.method == http.MethodHead, sc.first, sc.later)
	}
	f.Fuzz(func(t *testing.T, head bool, first, later []byte) {
		if len(first) > 8<<10 || len(later) > 1<<10 {
			return
		}
		sc := script{method: http.MethodGet, first: first, later: later}
		if head {
			sc.method = http.MethodHead
		}
		checkScript(t, sc)
	})
}
