package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// selfSigned writes a certificate for 127.0.0.1 and its key into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sessiongate test"},
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
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// startTLSHTTP2 starts sessiongate with tls: in front of backend and returns
// it with a client that speaks HTTP/2 to it.
func startTLSHTTP2(t *testing.T, backend string) (*running, *http.Client) {
	t.Helper()
	certFile, keyFile, roots := selfSigned(t, t.TempDir())
	cfg := plainConfig(backend) + "tls:\n  cert: " + certFile + "\n  key: " + keyFile + "\n"
	r := start(t, writeConfig(t, cfg))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return r, &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// TestTLSServesHTTP2 configures tls: and expects clients to get HTTP/2,
// with X-Forwarded-Proto https reaching the backend over HTTP/1.1.
func TestTLSServesHTTP2(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"proto": r.Proto, "xfp": r.Header.Get("X-Forwarded-Proto")})
	}))
	defer be.Close()
	r, client := startTLSHTTP2(t, be.URL)
	res, err := client.Post("https://"+r.addrs.front+"/", "text/plain", bytes.NewReader([]byte("body")))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Errorf("client got %s, want HTTP/2", res.Proto)
	}
	var got map[string]string
	b, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v in %q", err, b)
	}
	if got["proto"] != "HTTP/1.1" || got["xfp"] != "https" {
		t.Errorf("backend saw %v, want HTTP/1.1 with X-Forwarded-Proto https", got)
	}
}

// TestTLSHTTP2GetReachesBackendAsSent: an HTTP/2 GET (its stream ended with
// the headers, so net/http's server gives it an empty Body) takes the lean
// upstream path like an HTTP/1.1 one, and the backend gets the same
// request line, Host, cookies and fields, with no body framing added.
func TestTLSHTTP2GetReachesBackendAsSent(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{
			"proto": r.Proto, "uri": r.RequestURI, "host": r.Host, "cookie": r.Header.Get("Cookie"),
			"x": r.Header.Get("X-Test"), "cl": r.Header.Get("Content-Length"),
			"te": strings.Join(r.TransferEncoding, ","), "ua": r.Header.Get("User-Agent"),
		})
	}))
	defer be.Close()
	r, client := startTLSHTTP2(t, be.URL)
	for _, method := range []string{http.MethodGet, http.MethodDelete} {
		req, err := http.NewRequest(method, "https://"+r.addrs.front+"/p/caf%C3%A9?x=1&y=%20z", nil)
		if err != nil {
			t.Fatal(err)
		}
		// Two cookie fields: HTTP/2 may send crumbs apart; PHP must get one header.
		req.Header.Add("Cookie", "a=1")
		req.Header.Add("Cookie", "b=2")
		req.Header.Set("X-Test", "v")
		req.Header.Set("User-Agent", "h2-test")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.ProtoMajor != 2 {
			t.Errorf("%s: client got %s, want HTTP/2", method, res.Proto)
		}
		var got map[string]string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v in %q", method, err, b)
		}
		want := map[string]string{"proto": "HTTP/1.1", "uri": "/p/caf%C3%A9?x=1&y=%20z", "host": r.addrs.front,
			"cookie": "a=1; b=2", "x": "v", "cl": "", "te": "", "ua": "h2-test"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: backend saw %s %q, want %q (all: %v)", method, k, got[k], v, got)
			}
		}
	}
}

// teeBackend starts a backend serving h on loopback whose listener records
// every byte the backend reads; it is closed when the test ends.
func teeBackend(t *testing.T, h http.HandlerFunc) (*httptest.Server, *teeListener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tee := &teeListener{Listener: ln}
	be := httptest.NewUnstartedServer(h)
	be.Listener = tee
	be.Start()
	t.Cleanup(be.Close)
	return be, tee
}

// teeListener records every byte its connections read.
type teeListener struct {
	net.Listener
	mu  sync.Mutex
	got bytes.Buffer
}

func (l *teeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &teeConn{Conn: c, l: l}, nil
}

func (l *teeListener) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.got.String()
}

type teeConn struct {
	net.Conn
	l *teeListener
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	c.l.got.Write(p[:n])
	c.l.mu.Unlock()
	return n, err
}

// TestHTTP2SpaceInQueryIsRefused: an HTTP/2 request whose :path has a space
// in its query is answered 400 by sessiongate and never reaches the
// backend, whose HTTP/1.1 request line would otherwise read
// "GET /x?a b HTTP/1.1": a target of "/x?a" and a version of "b".
func TestHTTP2SpaceInQueryIsRefused(t *testing.T) {
	be, tee := teeBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "backend: "+r.RequestURI)
	})
	r, client := startTLSHTTP2(t, be.URL)
	get := func(rawQuery string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "https://"+r.addrs.front+"/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.RawQuery = rawQuery // as sent on the wire in :path
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.ProtoMajor != 2 {
			t.Fatalf("client got %s, want HTTP/2", res.Proto)
		}
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("a b"); code != http.StatusBadRequest || !strings.Contains(body, "space in the request target") {
		t.Errorf("query with a space: %d %q, want sessiongate's 400", code, body)
	}
	if code, body := get("a=%20b"); code != 200 || body != "backend: /x?a=%20b" {
		t.Errorf("escaped space: %d %q, want the backend's 200 for /x?a=%%20b", code, body)
	}
	if strings.Contains(tee.String(), "a b") {
		t.Errorf("the backend read a request target with a space:\n%s", tee.String())
	}
}

// TestHTTP2InvalidAuthorityIsRefused: an HTTP/2 :authority with bytes no
// host has (net/http's HTTP/2 server passes it on as the request's Host;
// its HTTP/1 server and proxy/h1 refuse such a Host) gets sessiongate's
// 400 and never reaches the backend, where PHP would take it for the
// site's name. Go's client will not send one, so the requests are frames
// written here.
func TestHTTP2InvalidAuthorityIsRefused(t *testing.T) {
	be, tee := teeBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "backend")
	})
	r, _ := startTLSHTTP2(t, be.URL)
	bad := []string{"a b", "evil.example/reset?x=", `site"><script>`, "site\\x"}
	for _, authority := range bad {
		if got := h2Status(t, r.addrs.front, authority); got != http.StatusBadRequest {
			t.Errorf(":authority %q: status %d, want 400", authority, got)
		}
	}
	if got := h2Status(t, r.addrs.front, "site.example:8443"); got != http.StatusOK {
		t.Errorf("a valid :authority: status %d, want the backend's 200", got)
	}
	seen := tee.String()
	if !strings.Contains(seen, "Host: site.example:8443") {
		t.Fatalf("the valid request did not reach the backend:\n%s", seen)
	}
	for _, authority := range bad {
		if strings.Contains(seen, authority) {
			t.Errorf("the backend read the :authority %q:\n%s", authority, seen)
		}
	}
}

// h2Status sends one HTTP/2 GET / with the given :authority over a new TLS
// connection to addr, frame by frame, and returns the response's status.
func h2Status(t *testing.T, addr, authority string) int {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN chose %q, want h2", p)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", authority}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf(":authority %q: %v", authority, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 {
				code, _ := strconv.Atoi(f.PseudoValue("status"))
				return code
			}
		case *http2.RSTStreamFrame:
			t.Fatalf(":authority %q: stream reset (%v)", authority, f.ErrCode)
		case *http2.GoAwayFrame:
			t.Fatalf(":authority %q: connection closed (%v)", authority, f.ErrCode)
		}
	}
	t.Fatalf(":authority %q: no response in 20 frames", authority)
	return 0
}

// certExpiry reads sessiongate_tls_certificate_expiry_timestamp_seconds
// for name from the admin listener's /metrics; ok is false without it.
func certExpiry(t *testing.T, admin, name string) (at time.Time, ok bool) {
	t.Helper()
	prefix := `sessiongate_tls_certificate_expiry_timestamp_seconds{name="` + name + `"} `
	for l := range strings.Lines(scrape(t, admin)) {
		if v, found := strings.CutPrefix(strings.TrimSpace(l), prefix); found {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			return time.Unix(int64(f), 0), true
		}
	}
	return time.Time{}, false
}

// TestCertificateExpiryMetric: /metrics (and /api/status) give the expiry of the
// certificate tls.cert serves, named by its common name (it has no DNS
// name), and still that one's after a reload (tls applies on restart) that
// comes with a new certificate file.
func TestCertificateExpiryMetric(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer be.Close()
	dir := t.TempDir()
	certFile, keyFile, roots := selfSigned(t, dir)
	r := start(t, writeConfig(t, plainConfig(be.URL)+"tls:\n  cert: "+certFile+"\n  key: "+keyFile+"\n"))
	served, err := servedCert(r.addrs.front, "", roots)
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		got, ok := certExpiry(t, r.addrs.admin, "sessiongate test")
		if !ok || !got.Equal(served.NotAfter) {
			t.Errorf("%s: expiry metric %v (present %v), want the served certificate's %v", when, got, ok, served.NotAfter)
		}
	}
	check("at start")
	// The dashboard's status lists it too.
	res, err := http.Get("http://" + r.addrs.admin + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Certificates []struct {
			Name     string    `json:"name"`
			NotAfter time.Time `json:"not_after"`
		} `json:"certificates"`
	}
	err = json.NewDecoder(res.Body).Decode(&st)
	res.Body.Close()
	if err != nil || len(st.Certificates) != 1 || st.Certificates[0].Name != "sessiongate test" || !st.Certificates[0].NotAfter.Equal(served.NotAfter) {
		t.Errorf("/api/status certificates %+v (%v), want the served one", st.Certificates, err)
	}

	// A certificate expiring a day later replaces the file; a reload
	// leaves the served one, and so the metric, as they were.
	writeCert(t, certFile, keyFile, served.NotAfter.Add(24*time.Hour))
	req, _ := http.NewRequest("POST", "http://"+r.addrs.admin+"/api/reload", nil)
	req.Header.Set("Authorization", "Bearer t0ken")
	if res, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("reload: %s", res.Status)
	}
	if again, err := servedCert(r.addrs.front, "", roots); err != nil || !again.NotAfter.Equal(served.NotAfter) {
		t.Fatalf("after the reload the listener serves %v (%v), want the certificate loaded at start", again, err)
	}
	check("after a reload")
}

// writeCert replaces certFile and keyFile with a self-signed certificate
// like selfSigned's, expiring at notAfter.
func writeCert(t *testing.T, certFile, keyFile string, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "sessiongate test"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

func TestJSONLogs(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hello", "k", 1)
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil || m["msg"] != "hello" {
		t.Errorf("json log line %q: %v", buf.String(), err)
	}
	if _, err := newLogger(&buf, "xml", "info"); err == nil {
		t.Error("accepted -log-format xml")
	}
}

// TestTLSShutdownDrainsBothProtocols: on SIGTERM the TLS listener closes,
// while a request in flight over HTTP/1.1 (h1) and one over HTTP/2
// (net/http) both finish with their answer; serve returns after them.
func TestTLSShutdownDrainsBothProtocols(t *testing.T) {
	entered, release := make(chan struct{}, 2), make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "done")
	}))
	t.Cleanup(be.Close)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	certFile, keyFile, roots := selfSigned(t, t.TempDir())
	g := startCaptured(t, "tls:\n  cert: "+certFile+"\n  key: "+keyFile+"\n"+plainGateYAML(be.URL, ""))

	type result struct {
		proto, body string
		err         error
	}
	results := make(chan result, 2)
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: h2}
		t.Cleanup(tr.CloseIdleConnections)
		go func() {
			res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + g.addrs.front + "/block")
			if err != nil {
				results <- result{err: err}
				return
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			results <- result{res.Proto, string(b), err}
		}()
	}
	for range 2 {
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
			t.Fatal("requests did not reach the backend within 5s")
		}
	}
	stopped := make(chan struct{})
	go func() { g.stop(); close(stopped) }()
	// Shutdown has begun once the listener refuses connections.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", g.addrs.front, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts 5s after SIGTERM")
		}
	}
	select {
	case <-stopped:
		t.Fatal("serve returned with requests in flight")
	default:
	}
	unblock()
	protos := map[string]bool{}
	for range 2 {
		r := <-results
		if r.err != nil || r.body != "done" {
			t.Errorf("%s: %q, %v", r.proto, r.body, r.err)
		}
		protos[r.proto] = true
	}
	if !protos["HTTP/1.1"] || !protos["HTTP/2.0"] {
		t.Errorf("protocols %v, want HTTP/1.1 and HTTP/2.0", protos)
	}
	<-stopped
}
