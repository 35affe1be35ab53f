package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

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
