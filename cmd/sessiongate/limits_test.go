package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// getFrom sends one GET from the loopback address local, with the given
// X-Forwarded-For (none if empty), and returns the status and Retry-After.
func getFrom(t *testing.T, local, front, xff string) (int, string) {
	t.Helper()
	c := dialFrom(t, local, front)
	defer c.Close()
	req := "GET /x HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n"
	if xff != "" {
		req += "X-Forwarded-For: " + xff + "\r\n"
	}
	res := rawResponse(t, c, req+"\r\n")
	return res.StatusCode, res.Header.Get("Retry-After")
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// metricValue is the value of the series named exactly series in the
// exposition m, or -1.
func metricValue(m, series string) float64 {
	for l := range strings.Lines(m) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

func rawResponse(t *testing.T, c net.Conn, req string) *http.Response {
	t.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufioReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// exhaust sends requests as client until one gets 429 and checks it: the
// first burst pass (the bucket starts full and only refills), and at 1
// request/s the 429 comes within burst+10 requests unless they take 10s.
func exhaust(t *testing.T, burst int, send func() (int, string)) {
	t.Helper()
	for i := range burst + 10 {
		st, after := send()
		if i < burst && st != 200 {
			t.Fatalf("request %d of the burst: %d", i, st)
		}
		if st == http.StatusTooManyRequests {
			if after != "1" {
				t.Errorf("429 with Retry-After %q, want 1", after)
			}
			return
		}
	}
	t.Fatal("no 429")
}

// closedAtOnce reports whether the gate closed c without answering.
func closedAtOnce(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestPerClientLimits drives limits through the real listener on both
// engines: requests over the rate get 429 with Retry-After, keyed on the
// client behind a trusted proxy; a client's connections beyond its limit
// are closed at once while others and exempt clients connect; refusals
// show in the metrics and /api/status.
func TestPerClientLimits(t *testing.T) {
	for _, engine := range []string{"h1", "net/http"} {
		t.Run(strings.ReplaceAll(engine, "/", "-"), func(t *testing.T) {
			be := xffBackend(t)
			g := startCaptured(t, plainGateYAML(be.URL, "  engine: "+engine+"\n")+
				"trusted_proxies: [127.0.0.4]\n"+
				"limits:\n  requests_per_second: 1\n  burst: 3\n  connections_per_client: 2\n  exempt: [127.0.0.3]\n")
			front := g.addrs.front

			exhaust(t, 3, func() (int, string) { return getFrom(t, "127.0.0.1", front, "") })
			if st, _ := getFrom(t, "127.0.0.5", front, ""); st != 200 {
				t.Errorf("another client got %d", st)
			}
			for range 10 {
				if st, _ := getFrom(t, "127.0.0.3", front, ""); st != 200 {
					t.Fatalf("exempt client got %d", st)
				}
			}
			// Behind the trusted proxy, each forwarded-for client has its
			// own bucket, and the proxy itself is not one.
			exhaust(t, 3, func() (int, string) { return getFrom(t, "127.0.0.4", front, "203.0.113.5") })
			if st, _ := getFrom(t, "127.0.0.4", front, "203.0.113.6"); st != 200 {
				t.Errorf("next client behind the proxy got %d", st)
			}
			// A client claiming another's address from an untrusted peer
			// is the peer.
			if st, _ := getFrom(t, "127.0.0.6", front, "203.0.113.6"); st != 200 {
				t.Errorf("untrusted X-Forwarded-For was believed: %d", st)
			}

			// A refused request with an ambiguous body (chunked and
			// Content-Length) still closes its connection: nothing hidden
			// behind the body is served.
			exhaust(t, 3, func() (int, string) { return getFrom(t, "127.0.0.8", front, "") })
			sm := dialFrom(t, "127.0.0.8", front)
			io.WriteString(sm, "POST /x HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n"+
				"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: s\r\n\r\n")
			all, _ := io.ReadAll(sm) // until the gate closes (or dialFrom's 10s deadline)
			if n := strings.Count(string(all), "HTTP/1.1 "); n != 1 {
				t.Errorf("%d responses to a refused request with a hidden one, want 1:\n%s", n, all)
			}

			// Connections: two open, the third closed at accept.
			a, b := dialFrom(t, "127.0.0.7", front), dialFrom(t, "127.0.0.7", front)
			c := dialFrom(t, "127.0.0.7", front)
			if !closedAtOnce(c) {
				t.Error("third connection of one client was not closed")
			}
			if res := rawResponse(t, a, "GET /x HTTP/1.1\r\nHost: s\r\n\r\n"); res.StatusCode != 200 {
				t.Errorf("a connection within the limit got %d", res.StatusCode)
			}
			conns := []net.Conn{}
			for range 4 {
				conns = append(conns, dialFrom(t, "127.0.0.3", front))
			}
			for _, c := range conns {
				if res := rawResponse(t, c, "GET /x HTTP/1.1\r\nHost: s\r\n\r\n"); res.StatusCode != 200 {
					t.Errorf("exempt connection got %d", res.StatusCode)
				}
			}
			// Closing one frees its slot (once the gate has seen the close).
			b.Close()
			deadline := time.Now().Add(5 * time.Second)
			for {
				c := dialFrom(t, "127.0.0.7", front)
				io.WriteString(c, "GET /x HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
				// 200, or 429 should the retries exceed the rate: either
				// way the connection was let in.
				if res, err := http.ReadResponse(bufioReader(c), nil); err == nil && res.StatusCode != 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the slot of a closed connection was not freed within 5s")
				}
				time.Sleep(20 * time.Millisecond) // the gate notices the close asynchronously
			}

			m := scrape(t, g.addrs.admin)
			rate, refusedConns := metricValue(m, `sessiongate_client_refused_total{reason="rate"}`),
				metricValue(m, `sessiongate_client_refused_total{reason="connections"}`)
			if rate < 2 || refusedConns < 1 {
				t.Errorf("metrics:\n%s", grepLines(m, "client_refused"))
			}
			res, err := http.Get("http://" + g.addrs.admin + "/api/status")
			if err != nil {
				t.Fatal(err)
			}
			var st struct {
				FrontDoor *struct {
					RateLimited        uint64 `json:"rate_limited"`
					ConnectionsRefused uint64 `json:"connections_refused"`
					ClientsTracked     int    `json:"clients_tracked"`
				} `json:"front_door"`
			}
			json.NewDecoder(res.Body).Decode(&st)
			res.Body.Close()
			if f := st.FrontDoor; f == nil || f.RateLimited != uint64(rate) || f.ConnectionsRefused < 1 || f.ClientsTracked < 4 {
				t.Errorf("/api/status front_door = %+v", f)
			}
		})
	}
}

// TestPerClientLimitsBehindProxyProtocol: the client a PROXY header names
// is the one limited, IPv6 clients by /64: two addresses of one /64 share
// its connections, another /64 does not.
func TestPerClientLimitsBehindProxyProtocol(t *testing.T) {
	be := xffBackend(t)
	g := startCaptured(t, plainGateYAML(be.URL, "")+
		"proxy_protocol:\n  enabled: true\n  trusted: [127.0.0.2]\n"+
		"limits:\n  requests_per_second: 1\n  burst: 2\n  connections_per_client: 1\n")
	front := g.addrs.front
	open := func(src string) net.Conn {
		c := dialFrom(t, "127.0.0.2", front)
		if _, err := c.Write(v2Header(t, proxyproto.PROXY, src)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	held := open("2001:db8:5:6::1")
	if res := rawResponse(t, held, "GET /x HTTP/1.1\r\nHost: s\r\n\r\n"); res.StatusCode != 200 {
		t.Fatalf("first connection got %d", res.StatusCode)
	}
	if !closedAtOnce(open("2001:db8:5:6::2")) {
		t.Error("a second connection from the same /64 was not closed")
	}
	other := open("2001:db8:5:7::1")
	if res := rawResponse(t, other, "GET /x HTTP/1.1\r\nHost: s\r\n\r\n"); res.StatusCode != 200 {
		t.Errorf("another /64 got %d", res.StatusCode)
	}
	// The rate too follows the header's client: 2001:db8:5:6::/64 has
	// used one request of its burst of 2.
	if res := rawResponse(t, held, "GET /x HTTP/1.1\r\nHost: s\r\n\r\n"); res.StatusCode != 200 {
		t.Errorf("second request got %d", res.StatusCode)
	}
	for i := range 10 {
		res := rawResponse(t, held, "GET /x HTTP/1.1\r\nHost: s\r\n\r\n")
		if res.StatusCode == http.StatusTooManyRequests {
			break
		}
		if i == 9 {
			t.Error("no 429 for the /64 over its rate")
		}
	}
}
