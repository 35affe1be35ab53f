package proxy

// Request body buffering through the real server (NewServer, h1): slow,
// large, oversized and abandoned bodies sent as raw bytes over loopback.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// events is an ordered log shared by a test's client and its backend.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(s string) { e.mu.Lock(); e.list = append(e.list, s); e.mu.Unlock() }

func (e *events) index(s string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Index(e.list, s)
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.list, " → ")
}

// acceptLog records each connection the backend accepts.
type acceptLog struct {
	net.Listener
	ev *events
	n  atomic.Int32
}

func (l *acceptLog) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
		l.ev.add("backend accept")
	}
	return c, err
}

// bufFarm is a proxy with body buffering in front of one backend that
// logs its accepts and requests.
type bufFarm struct {
	*farm
	ev      *events
	accepts *acceptLog
	dir     string
}

func newBufFarm(t *testing.T, o BodyBufferOptions, h http.HandlerFunc) *bufFarm {
	t.Helper()
	ev := &events{}
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev.add("backend request")
		h(w, r)
	}))
	al := &acceptLog{Listener: be.Listener, ev: ev}
	be.Listener = al
	be.Start()
	t.Cleanup(be.Close)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	f := newFarm(t, []string{be.URL}, func(po *Options) { po.BodyBuffer = &o })
	return &bufFarm{farm: f, ev: ev, accepts: al, dir: o.Dir}
}

func (f *bufFarm) addr() string { return f.front.Listener.Addr().String() }

// settled waits until n requests are finished (their buffers released)
// and checks that nothing is left: no budget in use, no temp file.
func (f *bufFarm) settled(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d requests to finish", n), func() bool {
		f.obs.mu.Lock()
		defer f.obs.mu.Unlock()
		return len(f.obs.statuses) >= n
	})
	if m, d := f.proxy.bodies.mem.used.Load(), f.proxy.bodies.disk.used.Load(); m != 0 || d != 0 {
		t.Errorf("after the requests, %d bytes of memory and %d of disk budget are still taken", m, d)
	}
	if left, _ := os.ReadDir(f.dir); len(left) > 0 {
		t.Errorf("temp files left in %s: %v", f.dir, left)
	}
}

// waitFor polls cond every 5ms for at most 5s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func echoLength(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, r.Body)
	fmt.Fprintf(w, "%d %v", n, err)
}

// TestSlowBodyReachesBackendOnlyWhenComplete sends a body a byte at a
// time: the backend must not see a connection, let alone the request,
// before the client has sent the last byte.
func TestSlowBodyReachesBackendOnlyWhenComplete(t *testing.T) {
	const size = 16
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			f := newBufFarm(t, BodyBufferOptions{MemoryBytes: 1 << 10, MemoryTotal: 1 << 20}, func(w http.ResponseWriter, r *http.Request) {
				if r.ContentLength != size || len(r.TransferEncoding) > 0 {
					t.Errorf("backend got Content-Length %d, Transfer-Encoding %q; want %d, none", r.ContentLength, r.TransferEncoding, size)
				}
				echoLength(w, r)
			})
			c, err := net.DialTimeout("tcp", f.addr(), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			head := fmt.Sprintf("POST /upload.php HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
			if chunked {
				head = "POST /upload.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
			}
			io.WriteString(c, head)
			for i := range size {
				if i == size-1 {
					f.ev.add("client sends last byte")
				}
				b := "x"
				if chunked {
					b = "1\r\nx\r\n"
					if i == size-1 {
						b += "0\r\n\r\n"
					}
				}
				if _, err := io.WriteString(c, b); err != nil {
					t.Fatal(err)
				}
				time.Sleep(10 * time.Millisecond) // a slow client's pace, not an assertion
			}
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(res.Body)
			if res.StatusCode != 200 || string(got) != fmt.Sprintf("%d <nil>", size) {
				t.Fatalf("status %d, body %q", res.StatusCode, got)
			}
			last, accept := f.ev.index("client sends last byte"), f.ev.index("backend accept")
			if accept < last {
				t.Errorf("the backend accepted a connection before the body was complete: %s", f.ev)
			}
		})
	}
}

// TestLargeBodySpillsToDiskIntact sends bodies far over the memory bound,
// with a declared length and chunked: they reach the backend whole, from a
// temp file that is unlinked while in use, and nothing is left after.
func TestLargeBodySpillsToDiskIntact(t *testing.T) {
	const size = 3 << 20
	body := make([]byte, size)
	rand.Read(body)
	sum := sha256.Sum256(body)
	var diskInUse, filesInDir atomic.Int64
	var f *bufFarm
	f = newBufFarm(t, BodyBufferOptions{MemoryBytes: 64 << 10, MemoryTotal: 1 << 20, DiskBytes: 8 << 20, DiskTotal: 16 << 20},
		func(w http.ResponseWriter, r *http.Request) {
			diskInUse.Store(f.proxy.bodies.disk.used.Load())
			ents, _ := os.ReadDir(f.dir)
			filesInDir.Store(int64(len(ents)))
			if r.ContentLength != size || len(r.TransferEncoding) > 0 {
				t.Errorf("backend got Content-Length %d, Transfer-Encoding %q; want %d, none", r.ContentLength, r.TransferEncoding, size)
			}
			h := sha256.New()
			io.Copy(h, r.Body)
			io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
		})
	for i, src := range []io.Reader{bytes.NewReader(body), io.MultiReader(bytes.NewReader(body))} { // the second is sent chunked
		res, err := http.Post(f.front.URL+"/upload.php", "application/octet-stream", src)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(got) != hex.EncodeToString(sum[:]) {
			t.Errorf("request %d: backend received a body with sha256 %s, want %x", i, got, sum)
		}
		if d := diskInUse.Load(); d != size {
			t.Errorf("request %d: %d bytes of disk in use while the backend read the body, want %d", i, d, size)
		}
		if n := filesInDir.Load(); n != 0 {
			t.Errorf("request %d: %d files visible in the buffer dir while in use, want 0 (unlinked at once)", i, n)
		}
	}
	f.settled(t, 2)
}

// holdBody starts a request declaring size bytes, sends a few and stops,
// so that its buffer stays reserved; closing the returned conn ends it.
func holdBody(t *testing.T, addr string, size int) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /slow.php HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nabc", size)
	return c
}

func post(size int) string {
	return fmt.Sprintf("POST /upload.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", size, strings.Repeat("y", size))
}

func chunkedPost(size int) string {
	var b strings.Builder
	b.WriteString("POST /upload.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
	for size > 0 {
		n := min(size, 4000)
		fmt.Fprintf(&b, "%x\r\n%s\r\n", n, strings.Repeat("z", n))
		size -= n
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

// TestBodyBufferBounds: a body over the per-request bound gets 413; one
// that finds the shared disk taken gets 503 with Retry-After; one that
// finds the shared memory taken goes to disk. None of the refused ones
// reaches the backend.
func TestBodyBufferBounds(t *testing.T) {
	o := BodyBufferOptions{MemoryBytes: 4 << 10, MemoryTotal: 4 << 10, DiskBytes: 64 << 10, DiskTotal: 64 << 10}
	oneStatus := func(t *testing.T, addr, raw string) *http.Response {
		t.Helper()
		rs := exchange(t, addr, raw)
		if len(rs) != 1 {
			t.Fatalf("got %d responses, want 1", len(rs))
		}
		return rs[0]
	}
	t.Run("over the bound", func(t *testing.T) {
		for name, mod := range map[string]func(*BodyBufferOptions){
			"declared": nil, "chunked": nil, "memory only": func(o *BodyBufferOptions) { o.DiskBytes, o.DiskTotal = 0, 0 },
		} {
			t.Run(name, func(t *testing.T) {
				o := o
				if mod != nil {
					mod(&o)
				}
				f := newBufFarm(t, o, echoLength)
				raw := post(int(max(o.DiskBytes, o.MemoryBytes)) + 1)
				if name == "chunked" {
					raw = chunkedPost(int(o.DiskBytes) + 1)
				}
				if res := oneStatus(t, f.addr(), raw); res.StatusCode != http.StatusRequestEntityTooLarge {
					t.Errorf("status %d, want 413", res.StatusCode)
				}
				f.settled(t, 1)
				if n := f.accepts.n.Load(); n != 0 {
					t.Errorf("backend accepted %d connections for a refused body", n)
				}
			})
		}
	})
	t.Run("disk taken", func(t *testing.T) {
		f := newBufFarm(t, o, echoLength)
		hold := holdBody(t, f.addr(), int(o.DiskTotal))
		waitFor(t, "the held body to reserve the disk", func() bool { return f.proxy.bodies.disk.used.Load() == o.DiskTotal })
		res := oneStatus(t, f.addr(), post(10<<10))
		if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
			t.Errorf("status %d, Retry-After %q; want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
		}
		hold.Close()
		f.settled(t, 2)
		if n := f.accepts.n.Load(); n != 0 {
			t.Errorf("backend accepted %d connections", n)
		}
	})
	t.Run("memory taken", func(t *testing.T) {
		var disk atomic.Int64
		var f *bufFarm
		f = newBufFarm(t, o, func(w http.ResponseWriter, r *http.Request) {
			disk.Store(f.proxy.bodies.disk.used.Load())
			echoLength(w, r)
		})
		hold := holdBody(t, f.addr(), int(o.MemoryTotal))
		waitFor(t, "the held body to reserve the memory", func() bool { return f.proxy.bodies.mem.used.Load() == o.MemoryTotal })
		res := oneStatus(t, f.addr(), post(2000))
		if res.StatusCode != 200 || disk.Load() != 2000 {
			t.Errorf("status %d with %d bytes on disk; want 200 with 2000 (spilled)", res.StatusCode, disk.Load())
		}
		hold.Close()
		f.settled(t, 2)
	})
}

// TestAbandonedBodyNeverReachesBackend: a client that hangs up mid-body
// (499) or stalls past read_timeout (408) costs the backend nothing, and
// its buffers and temp file are released.
func TestAbandonedBodyNeverReachesBackend(t *testing.T) {
	o := BodyBufferOptions{MemoryBytes: 64 << 10, MemoryTotal: 1 << 20, DiskBytes: 1 << 20, DiskTotal: 1 << 20}
	for _, tc := range []struct {
		name       string
		size, sent int
	}{{"in memory", 1000, 10}, {"on disk", 1 << 20, 200 << 10}} {
		t.Run("hang up "+tc.name, func(t *testing.T) {
			f := newBufFarm(t, o, echoLength)
			c := holdBody(t, f.addr(), tc.size)
			if _, err := c.Write(bytes.Repeat([]byte("q"), tc.sent)); err != nil {
				t.Fatal(err)
			}
			c.Close()
			f.settled(t, 1)
			if st := f.obs.lastStatus(); st != StatusClientClosed {
				t.Errorf("status %d, want 499", st)
			}
			if n := f.accepts.n.Load(); n != 0 || len(f.obs.attempts) != 0 {
				t.Errorf("backend accepted %d connections, attempts %v; want none", n, f.obs.attempts)
			}
		})
	}
	t.Run("stall past read_timeout", func(t *testing.T) {
		f := newBufFarm(t, o, echoLength)
		slow := serveFront(t, f.proxy, ServerOptions{ReadTimeout: 300 * time.Millisecond})
		c := holdBody(t, slow.Listener.Addr().String(), 1000)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusRequestTimeout {
			t.Errorf("status %d, want 408", res.StatusCode)
		}
		f.settled(t, 1)
		if n := f.accepts.n.Load(); n != 0 || len(f.obs.attempts) != 0 {
			t.Errorf("backend accepted %d connections, attempts %v; want none", n, f.obs.attempts)
		}
	})
}

// BenchmarkPostBody measures what buffering costs a POST over streaming
// it, through the real server and the upstream client to a local backend.
func BenchmarkPostBody(b *testing.B) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	defer be.Close()
	for _, size := range []int{1 << 10, 1 << 20} {
		body := bytes.Repeat([]byte("b"), size)
		for _, buffered := range []bool{false, true} {
			b.Run(fmt.Sprintf("%dKiB/buffered=%v", size>>10, buffered), func(b *testing.B) {
				f := newFarm(b, []string{be.URL}, func(o *Options) {
					if buffered {
						o.BodyBuffer = &BodyBufferOptions{MemoryBytes: 64 << 10, MemoryTotal: 64 << 20,
							Dir: b.TempDir(), DiskBytes: 128 << 20, DiskTotal: 1 << 30}
					}
				})
				cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
				defer cl.CloseIdleConnections()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					res, err := cl.Post(f.front.URL, "application/octet-stream", bytes.NewReader(body))
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != 200 {
						b.Fatalf("status %d", res.StatusCode)
					}
				}
			})
		}
	}
}

// TestBufferedPostRetriedAfterDialFailure: the first backend refuses the
// connection; the buffered POST goes to the next one, body intact.
func TestBufferedPostRetriedAfterDialFailure(t *testing.T) {
	const size = 200 << 10 // on disk
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		io.Copy(h, r.Body)
		io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
	})
	f := newFarm(t, []string{deadURL(t), be.URL}, func(o *Options) {
		o.BodyBuffer = &BodyBufferOptions{MemoryBytes: 64 << 10, MemoryTotal: 1 << 20, Dir: t.TempDir(), DiskBytes: 1 << 20, DiskTotal: 1 << 20}
	})
	body := make([]byte, size)
	rand.Read(body)
	sum := sha256.Sum256(body)
	res, err := http.Post(f.front.URL, "application/octet-stream", io.MultiReader(bytes.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(got) != hex.EncodeToString(sum[:]) {
		t.Errorf("status %d, body sha256 %s; want 200, %x", res.StatusCode, got, sum)
	}
	f.obs.mu.Lock()
	defer f.obs.mu.Unlock()
	if len(f.obs.retries) != 1 {
		t.Errorf("retries %v, want one after the dial failure", f.obs.retries)
	}
}

func TestCheckDir(t *testing.T) {
	dir := t.TempDir()
	if err := (BodyBufferOptions{Dir: dir, DiskBytes: 1}).CheckDir(); err != nil {
		t.Errorf("writable dir: %v", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("CheckDir left %v", left)
	}
	if err := (BodyBufferOptions{Dir: dir + "/missing", DiskBytes: 1}).CheckDir(); err == nil {
		t.Error("missing dir: no error")
	}
	if err := (BodyBufferOptions{Dir: dir + "/missing"}).CheckDir(); err != nil {
		t.Errorf("memory only: %v", err)
	}
}
