package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/accesslog"
	"github.com/sessiongate/sessiongate/proxy/upstream"
)

// BenchmarkServeHTTP measures the proxy's own per-request path: the
// handler is called directly (no client-side network) and forwards to an
// httptest backend over pooled keep-alive connections.
func BenchmarkServeHTTP(b *testing.B) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from lamp01\n")
	}))
	defer be.Close()
	p := newFarm(b, []string{be.URL}, nil).proxy
	req := httptest.NewRequest(http.MethodGet, "http://front/index.php?x=1", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	req.Header.Set("Cookie", "a=1")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := &discardWriter{h: http.Header{}}
		p.ServeHTTP(w, req.Clone(req.Context()))
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

// discardWriter is the cheapest ResponseWriter, so allocs/op are the
// proxy's and the upstream client's.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(p), nil
}
func (w *discardWriter) WriteHeader(s int) { w.status = s }

// BenchmarkServeHTTPTransport is BenchmarkServeHTTP with http.Transport
// as the upstream, the baseline the Lean upstream is measured against.
func BenchmarkServeHTTPTransport(b *testing.B) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from lamp01\n")
	}))
	defer be.Close()
	p := newFarm(b, []string{be.URL}, func(o *Options) {
		o.Transport = upstream.NewTransport(upstream.TransportOptions{DialTimeout: time.Second, ResponseTimeout: 5 * time.Second, MaxIdleConns: 8})
	}).proxy
	req := httptest.NewRequest(http.MethodGet, "http://front/index.php?x=1", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := &discardWriter{h: http.Header{}}
		p.ServeHTTP(w, req.Clone(req.Context()))
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

// BenchmarkServeHTTPAccessLog is BenchmarkServeHTTP with the access log
// off and on (to a file, as in production), for its cost per request.
func BenchmarkServeHTTPAccessLog(b *testing.B) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from lamp01\n")
	}))
	defer be.Close()
	for _, tc := range []struct {
		name   string
		on     bool
		format accesslog.Format
	}{{"off", false, 0}, {"combined", true, accesslog.Combined}, {"json", true, accesslog.JSON}} {
		b.Run(tc.name, func(b *testing.B) {
			var l *accesslog.Logger
			if tc.on {
				var err error
				if l, err = accesslog.Open(filepath.Join(b.TempDir(), "access.log"), accesslog.Options{Format: tc.format}); err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); l.Run(ctx) }()
				defer func() { cancel(); <-done }()
			}
			p := newFarm(b, []string{be.URL}, func(o *Options) {
				if l != nil {
					o.AccessLog = l
				}
			}).proxy
			req := httptest.NewRequest(http.MethodGet, "http://front/index.php?x=1", nil)
			req.RemoteAddr = "192.0.2.1:1234"
			req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0")
			b.ReportAllocs()
			for b.Loop() {
				w := &countedWriter{discardWriter: discardWriter{h: http.Header{}}}
				p.ServeHTTP(w, req.Clone(req.Context()))
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
			if l != nil && l.Dropped() > 0 {
				b.Logf("%d lines dropped", l.Dropped())
			}
		})
	}
}
