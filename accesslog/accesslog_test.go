package accesslog

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore"
)

// CombinedRE is the combined log format's field rules:
// %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i".
var combinedRE = regexp.MustCompile(`^(\S+) (\S+) (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "(\S+) (\S+) (\S+)" (\d{3}) (\d+|-) "((?:[^"\\]|\\x[0-9A-F]{2})*)" "((?:[^"\\]|\\x[0-9A-F]{2})*)"$`)

func sample() Entry {
	return Entry{
		Start: time.Date(2026, 12, 6, 10, 4, 5, 0, time.FixedZone("", 3600)), Duration: 1500 * time.Microsecond,
		Client: "203.0.113.9", Method: "GET", Host: "shop.example", URI: "/index.php?q=\"x\"\\y",
		Proto: "HTTP/1.1", Status: 200, BytesIn: 3, BytesOut: 18, Upstream: time.Millisecond,
		Backend: "lamp01", Retries: 1, Session: "verified", SessionID: "3vdj8srh32rjq4kfeitc4hk4l5",
		RequestID: "abc-1", UserAgent: "curl/8 \"evil\"\n", Referer: "", TLS: tls.VersionTLS13,
	}
}

func TestCombinedLine(t *testing.T) {
	line := string(appendCombined(nil, ptr(sample())))
	want := `203.0.113.9 - - [06/Dec/2026:10:04:05 +0100] "GET /index.php?q=\x22x\x22\x5Cy HTTP/1.1" 200 18 "-" "curl/8 \x22evil\x22\x0A"` + "\n"
	if line != want {
		t.Fatalf("got  %q\nwant %q", line, want)
	}
	if !combinedRE.MatchString(strings.TrimSuffix(line, "\n")) {
		t.Fatalf("line does not follow the combined format: %q", line)
	}
	e := sample()
	e.BytesOut, e.Client = 0, ""
	m := combinedRE.FindStringSubmatch(strings.TrimSuffix(string(appendCombined(nil, &e)), "\n"))
	if m == nil || m[9] != "-" || m[1] != "-" {
		t.Fatalf("empty %%b and %%h must be -: %q", m)
	}
}

func TestJSONLine(t *testing.T) {
	e := sample()
	e.URI = "/caf\xe9\x00"
	b := appendJSON(nil, &e)
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	want := map[string]any{
		"time": "2026-12-06T10:04:05.000+01:00", "client": "203.0.113.9", "method": "GET", "host": "shop.example",
		"uri": "/caf\ufffd\x00", "protocol": "HTTP/1.1", "status": 200.0, "bytes_in": 3.0, "bytes_out": 18.0,
		"duration_ms": 1.5, "upstream_ms": 1.0, "backend": "lamp01", "retries": 1.0, "session": "verified",
		"session_id": sessionstore.ShortID(e.SessionID), "request_id": "abc-1", "user_agent": "curl/8 \"evil\"\n",
		"referer": "", "tls": "TLSv1.3",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d keys, want %d: %s", len(got), len(want), b)
	}
	if bytes.Contains(b, []byte(e.SessionID)) {
		t.Fatal("the session id itself is in the line")
	}
	e.Upstream = -1
	if err := json.Unmarshal(appendJSON(nil, &e), &got); err != nil || got["upstream_ms"] != nil {
		t.Fatalf("no upstream must be null: %v %v", err, got["upstream_ms"])
	}
}

func ptr[T any](v T) *T { return &v }

// blockedWriter blocks every Write until release is closed.
type blockedWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *blockedWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// TestDropsWhenWriterBlocked: a writer that cannot keep up costs lines,
// counted, never a waiting request: every Log returns while the writer is
// stuck.
func TestDropsWhenWriterBlocked(t *testing.T) {
	w := &blockedWriter{release: make(chan struct{})}
	var counted int
	var mu sync.Mutex
	l := New(w, Options{Queue: 8, Dropped: func() { mu.Lock(); counted++; mu.Unlock() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()

	const n = 1000
	for i := 0; i < n; i++ {
		l.Log(sample()) // would hang the test if it blocked
	}
	dropped := l.Dropped()
	if dropped == 0 || dropped > n-8 {
		t.Fatalf("dropped %d of %d lines with a queue of 8 and a stuck writer", dropped, n)
	}
	mu.Lock()
	if uint64(counted) != dropped {
		t.Errorf("Dropped hook called %d times, Dropped() = %d", counted, dropped)
	}
	mu.Unlock()
	close(w.release)
	cancel()
	<-done
	lines := strings.Count(w.buf.String(), "\n")
	if uint64(lines)+dropped != n {
		t.Fatalf("%d written + %d dropped != %d logged", lines, dropped, n)
	}
}

// TestReopenAfterRename is logrotate's sequence: rename the file, reopen,
// and new lines go to a new file at the configured path.
func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := Open(path, Options{Format: JSON})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	defer func() { cancel(); <-done }()

	e := sample()
	e.RequestID = "before"
	l.Log(e)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := l.Reopen(rctx); err != nil {
		t.Fatal(err)
	}
	e.RequestID = "after"
	l.Log(e)
	cancel()
	<-done
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !bytes.Contains(old, []byte(`"before"`)) || bytes.Contains(old, []byte(`"after"`)) {
		t.Errorf("rotated file: %s", old)
	}
	if !bytes.Contains(cur, []byte(`"after"`)) || bytes.Contains(cur, []byte(`"before"`)) {
		t.Errorf("new file: %s", cur)
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"": Combined, "combined": Combined, "json": JSON} {
		if f, err := ParseFormat(in); err != nil || f != want {
			t.Errorf("ParseFormat(%q) = %v, %v", in, f, err)
		}
	}
	if _, err := ParseFormat("common"); err == nil {
		t.Error("common accepted")
	}
}

func TestLogAllocs(t *testing.T) {
	for _, f := range []Format{Combined, JSON} {
		l := New(io.Discard, Options{Format: f, Queue: 1})
		e := sample()
		// No writer runs and the queue is full, so each line is formatted
		// and dropped: Log's own work is counted, its buffer recycled.
		l.Log(e)
		if n := testing.AllocsPerRun(100, func() { l.Log(e) }); n != 0 {
			t.Errorf("format %d: Log allocates %.0f times per line", f, n)
		}
	}
}

func BenchmarkLog(b *testing.B) {
	for _, f := range []struct {
		name string
		f    Format
	}{{"combined", Combined}, {"json", JSON}} {
		b.Run(f.name, func(b *testing.B) {
			l := New(io.Discard, Options{Format: f.f})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); l.Run(ctx) }()
			e := sample()
			b.ReportAllocs()
			for b.Loop() {
				l.Log(e)
			}
			cancel()
			<-done
		})
	}
}
