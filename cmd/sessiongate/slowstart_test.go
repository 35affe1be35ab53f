package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSlowStartThroughTheGate: a backend enabled after maintenance shows
// as warming with a small share in /api/status and gets a small share of
// the requests, under round robin that would otherwise give it half.
func TestSlowStartThroughTheGate(t *testing.T) {
	var names []string
	for _, n := range []string{"lamp01", "lamp02"} {
		be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, n) }))
		t.Cleanup(be.Close)
		names = append(names, "  - name: "+n+"\n    url: "+be.URL+"\n")
	}
	cfg := func(slowStart string) string {
		return "access_log: off\nlisten: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n  token: " + hostileToken +
			"\nhealth:\n  slow_start: " + slowStart + "\nbackends:\n" + strings.Join(names, "")
	}
	path := writeConfig(t, cfg("1h"))
	g := start(t, path)
	admin := "http://" + g.addrs.admin
	post := func(path string) {
		if code, body := adminDo(t, "POST", admin+path, hostileToken); code != 200 {
			t.Fatalf("POST %s: %d %s", path, code, body)
		}
	}
	count := func(n int) map[string]int {
		got := map[string]int{}
		c := &http.Client{Timeout: 5 * time.Second}
		for range n {
			res, err := c.Get("http://" + g.addrs.front + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			got[string(b)]++
		}
		return got
	}
	if got := count(100); got["lamp01"] != 50 {
		t.Fatalf("before: %v, want round robin 50/50 (no slow start at startup)", got)
	}
	post("/api/backends/lamp01/maintenance")
	post("/api/backends/lamp01/enable")

	type backend struct {
		Name    string
		State   string
		Share   float64
		Warming bool
	}
	status := func() []backend {
		res, err := http.Get(admin + "/api/status")
		if err != nil {
			t.Fatal(err)
		}
		var st struct{ Backends []backend }
		json.NewDecoder(res.Body).Decode(&st)
		res.Body.Close()
		return st.Backends
	}
	bs := status()
	if b := bs[0]; b.Name != "lamp01" || b.State != "up" || !b.Warming || b.Share < 0.1 || b.Share > 0.2 {
		t.Errorf("status of lamp01 after enable: %+v, want up, warming, share ~0.1", b)
	}
	if b := bs[1]; b.Warming || b.Share != 1 {
		t.Errorf("status of lamp02: %+v, want full share", b)
	}
	// lamp01's expected share is 0.1/1.1 (9%) of 400: far below 100.
	if got := count(400); got["lamp01"] == 0 || got["lamp01"] > 100 {
		t.Errorf("warming lamp01 got %d of 400 requests, want about 36", got["lamp01"])
	}

	// A reload that turns slow start off gives lamp01 its full share.
	if err := os.WriteFile(path, []byte(cfg("0s")), 0o644); err != nil {
		t.Fatal(err)
	}
	g.reload <- syscall.SIGHUP
	for deadline := time.Now().Add(5 * time.Second); ; {
		if b := status()[0]; !b.Warming && b.Share == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5s after a reload to slow_start 0s lamp01 is %+v", status()[0])
		}
		time.Sleep(20 * time.Millisecond) // the reload is applied asynchronously
	}
	if got := count(100); got["lamp01"] != 50 {
		t.Errorf("after the reload: %v, want round robin 50/50", got)
	}
}
