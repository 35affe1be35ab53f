package acme

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestRedirect sends raw requests to the redirect on a real listener: 308
// to the same host, path and query over HTTPS; a Host that is neither a DNS
// name nor an IP address (net/http lets "!$()" through) never reaches the
// Location.
func TestRedirect(t *testing.T) {
	for _, port := range []string{"443", "8443"} {
		srv := httptest.NewServer(Redirect(port))
		suffix := ""
		if port != "443" {
			suffix = ":8443"
		}
		for _, c := range []struct {
			request  string
			status   int
			location string
		}{
			{"GET /login.php?next=%2Fa&x=1 HTTP/1.1\r\nHost: www.example.com\r\n\r\n", 308, "https://www.example.com" + suffix + "/login.php?next=%2Fa&x=1"},
			{"POST /form HTTP/1.1\r\nHost: www.example.com:80\r\nContent-Length: 3\r\n\r\na=b", 308, "https://www.example.com" + suffix + "/form"},
			{"GET //evil.example/x HTTP/1.1\r\nHost: www.example.com\r\n\r\n", 308, "https://www.example.com" + suffix + "//evil.example/x"},
			{"GET http://192.0.2.1/p?q HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n", 308, "https://192.0.2.1" + suffix + "/p?q"},
			{"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", 308, "https://[2001:db8::1]" + suffix + "/"},
			{"GET / HTTP/1.1\r\nHost: evil.example!$(x)\r\n\r\n", 400, ""},
			{"GET / HTTP/1.0\r\n\r\n", 400, ""},
		} {
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			conn.Write([]byte(c.request))
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			conn.Close()
			if err != nil {
				t.Fatalf("%q: %v", c.request, err)
			}
			res.Body.Close()
			if res.StatusCode != c.status || res.Header.Get("Location") != c.location {
				t.Errorf("port %s, %q: %d %q, want %d %q", port, c.request, res.StatusCode, res.Header.Get("Location"), c.status, c.location)
			}
		}
		srv.Close()
	}
}
