package proxy

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/proxy/internal/canned"
)

// BenchmarkKeepAlive is the whole plain keep-alive path in one process: a
// client on loopback sends a small GET, h1 reads it, the Proxy forwards it
// through upstream.Lean to a backend that answers every request alike
// without allocating, and the answer goes back. allocs/op are sessiongate's
// own (client and backend allocate nothing per request).
func BenchmarkKeepAlive(b *testing.B) {
	for _, tc := range []struct{ name, req string }{
		{"wrk", "GET /index.php?x=1 HTTP/1.1\r\nHost: front\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"},
		{"browser", "GET /index.php?x=1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0\r\n" +
			"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: de-DE,de;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n" +
			"Cookie: theme=dark; lang=de\r\nConnection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n\r\n"},
	} {
		b.Run(tc.name, func(b *testing.B) { benchKeepAlive(b, tc.req) })
	}
}

func benchKeepAlive(b *testing.B, request string) {
	be := canned.Serve(b, "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 16:12:13 GMT\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Length: 21\r\nConnection: keep-alive\r\n\r\nhello from lamp01 ok\n")
	// The test recorder allocates in Attempt; the default observer does not.
	f := newFarm(b, []string{"http://" + be}, func(o *Options) { o.Observer = nil })
	c, err := net.Dial("tcp", f.front.Listener.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	req := []byte(request)
	buf := make([]byte, 4096)
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for !bytes.HasSuffix(buf[:n], []byte("ok\n")) {
			m, err := c.Read(buf[n:])
			if err != nil {
				b.Fatalf("after %q: %v", buf[:n], err)
			}
			n += m
		}
	}
	roundTrip()
	b.ReportAllocs()
	for b.Loop() {
		roundTrip()
	}
}
