package main

import (
	"bytes"
	"context"
	"encoding/json"
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

	// A value that fails to decode does not hide a validation problem two
	// lines earlier: both are printed, in line order.
	both := writeConfig(t, "backends:\n  - name: a\n    url: ftp://h:1\nhealth:\n  interval: soon\n")
	errb.Reset()
	if code := run([]string{"check", "-config", both}, &out, &errb); code != 1 {
		t.Fatalf("check of a bad file = %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], both+`:3: backends[0].url: "ftp://h:1"`) ||
		!strings.HasPrefix(lines[1], both+`:5: health.interval: "soon" is not a duration`) {
		t.Errorf("stderr = %q, want the URL (line 3) then the interval (line 5)", errb.String())
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
	held, release := make(chan int, 1), make(chan struct{})
	for i := range hits {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hold" {
				held <- i
				<-release
			}
			hits[i].Add(1)
			io.WriteString(w, "ok")
		}))
		defer s.Close()
		urls = append(urls, s.URL)
	}
	path := writeConfig(t, plainConfig(urls[0], urls[1]))
	logs := &logSink{}
	r := startLogged(t, path, logs)

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
	// reload writes body, signals a reload, waits for serve's log line
	// saying how it ended (event is its msg), then for 200 more requests,
	// so traffic runs on the outcome. It returns that log line.
	reload := func(body, event string) string {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		seen := strings.Count(logs.String(), event)
		r.reload <- os.Interrupt
		deadline := time.Now().Add(5 * time.Second)
		for strings.Count(logs.String(), event) == seen {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 5 s of the reload; logs:\n%s", event, logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
		for n := total.Load() + 200; total.Load() < n; {
			if time.Now().After(deadline) {
				t.Fatalf("requests stalled after the reload: %d", total.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
		lines := strings.Split(logs.String(), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if strings.Contains(lines[i], event) {
				return lines[i]
			}
		}
		return ""
	}
	const reloaded, refused = `msg="configuration reloaded"`, `msg="reload refused`
	reload(plainConfig(urls[1], urls[2]), reloaded)
	before := hits[0].Load()
	if line := reload("backends: [{name: x, url: 'ftp://nope'}]\n", refused); !strings.Contains(line, "ftp://nope") {
		t.Errorf("the refusal does not name the bad URL: %s", line)
	}
	if line := reload(plainConfig(urls[1], urls[2])+"balancer:\n  policy: least_conn\n", reloaded); !strings.Contains(line, "policy=least_conn") {
		t.Errorf("the last reload did not apply least_conn: %s", line)
	}
	close(stop)
	wg.Wait()

	// least_conn is running: while one request is held on a backend, every
	// next request goes to the other (round robin would send half of them
	// to the busy one). Before each, the idle one's last request must have
	// left its in-flight count, or the two would tie.
	var holds sync.WaitGroup
	holds.Go(func() {
		if res, err := client.Get("http://" + r.addrs.front + "/hold"); err == nil {
			res.Body.Close()
		}
	})
	var busy int
	select {
	case busy = <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the held request reached no backend")
	}
	idle := 3 - busy // backends are hits[1] (lamp01) and hits[2] (lamp02)
	idleName := fmt.Sprintf("lamp%02d", idle)
	before1, before2 := hits[busy].Load(), hits[idle].Load()
	for range 20 {
		deadline := time.Now().Add(5 * time.Second)
		for inFlight(t, r.addrs.admin, idleName) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s still has requests in flight", idleName)
			}
			time.Sleep(time.Millisecond)
		}
		res, err := client.Get("http://" + r.addrs.front + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	close(release)
	holds.Wait()
	if nb, ni := hits[busy].Load()-before1-1, hits[idle].Load()-before2; nb != 0 || ni != 20 {
		t.Errorf("with one backend busy: it got %d, the idle one %d of 20 requests; least_conn sends all to the idle one", nb, ni)
	}

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

// inFlight is the in-flight count /api/status gives for the named backend.
func inFlight(t *testing.T, admin, name string) int64 {
	t.Helper()
	res, err := http.Get("http://" + admin + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var doc struct {
		Backends []struct {
			Name     string
			InFlight int64 `json:"in_flight"`
		} `json:"backends"`
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, b := range doc.Backends {
		if b.Name == name {
			return b.InFlight
		}
	}
	t.Fatalf("no backend %s in /api/status", name)
	return 0
}
