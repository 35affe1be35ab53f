package main

// A backend that sends bytes its response's framing does not account for
// must never have them read as the answer to someone else's request.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// secret is what a misbehaving backend sends beyond a response: a whole
// response of its own, which a client that reuses the connection would
// take for the answer to its next request.
const secret = "SECRET page of the user before you"

var junk = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(secret), secret)

// junkBackend is a raw HTTP/1.1 backend on loopback (a real PHP cannot
// misbehave on demand). It answers /next/N with "next-N", and /bad/KIND
// with the response of KIND followed by junk: in the same write, or,
// with ?later, once the test sends on release, after which it reports on
// sent. KIND is "cl" (junk after a Content-Length body), "head" (a body
// on HEAD), "204" or "304" (a body where none may be). Without junk:
// "bighead" is a 70 KB head, "hints" two 103 Early Hints before the
// answer and "flood" six.
type junkBackend struct {
	ln      net.Listener
	release chan struct{}
	sent    chan struct{}
	wg      sync.WaitGroup
}

func newJunkBackend(t *testing.T) *junkBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &junkBackend{ln: ln, release: make(chan struct{}), sent: make(chan struct{}, 1)}
	var mu sync.Mutex
	var conns []net.Conn
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				b.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *junkBackend) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		kind, bad := strings.CutPrefix(req.URL.Path, "/bad/")
		var answer string
		switch {
		case !bad:
			body := "ok"
			if n, ok := strings.CutPrefix(req.URL.Path, "/next/"); ok {
				body = "next-" + n
			}
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		case kind == "cl":
			answer = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nalice"
		case kind == "head":
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(junk))
		case kind == "204":
			answer = "HTTP/1.1 204 No Content\r\n\r\n"
		case kind == "304":
			answer = "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"
		case kind == "bighead":
			answer = "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 90)+"\r\n", 700) + "Content-Length: 2\r\n\r\nok"
		case kind == "hints", kind == "flood":
			n := 2
			if kind == "flood" {
				n = 6
			}
			answer = strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", n) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		}
		if bad && (kind == "bighead" || kind == "hints" || kind == "flood") {
			if _, err := io.WriteString(c, answer); err != nil {
				return
			}
			continue
		}
		later := req.URL.Query().Has("later")
		if bad && !later {
			answer += junk
		}
		if _, err := io.WriteString(c, answer); err != nil {
			return
		}
		if bad && later {
			select {
			case <-b.release:
			case <-time.After(10 * time.Second):
				return
			}
			_, err := io.WriteString(c, junk)
			b.sent <- struct{}{}
			if err != nil {
				return
			}
		}
	}
}

// TestUpstreamJunkNeverReachesTheNextUser: after a response followed by
// bytes its framing does not cover — after a Content-Length body, on HEAD,
// 204 or 304; sent with the response or only once the proxy is done with
// it — the next users' requests through the real listener get their own
// answers, never those bytes.
func TestUpstreamJunkNeverReachesTheNextUser(t *testing.T) {
	for _, kind := range []string{"cl", "head", "204", "304"} {
		for _, later := range []bool{false, true} {
			name := kind
			if later {
				name += "/later"
			}
			t.Run(name, func(t *testing.T) { junkThenNext(t, kind, later) })
		}
	}
}

func junkThenNext(t *testing.T, kind string, later bool) {
	be := newJunkBackend(t)
	// One idle connection per backend, so that a poisoned one is the one
	// the next request gets.
	g := start(t, writeConfig(t, plainConfig("http://"+be.ln.Addr().String())+"upstream:\n  max_idle_conns: 1\n"))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	target := "http://" + g.addrs.front + "/bad/" + kind
	if later {
		target += "?later"
	}
	method := http.MethodGet
	if kind == "head" {
		method = http.MethodHead
	}
	req, _ := http.NewRequest(method, target, nil)
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if later {
		select {
		case be.release <- struct{}{}:
		case <-time.After(5 * time.Second):
			t.Fatal("the backend never got the request")
		}
		select {
		case <-be.sent:
		case <-time.After(5 * time.Second):
			t.Fatal("the backend did not send the junk")
		}
	}
	for n := range 3 {
		res, err := client.Get(fmt.Sprintf("http://%s/next/%d", g.addrs.front, n))
		if err != nil {
			t.Fatalf("next request: %v", err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if want := fmt.Sprintf("next-%d", n); res.StatusCode != 200 || string(body) != want {
			t.Fatalf("the next user got %d %q, want 200 %q", res.StatusCode, body, want)
		}
	}
}

// TestUpstreamHeadLimits: a response head beyond 64 KiB and a flood of 1xx
// interim responses are answered 502 through the real listener, a couple
// of Early Hints are fine, and the next user gets its own answer.
func TestUpstreamHeadLimits(t *testing.T) {
	be := newJunkBackend(t)
	g := start(t, writeConfig(t, plainConfig("http://"+be.ln.Addr().String())))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i, tc := range []struct {
		path   string
		status int
	}{
		{"/bad/bighead", http.StatusBadGateway},
		{"/bad/flood", http.StatusBadGateway},
		{"/bad/hints", http.StatusOK},
	} {
		res, err := client.Get("http://" + g.addrs.front + tc.path)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.path, res.StatusCode, tc.status)
		}
		res, err = client.Get(fmt.Sprintf("http://%s/next/%d", g.addrs.front, i))
		if err != nil {
			t.Fatalf("after %s: %v", tc.path, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if want := fmt.Sprintf("next-%d", i); string(body) != want {
			t.Errorf("after %s: the next user got %q, want %q", tc.path, body, want)
		}
	}
}
