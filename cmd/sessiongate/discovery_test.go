package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeDNS is a resolver the test controls; it counts the lookups of each
// host, so a test can wait for the next one instead of guessing its time.
type fakeDNS struct {
	mu    sync.Mutex
	hosts map[string][]string
	calls map[string]int
}

// lookups is how many times host has been looked up so far.
func (f *fakeDNS) lookups(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[host]
}

// waitLookups waits up to 5 s until host has been looked up n times.
func (f *fakeDNS) waitLookups(t *testing.T, host string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.lookups(host) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s looked up %d times in 5 s, want %d", host, f.lookups(host), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (f *fakeDNS) set(host string, ips ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts[host] = ips
}

func (f *fakeDNS) lookup(_ context.Context, host string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[host]++
	if ips, ok := f.hosts[host]; ok {
		return append([]string(nil), ips...), nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// sameKindBackends starts one HTTP server per loopback address on one
// shared port, answering with its own address, as the pods behind a
// headless service would.
func sameKindBackends(t *testing.T, ips ...string) string {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		first, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(first.Addr().(*net.TCPAddr).Port)
		ls := []net.Listener{first}
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, port))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		if len(ls) < len(ips) {
			for _, l := range ls {
				l.Close()
			}
			continue
		}
		for i, l := range ls {
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, ips[i])
			})}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })
		}
		return port
	}
	t.Fatal("no port free on every loopback address")
	return ""
}

func TestDNSDiscoveryFollowsTheSet(t *testing.T) {
	port := sameKindBackends(t, "127.0.0.1", "127.0.0.2")
	dns := &fakeDNS{hosts: map[string][]string{}}
	dns.set("lamp.default.svc.cluster.local", "127.0.0.1")
	path := writeConfig(t, fmt.Sprintf("listen: 127.0.0.1:0\nadmin:\n  listen: ''\ndiscovery:\n  interval: 1s\n"+
		"backends:\n  - name: lamp\n    dns: lamp.default.svc.cluster.local:%s\n", port))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan addrs, 1)
	go func() {
		done <- serve(ctx, path, slog.New(slog.NewTextHandler(io.Discard, nil)), make(chan os.Signal), ready, dns.lookup)
	}()
	defer func() {
		cancel()
		<-done
	}()
	var front string
	select {
	case a := <-ready:
		front = a.front
	case err := <-done:
		t.Fatal(err)
	}
	seen := func() map[string]int {
		m := map[string]int{}
		for range 6 {
			res, err := http.Get("http://" + front + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			m[string(b)]++
		}
		return m
	}
	if m := seen(); len(m) != 1 || m["127.0.0.1"] != 6 {
		t.Fatalf("before: backends answering %v, want only 127.0.0.1", m)
	}

	dns.set("lamp.default.svc.cluster.local", "127.0.0.2", "127.0.0.1")
	deadline := time.Now().Add(5 * time.Second)
	for m := seen(); m["127.0.0.2"] == 0; m = seen() {
		if time.Now().After(deadline) {
			t.Fatalf("the added address never got traffic: %v", m)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A failing lookup keeps the current set. Two more lookups: when the
	// second starts, the discovery loop has handled the first failure.
	const host = "lamp.default.svc.cluster.local"
	dns.set(host) // no addresses: a failed lookup
	dns.waitLookups(t, host, dns.lookups(host)+2)
	if m := seen(); m["127.0.0.1"] == 0 || m["127.0.0.2"] == 0 {
		t.Errorf("after a failed lookup: %v, want both kept", m)
	}

	dns.set("lamp.default.svc.cluster.local", "127.0.0.2")
	deadline = time.Now().Add(5 * time.Second)
	for m := seen(); m["127.0.0.1"] != 0; m = seen() {
		if time.Now().After(deadline) {
			t.Fatalf("the removed address still gets traffic: %v", m)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestResolveExpandsMemcachedAndKeepsStaticEntries(t *testing.T) {
	dns := &fakeDNS{hosts: map[string][]string{"mc.svc": {"10.0.0.3", "10.0.0.1", "10.0.0.3"}, "lamp.svc": {"fd00::5"},
		"memcached-0.memcached": {"10.0.0.9"}}}
	path := writeConfig(t, "backends:\n  - name: static\n    url: http://10.1.1.1:80\n  - name: lamp\n    dns: lamp.svc:8080\n    scheme: https\n"+
		"session: {}\nmemcached:\n  servers: [10.0.0.1:11211, memcached-0.memcached:11211]\n  dns: mc.svc:11211\n")
	a, err := newApp(path, slog.New(slog.NewTextHandler(io.Discard, nil)), dns.lookup)
	if err != nil {
		t.Fatal(err)
	}
	cfg := a.cfg.Load()
	var got []string
	for _, b := range cfg.Backends {
		got = append(got, b.Name+"="+b.URL)
	}
	if want := "static=http://10.1.1.1:80 lamp-fd00::5=https://[fd00::5]:8080"; fmt.Sprint(got) != "["+want+"]" {
		t.Errorf("backends %v, want [%s]", got, want)
	}
	if fmt.Sprint(cfg.Memcached.Servers) != "[10.0.0.1:11211 10.0.0.9:11211 10.0.0.3:11211]" {
		t.Errorf("memcached servers %v", cfg.Memcached.Servers)
	}
	if len(a.file.Load().Memcached.Servers) != 2 {
		t.Error("the file config was modified")
	}
	// A memcached pod that comes back on a new address is a changed set.
	dns.set("memcached-0.memcached", "10.0.0.10")
	next, err := resolve(t.Context(), a.file.Load(), dns.lookup)
	if err != nil {
		t.Fatal(err)
	}
	if sameTargets(next, cfg) || !slices.Contains(next.Memcached.Servers, "10.0.0.10:11211") {
		t.Errorf("after the pod moved: servers %v, want 10.0.0.10:11211 and a change", next.Memcached.Servers)
	}
	if _, err := newApp(path, slog.New(slog.NewTextHandler(io.Discard, nil)), (&fakeDNS{hosts: map[string][]string{}}).lookup); err == nil {
		t.Error("started although a DNS name did not resolve")
	}
}
