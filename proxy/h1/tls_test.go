package h1

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// testCert is a self-signed certificate for 127.0.0.1 and the pool that
// trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestTLS: over TLS, h1 serves the clients that chose http/1.1 by ALPN, or
// nothing, with Request.TLS set and keep-alive; hands a client that chose
// h2 to TLSNextProto and forgets it (Shutdown neither waits for it nor
// closes it); closes one that chose another protocol it offers
// (acme-tls/1) once the handshake is done; bounds a handshake that never
// comes by the header timeout; and answers a plain-HTTP client 400, as
// net/http does; a refusal (431) reaches the client before the close.
func TestTLS(t *testing.T) {
	const short = 300 * time.Millisecond
	cert, roots := testCert(t)
	handed := make(chan *tls.Conn, 1)
	srv := &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil || !r.TLS.HandshakeComplete {
				http.Error(w, "no TLS state", 500)
				return
			}
			io.WriteString(w, "tls "+r.TLS.NegotiatedProtocol+"\n")
		}),
		ReadHeaderTimeout: short,
		MaxHeaderBytes:    4 << 10,
		IdleTimeout:       30 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1", "acme-tls/1"}},
		TLSNextProto:      map[string]func(*tls.Conn){"h2": func(c *tls.Conn) { handed <- c }},
	}
	addr, served, _ := startServer(t, srv)
	dial := func(alpn ...string) (*tls.Conn, *bufio.Reader) {
		t.Helper()
		c := dialServer(t, addr)
		tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: alpn})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("ALPN %q: %v", alpn, err)
		}
		return tc, bufio.NewReader(tc)
	}

	for _, alpn := range [][]string{{"http/1.1"}, nil} {
		c, br := dial(alpn...)
		for range 2 {
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			readOK(t, br, "tls "+strings.Join(alpn, "")+"\n")
		}
	}

	big, br := dial("http/1.1")
	io.WriteString(big, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: "+strings.Repeat("x", 16<<10)+"\r\n\r\n")
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != 431 {
		t.Errorf("16 KiB head: %v, want 431", err)
	}

	h2, _ := dial("h2")
	var got *tls.Conn
	select {
	case got = <-handed:
	case <-time.After(5 * time.Second):
		t.Fatal("the h2 connection was not handed over within 5s")
	}
	t.Cleanup(func() { got.Close() })
	if p := got.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Errorf("handed over with protocol %q", p)
	}

	acme, br := dial("acme-tls/1")
	if err := readEOF(acme, br); err != nil {
		t.Errorf("acme-tls/1: %v", err)
	}

	silent := dialServer(t, addr) // never starts its handshake
	assertClosedAfter(t, silent, bufio.NewReader(silent), short)
	// One that handshakes, then sends nothing, has the rest of the time
	// from its accept (so not less than short from before its dial).
	t0 := time.Now()
	quiet, br := dial("http/1.1")
	if err := readEOF(quiet, br); err != nil || time.Since(t0) < short {
		t.Errorf("quiet connection: %v, closed after %v, want after %v", err, time.Since(t0), short)
	}

	plain := dialServer(t, addr)
	io.WriteString(plain, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if res, err := http.ReadResponse(bufio.NewReader(plain), nil); err != nil || res.StatusCode != 400 {
		t.Errorf("plain HTTP: %v, want 400", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown with a connection handed over: %v", err)
	}
	<-served
	// The handed-over connection is still the taker's to use.
	go io.WriteString(got, "still open")
	h2.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, len("still open"))
	if _, err := io.ReadFull(h2, buf); err != nil || string(buf) != "still open" {
		t.Errorf("handed-over connection after Shutdown: %q, %v", buf, err)
	}
}
