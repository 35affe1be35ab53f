package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"check", "-config", "../../config.yaml"}, &out, &errb); code != 0 {
		t.Fatalf("check of the sample = %d: %s", code, errb.String())
	}
	bad := writeConfig(t, "listen: 127.0.0.1:8080\nbackends:\n  - name: a\n    url: http://h:1\n    wieght: 2\n")
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "-config", bad}, &out, &errb); code != 1 {
		t.Fatalf("check of a bad file = %d, want 1", code)
	}
	want := bad + `:5: backends[0].wieght: unknown key (did you mean "weight"?)`
	if !strings.Contains(errb.String(), want) {
		t.Errorf("stderr = %q, want %q", errb.String(), want)
	}
}

func TestVersionAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if run([]string{"version"}, &out, &errb) != 0 || !strings.HasPrefix(out.String(), "sessiongate ") {
		t.Errorf("version printed %q", out.String())
	}
	if run([]string{"bogus"}, &out, &errb) != 2 || !strings.Contains(errb.String(), "usage") {
		t.Errorf("unknown command: %q", errb.String())
	}
}

// plainConfig is a session-less config on free ports for the given backends.
func plainConfig(backends ...string) string {
	var b strings.Builder
	b.WriteString("access_log: off\nlisten: 127.0.0.1:0\nserver:\n  shutdown_grace: 5s\nadmin:\n  listen: 127.0.0.1:0\n  token: t0ken\nhealth:\n  interval: 100ms\nbackends:\n")
	for i, u := range backends {
		fmt.Fprintf(&b, "  - name: lamp%02d\n    url: %s\n", i+1, u)
	}
	return b.String()
}

type running struct {
	addrs  addrs
	reload chan os.Signal
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, path string) *running {
	t.Helper()
	return startLogged(t, path, io.Discard)
}

// startLogged runs serve() on the config at path, logging at debug level to
// logs, until the test ends.
func startLogged(t *testing.T, path string, logs io.Writer) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{reload: make(chan os.Signal, 1), cancel: cancel, done: make(chan error, 1)}
	ready := make(chan addrs, 1)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { r.done <- serve(ctx, path, log, r.reload, ready, nil) }()
	select {
	case r.addrs = <-ready:
	case err := <-r.done:
		cancel()
		t.Fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("serve did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			r.done <- err // for anyone else waiting
		case <-time.After(10 * time.Second):
			t.Error("serve did not stop")
		}
	})
	return r
}

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	entered := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			time.Sleep(300 * time.Millisecond)
		}
		io.WriteString(w, "done")
	}))
	defer be.Close()
	r := start(t, writeConfig(t, plainConfig(be.URL)))

	got := make(chan string, 1)
	go func() {
		res, err := http.Get("http://" + r.addrs.front + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- string(b)
	}()
	<-entered
	r.cancel()
	if s := <-got; s != "done" {
		t.Errorf("in-flight request got %q, want done", s)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("serve returned %v", err)
		}
		r.done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return")
	}
	if _, err := http.Get("http://" + r.addrs.front + "/"); err == nil {
		t.Error("still accepting after shutdown")
	}
}

// TestReloadUnderLoad changes the backend set while requests flow and
// expects no failed request; a broken file is refused and changes nothing.
func TestReloadUnderLoad(t *testing.T) {
	var hits [3]atomic.Int64
	var urls []string
	for i := range hits {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits[i].Add(1)
			io.WriteString(w, "ok")
		}))
		defer s.Close()
		urls = append(urls, s.URL)
	}
	path := writeConfig(t, plainConfig(urls[0], urls[1]))
	r := start(t, path)

	var failed, total atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				res, err := client.Get("http://" + r.addrs.front + "/")
				total.Add(1)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	reload := func(body string) {
		os.WriteFile(path, []byte(body), 0o644)
		r.reload <- os.Interrupt
		time.Sleep(150 * time.Millisecond) // let traffic run on the new config
	}
	reload(plainConfig(urls[1], urls[2]))
	before := hits[0].Load()
	reload("backends: [{name: x, url: 'ftp://nope'}]\n") // refused
	reload(plainConfig(urls[1], urls[2]) + "balancer:\n  policy: least_conn\n")
	close(stop)
	wg.Wait()

	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during reloads", failed.Load(), total.Load())
	}
	if hits[2].Load() == 0 {
		t.Error("the added backend got no traffic")
	}
	if hits[0].Load() != before {
		t.Errorf("the removed backend still got %d requests", hits[0].Load()-before)
	}
	t.Logf("%d requests, %d failed, across 3 reloads", total.Load(), failed.Load())
}
