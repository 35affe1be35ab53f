package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
)

// TestReloadStopsOldStoreAfterLastUser reloads a changed session layer while
// a request is in flight: the old store keeps running while that request
// does, and stops once it is done; the new one keeps running.
func TestReloadStopsOldStoreAfterLastUser(t *testing.T) {
	mc := memtest.Start(t, 1)
	held, release := make(chan struct{}, 1), make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	}))
	defer be.Close()
	yaml := sessionGateYAML(be.URL, mc.Addrs())
	path := writeConfig(t, yaml)
	a, err := newApp(path, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	a.start(ctx, &wg)
	defer func() { cancel(); wg.Wait(); a.close() }()
	front := httptest.NewServer(a)
	defer front.Close()
	get := func(p string) error {
		res, err := http.Get(front.URL + p)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, res.Body)
		return res.Body.Close()
	}

	old := a.session()
	done := make(chan error, 1)
	go func() { done <- get("/hold") }()
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the held request did not reach the backend")
	}
	if err := os.WriteFile(path, []byte(strings.Replace(yaml, "verify_ttl: 10s", "verify_ttl: 20s", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.reload(); err != nil {
		t.Fatal(err)
	}
	if a.session() == old {
		t.Fatal("the reload kept the session layer")
	}
	if err := get("/"); err != nil { // served by the new layer
		t.Fatal(err)
	}
	if n := old.refs.Load(); n != 1 {
		t.Errorf("old layer has %d references, want 1: the held request", n)
	}
	select {
	case <-old.stopped:
		t.Fatal("the old store stopped while a request was still using it")
	default:
	}

	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the old store still runs 5 s after its last request finished")
	}
	select {
	case <-a.session().stopped:
		t.Error("the new store stopped")
	default:
	}
}
