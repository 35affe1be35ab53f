package deploy_test

import (
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDemoRuns starts `make demo`'s script in the background with a freshly
// built binary, follows the visit counter through sessiongate across the
// three backends, then stops it the way Ctrl-C does and checks that every
// port it used is free again. The demo uses fixed ports (8080-8083, 9090,
// 11211-11213); the test fails with the script's own message if one is busy.
func TestDemoRuns(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "sessiongate")
	build := exec.Command("go", "build", "-o", bin, "github.com/sessiongate/sessiongate/cmd/sessiongate")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command("bash", "demo/run.sh")
	cmd.Env = append(os.Environ(), "SESSIONGATE="+bin, "DEMO_READY_FILE="+ready)
	out := &syncBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) // what Ctrl-C sends
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("demo did not stop within 20s of SIGINT\n%s", out.String())
		}
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			stop()
		}
	})

	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("demo exited early (%v):\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo not ready after 60s:\n%s", out.String())
		}
	}

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 5 * time.Second}
	re := regexp.MustCompile(`id="backend">([^<]*)<.*id="visits">(\d+)<`)
	backends := map[string]bool{}
	for i := 1; i <= 6; i++ {
		res, err := client.Get("http://127.0.0.1:8080/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		m := re.FindSubmatch(regexp.MustCompile(`\s+`).ReplaceAll(body, []byte(" ")))
		if m == nil {
			t.Fatalf("request %d: no counter in %q", i, body)
		}
		if n, _ := strconv.Atoi(string(m[2])); n != i {
			t.Fatalf("request %d: visits = %d (session lost)", i, n)
		}
		backends[string(m[1])] = true
	}
	if len(backends) != 3 {
		t.Errorf("backends seen: %v, want lamp01-03", backends)
	}

	stop()
	for _, port := range []int{8080, 8081, 8082, 8083, 9090, 11211, 11212, 11213} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
			c.Close()
			t.Errorf("port %d still listening after the demo stopped", port)
		}
	}
}

// syncBuf collects a process's output from its writer goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}
