package sessionstore

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// phpScript runs one session request: argv[1] is the id, argv[2] the mode.
const phpScript = `
session_id($argv[1]);
if (!session_start()) { fwrite(STDERR, "session_start failed\n"); exit(1); }
$mode = explode(':', $argv[2], 2);
switch ($mode[0]) {
case 'login': $_SESSION['user'] = $mode[1]; break;
case 'inc': $_SESSION['visit'] = ($_SESSION['visit'] ?? 0) + 1; break;
case 'big': $_SESSION['visit'] = ($_SESSION['visit'] ?? 0) + 1; $_SESSION['big'] = str_repeat('x', 30000); break;
case 'hold': echo "locked\n"; fgets(STDIN); break;
}
echo json_encode(['visit' => $_SESSION['visit'] ?? 0, 'big' => strlen($_SESSION['big'] ?? '')]), "\n";
session_write_close();
`

type phpResult struct{ Visit, Big int }

// phpArgs configures PHP's session handler for the fixture's nodes, every node
// holding every session (the deployment replicas=all is for).
func (f *fixture) phpArgs(handler string) []string {
	f.t.Helper()
	if _, err := exec.LookPath("php"); err != nil {
		f.t.Fatal("php not found: install the Debian packages php-cli, php-memcache and php-memcached")
	}
	args := []string{"-d", "session.use_cookies=0", "-d", "session.use_only_cookies=0", "-d", "session.save_handler=" + handler}
	if handler == HandlerMemcache {
		return append(args, "-d", "session.save_path=tcp://"+strings.Join(f.mc.Addrs(), ",tcp://"),
			"-d", "memcache.session_redundancy=3")
	}
	return append(args, "-d", "session.save_path="+strings.Join(f.mc.Addrs(), ","),
		"-d", "memcached.sess_binary_protocol=1", "-d", "memcached.sess_number_of_replicas=2")
}

func (f *fixture) php(args []string, id, mode string) phpResult {
	f.t.Helper()
	cmd := exec.Command("php", append(args, "-r", phpScript, "--", id, mode)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var r phpResult
	if err != nil || json.Unmarshal(out, &r) != nil {
		f.t.Fatalf("php %s: %v\nstdout: %s\nstderr: %s", mode, err, out, stderr.Bytes())
	}
	return r
}

// holdPHP starts a PHP request of id that takes the session lock and holds it
// until the returned func lets it write and end (which waits for it).
func (f *fixture) holdPHP(args []string, id string) (finish func()) {
	f.t.Helper()
	cmd := exec.Command("php", append(args, "-r", phpScript, "--", id, "hold")...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "locked" {
		f.t.Fatalf("php hold: %q", lines.Text())
	}
	return func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			f.t.Fatalf("php hold: %v", err)
		}
	}
}

// TestPHPSessionsSurviveRestarts runs PHP's own session handlers against real
// memcached: every node is restarted empty in turn, and after the store's Check the
// next PHP request still sees the session. Debian's php-memcache 4.0.5.2 and
// php-memcached both lose it otherwise when the restarted node is the one they read.
func TestPHPSessionsSurviveRestarts(t *testing.T) {
	for _, handler := range []string{HandlerMemcache, HandlerMemcached} {
		t.Run(handler, func(t *testing.T) {
			// No verification cache: a cached answer does not report the lock.
			f := setup(t, 3, func(o *Options) { o.Handler = handler; o.VerifyTTL = -1 })
			args := f.phpArgs(handler)
			id := newID(t)
			data, _ := f.s.Keys(id)

			if r := f.php(args, id, "inc"); r.Visit != 1 {
				t.Fatalf("first visit = %d", r.Visit)
			}
			for i := range 3 {
				if f.get(i, data) == nil {
					t.Fatalf("PHP did not write node %d: the test setup does not replicate to all", i)
				}
			}
			if r := f.check(id, Verified); r.Locked {
				t.Error("locked after PHP's request ended")
			}
			for i := range 3 {
				f.restart(i)
				f.waitNode(i, "restarted node up", func(st NodeStatus) bool { return st.Up && st.Restarts == 1 })
				f.checkRestored(id, i)
				if r := f.php(args, id, "inc"); r.Visit != i+2 {
					t.Fatalf("after restarting node %d PHP saw visit %d, want %d", i, r.Visit-1, i+1)
				}
			}

			// While a PHP request holds the session lock the store sees it and leaves
			// the session alone.
			finish := f.holdPHP(args, id)
			if r := f.s.Check(t.Context(), id); r.Verdict != Verified || !r.Locked {
				t.Errorf("during a PHP request Check = %+v, want verified and locked", r)
			}
			finish()

			if err := f.s.Kill(t.Context(), id); err != nil {
				t.Fatal(err)
			}
			f.check(id, Killed)
			if r := f.php(args, id, "inc"); r.Visit != 1 {
				t.Errorf("after Kill PHP saw visit %d, want a fresh session", r.Visit-1)
			}
		})
	}
}

// TestRestartRepairWaitsForALeftLock: a node that restarted empty while the
// session's lock is held (left by a request that met the restart, or held
// by one through another instance) is repaired once the lock is released,
// before PHP reads: Check waits for the release. Without the wait nothing is
// repaired while the lock is held (see decide) and PHP reads the restarted
// node: pecl memcache reads the session empty, and pecl memcached in strict
// mode finds no id on its primary and makes a new one.
func TestRestartRepairWaitsForALeftLock(t *testing.T) {
	for _, handler := range []string{HandlerMemcache, HandlerMemcached} {
		t.Run(handler, func(t *testing.T) {
			f := setup(t, 3, func(o *Options) { o.Handler = handler; o.VerifyTTL = -1 })
			args := f.phpArgs(handler)
			strict := append(slices.Clone(args), "-d", "session.use_strict_mode=1")
			id := newID(t)
			data, lock := f.s.Keys(id)
			if r := f.php(args, id, "inc"); r.Visit != 1 { // strict mode would not take a new id
				t.Fatalf("first visit = %d", r.Visit)
			}
			const hold = 300 * time.Millisecond
			for i := range 3 {
				other := (i + 1) % 3
				f.set(other, lock, []byte("1"), 0, 30)
				f.restart(i)
				f.waitNode(i, "restarted node up", func(st NodeStatus) bool { return st.Up && st.Restarts == 1 })
				released := make(chan struct{})
				go func() {
					defer close(released)
					time.Sleep(hold)
					if err := memcache.New(f.mc.Addr(other)).Delete(lock); err != nil {
						t.Errorf("releasing the lock: %v", err)
					}
				}()
				start := time.Now()
				r := f.s.Check(t.Context(), id)
				waited := time.Since(start)
				<-released
				if waited < hold || r.Held == 0 {
					t.Errorf("node %d: Check = %+v after %v, want it held until the lock's release (%v)", i, r, waited, hold)
				}
				if f.get(i, data) == nil {
					t.Fatalf("node %d: not repaired after the lock's release", i)
				}
				if r := f.php(strict, id, "inc"); r.Visit != i+2 {
					t.Fatalf("after restarting node %d PHP saw visit %d, want %d", i, r.Visit-1, i+1)
				}
			}
		})
	}
}

// TestPHPCompressedSessionRepair: php-memcache zlib-compresses sessions of 20000
// bytes or more and sets flags 2; the repaired copy must read back in PHP.
func TestPHPCompressedSessionRepair(t *testing.T) {
	f := setup(t, 3, nil)
	args := f.phpArgs(HandlerMemcache)
	id := newID(t)
	f.php(args, id, "big")
	src := f.get(0, id)
	if src == nil || src.Flags != 2 || !bytes.HasPrefix(src.Value, []byte{0x78, 0x9c}) {
		t.Fatalf("PHP did not store a zlib value with flags 2: %+v", src)
	}
	f.restart(1)
	f.waitNode(1, "node 1 back", func(st NodeStatus) bool { return st.Up && st.Restarts == 1 })
	f.check(id, Repaired)
	if got := f.get(1, id); got == nil || got.Flags != 2 || !bytes.Equal(got.Value, src.Value) {
		t.Fatalf("copy on node 1 differs from the source")
	}
	// PHP skips stopped servers: with nodes 0 and 2 gone it must read the repaired copy.
	f.stop(0)
	f.stop(2)
	if r := f.php(args, id, "inc"); r.Visit != 2 || r.Big != 30000 {
		t.Errorf("PHP read %+v from the repaired compressed copy, want visit 2, big 30000", r)
	}
}
