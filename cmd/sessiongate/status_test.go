package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
)

type statusDoc struct {
	Backends []struct{ Name, State string } `json:"backends"`
	Nodes    []struct{ Addr, State string } `json:"nodes"`
}

func getStatus(t *testing.T, admin string) statusDoc {
	t.Helper()
	res, err := http.Get("http://" + admin + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var doc statusDoc
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestStatusReportsDownWithinIntervalTimesFall stops a backend and a
// memcached node and expects /api/status (and /metrics) to say so within
// health.interval × health.fall, plus scheduling slack: the node is
// restarting at once (its watcher sees the connection close), then down once
// memcached.restart_hold has passed.
func TestStatusReportsDownWithinIntervalTimesFall(t *testing.T) {
	const interval, fall = 200 * time.Millisecond, 2
	mc := memtest.Start(t, 3)
	var backends []*httptest.Server
	for range 2 {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
		t.Cleanup(s.Close)
		backends = append(backends, s)
	}
	cfg := plainConfig(backends[0].URL, backends[1].URL)
	cfg = strings.Replace(cfg, "health:\n  interval: 100ms\n", fmt.Sprintf("health:\n  path: /health.php\n  interval: %v\n  fall: %d\n", interval, fall), 1)
	cfg += "session:\n  cookie: PHPSESSID\nmemcached:\n  timeout: 100ms\n  restart_hold: 300ms\n  servers: [" + strings.Join(mc.Addrs(), ", ") + "]\n"
	r := start(t, writeConfig(t, cfg))

	deadline := time.Now().Add(5 * time.Second)
	for doc := getStatus(t, r.addrs.admin); ; doc = getStatus(t, r.addrs.admin) {
		up := 0
		for _, n := range doc.Nodes {
			if n.State == "up" {
				up++
			}
		}
		if up == 3 && len(doc.Backends) == 2 && doc.Backends[0].State == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("farm never came up: %+v", doc)
		}
		time.Sleep(20 * time.Millisecond)
	}

	backends[0].Close()
	mc.Stop(1)
	stopped := time.Now()
	budget := interval*fall + interval + 500*time.Millisecond // one probe in flight, -race slack
	var doc statusDoc
	for {
		doc = getStatus(t, r.addrs.admin)
		if doc.Backends[0].State == "down" && doc.Nodes[1].State != "up" {
			break
		}
		if time.Since(stopped) > 5*time.Second {
			t.Fatalf("not reported down: %+v", doc)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(stopped)
	if took > budget {
		t.Errorf("reported down after %v, budget %v", took, budget)
	}
	if doc.Backends[1].State != "up" || doc.Nodes[0].State != "up" || doc.Nodes[2].State != "up" {
		t.Errorf("healthy parts reported wrong: %+v", doc)
	}
	t.Logf("backend and memcached node reported down %v after stopping them (interval %v × fall %d)", took, interval, fall)
	for doc.Nodes[1].State != "down" {
		if time.Since(stopped) > 5*time.Second {
			t.Fatalf("node not declared down after restart_hold: %+v", doc)
		}
		time.Sleep(20 * time.Millisecond)
		doc = getStatus(t, r.addrs.admin)
	}

	res, err := http.Get("http://" + r.addrs.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`sessiongate_backend_up{backend="lamp01"} 0`,
		`sessiongate_backend_up{backend="lamp02"} 1`,
		fmt.Sprintf(`sessiongate_memcached_up{node=%q} 0`, mc.Addr(1)),
		fmt.Sprintf(`sessiongate_memcached_connection_losses_total{node=%q} 1`, mc.Addr(1)),
		fmt.Sprintf(`sessiongate_memcached_restarts_total{node=%q} 0`, mc.Addr(1)),
		"sessiongate_memcached_nodes_restarting 0",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestMetricsPassPromtool scrapes a running sessiongate with the session
// layer and TLS on, after some traffic, and has Prometheus's own promtool check the
// exposition.
func TestMetricsPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		// Where scripts/deps.sh test (run by make test) puts it.
		promtool, err = exec.LookPath("../../.tools/bin/promtool")
	}
	if err != nil {
		t.Fatal("promtool not found: run make test (scripts/deps.sh test puts it in .tools/bin), or put Debian's prometheus package's promtool in PATH")
	}
	mc := memtest.Start(t, 3)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer be.Close()
	certFile, keyFile, roots := selfSigned(t, t.TempDir())
	cfg := plainConfig(be.URL) + "session:\n  cookie: PHPSESSID\nmemcached:\n  servers: [" + strings.Join(mc.Addrs(), ", ") + "]\n" +
		"tls:\n  cert: " + certFile + "\n  key: " + keyFile + "\n"
	r := start(t, writeConfig(t, cfg))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	// A session on one node only: the other two get copies.
	lone := newID(t)
	if got := mcCmd(t, mc.Addr(0), "set "+lone+" 0 600 10\r\nvisits|i:1\r\n"); got != "STORED" {
		t.Fatalf("set: %q", got)
	}
	for _, c := range []string{"", "PHPSESSID=abcdefghijklmnopqrstuvwxyz", "PHPSESSID=bad!", "PHPSESSID=" + lone} {
		req, _ := http.NewRequest(http.MethodGet, "https://"+r.addrs.front+"/", nil)
		if c != "" {
			req.Header.Set("Cookie", c)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	res, err := http.Get("http://" + r.addrs.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{"sessiongate_requests_total", `sessiongate_session_lookups_total{outcome="unknown_stripped"} 1`,
		`sessiongate_session_lookups_total{outcome="invalid_stripped"} 1`, "sessiongate_memcached_latency_seconds_bucket",
		`sessiongate_session_lookups_total{outcome="repaired"} 1`, "sessiongate_session_repairs_total 2",
		`sessiongate_tls_certificate_expiry_timestamp_seconds{name="sessiongate test"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestAdminAnswersOnlyItsOwnNames sends raw requests to the real admin
// listener: a DNS-rebinding page's Host is refused with 421 and gets no
// data; the listener's own address, loopback names and admin.hosts are
// served; a connection that sends nothing is closed at the header timeout.
func TestAdminAnswersOnlyItsOwnNames(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(be.Close)
	cfg := strings.Replace(plainConfig(be.URL), "  token: t0ken\n", "  token: t0ken\n  hosts: [admin.example.com]\n", 1)
	r := start(t, writeConfig(t, cfg))
	_, port, _ := strings.Cut(r.addrs.admin, ":")
	for host, want := range map[string]int{
		"evil.example":          http.StatusMisdirectedRequest,
		"evil.example:" + port:  http.StatusMisdirectedRequest,
		"127.0.0.1:" + port:     http.StatusOK,
		"localhost:" + port:     http.StatusOK,
		"[::1]:" + port:         http.StatusOK,
		"admin.example.com":     http.StatusOK,
		"admin.example.com:443": http.StatusOK,
	} {
		res := rawRequest(t, r.addrs.admin, "GET /api/status HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
		if res == nil || res.StatusCode != want {
			t.Errorf("Host %s: response %v, want status %d", host, res, want)
		}
	}

	c, err := net.DialTimeout("tcp", r.addrs.admin, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Errorf("silent connection not closed by the server within 10s: %v", err)
	}
}
