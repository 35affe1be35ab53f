//go:build unix

// Package phptest runs real PHP backends for tests: N `php -S` built-in servers
// on free loopback ports, each with PHP's memcache or memcached session handler
// pointed at a memcached pool, serving a small session app (see the app
// constant for its pages). Every process is killed and waited for when the test
// ends; a backend can be stopped and started again on the same port.
package phptest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Handlers (Options.Handler).
const (
	Memcache  = "memcache"  // pecl memcache: data key <id>, lock <id>.lock
	Memcached = "memcached" // pecl memcached: data key memc.sess.key.<id>
)

// installHint is the Debian command that provides everything this package runs.
const installHint = "apt-get install -y php-cli php-memcache php-memcached"

// Bounds.
const (
	readyTimeout = 10 * time.Second // a backend must answer /health.php within this
	workers      = "4"              // PHP_CLI_SERVER_WORKERS per backend
)

// Options configure a Farm.
type Options struct {
	N             int      // backends, default 3
	Handler       string   // Memcache (default) or Memcached
	Servers       []string // memcached "host:port" addresses, at least one
	GCMaxLifetime int      // session.gc_maxlifetime in seconds, default 1440
	Extra         []string // more php.ini settings, each "key=value", passed with -d
}

// Farm is a set of PHP backends owned by one test.
type Farm struct {
	t     testing.TB
	bin   string
	dir   string   // document root and logs
	args  []string // php arguments before -S
	mu    sync.Mutex
	procs []*proc
}

type proc struct {
	name string // LAMP_NAME: lamp01, lamp02, ...
	port int
	cmd  *exec.Cmd     // nil while stopped
	done chan struct{} // closed once cmd has been waited for
}

// Start launches o.N backends and waits until each answers /health.php. It fails
// the test, naming the Debian packages to install, if php or the session handler
// module is missing.
func Start(t testing.TB, o Options) *Farm {
	t.Helper()
	if o.N <= 0 {
		o.N = 3
	}
	if o.Handler == "" {
		o.Handler = Memcache
	}
	if o.GCMaxLifetime <= 0 {
		o.GCMaxLifetime = 1440
	}
	if len(o.Servers) == 0 {
		t.Fatal("phptest: no memcached servers")
	}
	bin, err := exec.LookPath("php")
	if err != nil {
		t.Fatalf("phptest: php not found (%v): %s", err, installHint)
	}
	mods, err := exec.Command(bin, "-m").Output()
	if err != nil {
		t.Fatalf("phptest: php -m: %v: %s", err, installHint)
	}
	if !hasModule(string(mods), o.Handler) {
		t.Fatalf("phptest: php module %q is not loaded: %s", o.Handler, installHint)
	}
	args, err := iniArgs(o)
	if err != nil {
		t.Fatalf("phptest: %v", err)
	}
	f := &Farm{t: t, bin: bin, dir: t.TempDir(), args: args}
	for name, body := range app {
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(f.stopAll)
	for i := range o.N {
		p := &proc{name: fmt.Sprintf("lamp%02d", i+1)}
		f.procs = append(f.procs, p)
		f.startFree(p)
	}
	return f
}

func hasModule(list, name string) bool {
	for _, l := range strings.Split(list, "\n") {
		if strings.TrimSpace(l) == name {
			return true
		}
	}
	return false
}

// iniArgs turns o into php -d arguments. Debian loads the memcache and memcached
// modules from conf.d, so the default php.ini stays in force (no -n).
func iniArgs(o Options) ([]string, error) {
	ini := []string{
		"session.use_strict_mode=1",
		"session.sid_length=26",
		"session.sid_bits_per_character=5",
		"session.gc_maxlifetime=" + strconv.Itoa(o.GCMaxLifetime),
		"session.use_cookies=1",
		"session.use_only_cookies=1",
		"session.save_handler=" + o.Handler,
	}
	switch o.Handler {
	case Memcache:
		// Quoted: the ini parser would otherwise choke on the spaces.
		urls := make([]string, len(o.Servers))
		for i, s := range o.Servers {
			urls[i] = "tcp://" + s
		}
		ini = append(ini,
			`session.save_path="`+strings.Join(urls, ", ")+`"`,
			"memcache.session_redundancy="+strconv.Itoa(len(o.Servers)), // a copy on every node (4.0.5.2 writes min(N, servers))
			"memcache.hash_strategy=consistent")
	case Memcached:
		// No scheme: libmemcached rejects tcp://. Replicas need the binary
		// protocol; SET is then copied to the next R servers in list order, so
		// R = servers-1 puts a copy on every node. sess_remove_failed_servers is
		// left off: ejecting a node moves keys and leaves diverging copies.
		ini = append(ini,
			`session.save_path="`+strings.Join(o.Servers, ",")+`"`,
			"memcached.sess_binary_protocol=1",
			"memcached.sess_number_of_replicas="+strconv.Itoa(len(o.Servers)-1),
			"memcached.sess_consistent_hash=1")
	default:
		return nil, fmt.Errorf("handler %q: want %q or %q", o.Handler, Memcache, Memcached)
	}
	ini = append(ini, o.Extra...)
	args := make([]string, 0, 2*len(ini))
	for _, s := range ini {
		args = append(args, "-d", s)
	}
	return args, nil
}

// URLs returns the backends' base URLs ("http://127.0.0.1:port"), in order.
func (f *Farm) URLs() []string {
	out := make([]string, len(f.procs))
	for i := range f.procs {
		out[i] = f.URL(i)
	}
	return out
}

// URL returns backend i's base URL.
func (f *Farm) URL(i int) string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(f.procs[i].port))
}

// Name returns backend i's LAMP_NAME (lamp01 for i = 0), which visit.php reports.
func (f *Farm) Name(i int) string { return f.procs[i].name }

// Stop kills backend i (and its workers) and waits until its port is closed.
func (f *Farm) Stop(i int) {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kill(f.procs[i])
	if err := waitClosed(f.procs[i].port); err != nil {
		f.t.Fatalf("phptest: stop %s: %v", f.procs[i].name, err)
	}
}

// Start starts a stopped backend i again on its port and waits until it answers.
func (f *Farm) Start(i int) {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.procs[i]
	if p.cmd != nil {
		f.t.Fatalf("phptest: %s is running", p.name)
	}
	var err error
	for range 5 { // the port may linger a moment after the old workers died
		if err = f.launch(p); err == nil {
			return
		}
	}
	f.t.Fatalf("phptest: start %s: %v", p.name, err)
}

// startFree starts p on a free port, retrying in case another process takes
// the port between probing and php binding it.
func (f *Farm) startFree(p *proc) {
	f.t.Helper()
	var err error
	for range 5 {
		if p.port, err = freePort(); err != nil {
			continue
		}
		f.mu.Lock()
		err = f.launch(p)
		f.mu.Unlock()
		if err == nil {
			return
		}
	}
	f.t.Fatalf("phptest: start %s: %v", p.name, err)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// launch starts php for p and waits for /health.php; f.mu must be held.
func (f *Farm) launch(p *proc) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
	logPath := filepath.Join(f.dir, p.name+".log")
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer log.Close() // the child has its own copy
	args := append(append([]string{}, f.args...), "-S", addr, "-t", f.dir)
	cmd := exec.Command(f.bin, args...)
	cmd.Dir = f.dir
	cmd.Env = append(os.Environ(), "PHP_CLI_SERVER_WORKERS="+workers, "LAMP_NAME="+p.name)
	cmd.Stdout, cmd.Stderr = log, log // a file, not a pipe: no copier blocked by orphans
	// Workers are forked children that outlive a killed parent, so each backend
	// gets its own process group and is stopped as a group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		cmd.Wait()
		close(done)
	}(p.done)

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			p.cmd = nil
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("php -S %s exited: %s", addr, strings.TrimSpace(string(out)))
		default:
		}
		if res, err := client.Get("http://" + addr + "/health.php"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond) // polling a server that is starting
	}
	f.kill(p)
	return fmt.Errorf("php -S %s did not answer /health.php within %v", addr, readyTimeout)
}

// kill SIGKILLs p's process group and waits for the parent; f.mu must be held.
func (f *Farm) kill(p *proc) {
	if p.cmd == nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

// waitClosed waits until nothing accepts on port any more: the workers of a
// killed group die a moment after their parent has been reaped.
func waitClosed(port int) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for range 200 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return nil
		}
		c.Close()
		time.Sleep(10 * time.Millisecond) // polling a port that is about to close
	}
	return errors.New(addr + " still accepts connections")
}

// Held returns the ids of the sessions that count.php?ms=N requests are
// holding on backend i right now (the marks of killed workers are ignored).
func (f *Farm) Held(i int) []string {
	f.t.Helper()
	marks, err := filepath.Glob(filepath.Join(f.dir, "held."+f.procs[i].name+".*"))
	if err != nil {
		f.t.Fatal(err)
	}
	var ids []string
	for _, m := range marks {
		pid, err := strconv.Atoi(filepath.Ext(m)[1:])
		if err != nil || syscall.Kill(pid, 0) != nil {
			continue // not a pid, or the worker is gone
		}
		if id, err := os.ReadFile(m); err == nil && len(id) > 0 {
			ids = append(ids, string(id))
		}
	}
	return ids
}

func (f *Farm) stopAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.procs {
		f.kill(p)
		waitClosed(p.port)
	}
}

// app is the PHP application every backend serves, by file name:
//
//   - visit.php counts visits: {"backend","visits","id","had"} where had lists
//     the session keys that existed before this request; its head names the
//     backend too (X-Lamp, as count.php's).
//   - big.php stores ~30 kB of compressible text once (php-memcache stores it
//     zlib-compressed, flags 2) and counts visits: {"backend","visits","id","md5","had"}.
//   - logout.php destroys the session.
//   - login.php?user=ID logs user ID in: $_SESSION['user'] = ID and
//     $_SESSION['auth']['user']['id'] = ID; answers like visit.php.
//   - empty.php starts the session and stores nothing: {"id"}.
//   - health.php answers "ok".
//   - slow.php?ms=N starts the session, then sleeps N ms holding its lock.
//   - seq.php?ms=N&n=X starts the session, sleeps N ms, appends X to the
//     session's list "seq" and echoes the list: the order requests ran in.
//   - peek.php echoes $_COOKIE as a JSON object without starting a session.
//   - profile.php?user=N stores a session of many kinds of values: the user
//     id at auth.user.id, an object, a float, a non-UTF-8 string and 26000
//     bytes of text at note (php-memcache compresses it, flags 2); it counts
//     visits and answers {"backend","visits","id"}.
//   - count.php counts visits like visit.php but never lets PHP print a
//     warning: {"backend","visits","id","started","wrote","error"}, where
//     started and wrote are what session_start and session_write_close
//     returned and error lists PHP's warnings, " | " apart; req is when PHP
//     began the request and ss when session_start was called (Unix seconds,
//     for tests that put a request's life next to a fault's). Its head
//     names the backend too (X-Lamp): php -S ends a body by closing the
//     connection and writes head and body apart, so a worker killed between
//     the two leaves an answer that looks whole and empty. With ?ms=N it holds
//     the session (and its lock) N ms before counting, and while it does a
//     file held.<backend>.<pid> names the session (see Farm.Held).
//     With ?pre=N it sleeps N ms before session_start: a request already
//     at PHP when a memcached node fails.
var app = map[string]string{
	"visit.php": `<?php
session_start();
$had = array_keys($_SESSION);
$_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
header('Content-Type: application/json');
header('X-Lamp: ' . getenv('LAMP_NAME'));
echo json_encode(['backend' => getenv('LAMP_NAME'), 'visits' => $_SESSION['visits'], 'id' => session_id(), 'had' => $had]);
`,
	"big.php": `<?php
session_start();
$had = array_keys($_SESSION);
if (!isset($_SESSION['big'])) {
    $words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliett', 'kilo', 'lima'];
    $s = '';
    while (strlen($s) < 30000) {
        $s .= $words[random_int(0, count($words) - 1)] . ' ';
    }
    $_SESSION['big'] = $s;
}
$_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
header('Content-Type: application/json');
echo json_encode(['backend' => getenv('LAMP_NAME'), 'visits' => $_SESSION['visits'], 'id' => session_id(), 'md5' => md5($_SESSION['big']), 'had' => $had]);
`,
	"login.php": `<?php
session_start();
$had = array_keys($_SESSION);
$_SESSION['user'] = (string)($_GET['user'] ?? '');
$_SESSION['auth'] = ['user' => ['id' => (string)($_GET['user'] ?? '')]];
$_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
header('Content-Type: application/json');
echo json_encode(['backend' => getenv('LAMP_NAME'), 'visits' => $_SESSION['visits'], 'id' => session_id(), 'had' => $had]);
`,
	"empty.php": `<?php
session_start();
header('Content-Type: application/json');
echo json_encode(['id' => session_id()]);
`,
	"logout.php": `<?php
session_start();
session_destroy();
header('Content-Type: application/json');
echo json_encode(['backend' => getenv('LAMP_NAME'), 'logged_out' => true]);
`,
	"health.php": `ok`,
	"slow.php": `<?php
session_start();
usleep(1000 * max(0, (int)($_GET['ms'] ?? 0)));
$_SESSION['slow'] = ($_SESSION['slow'] ?? 0) + 1;
header('Content-Type: application/json');
echo json_encode(['backend' => getenv('LAMP_NAME'), 'id' => session_id()]);
`,
	"count.php": `<?php
$errors = [];
set_error_handler(function ($no, $msg) use (&$errors) { $errors[] = $msg; return true; });
usleep(1000 * max(0, (int)($_GET['pre'] ?? 0)));
$ss = microtime(true);
$started = session_start();
$ms = max(0, (int)($_GET['ms'] ?? 0));
$mark = '';
if ($ms > 0) {
    $mark = __DIR__ . '/held.' . getenv('LAMP_NAME') . '.' . getmypid();
    file_put_contents($mark, session_id());
    usleep(1000 * $ms);
}
$visits = 0;
$wrote = false;
if ($started) {
    $visits = $_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
    $wrote = session_write_close();
}
if ($mark !== '') {
    unlink($mark);
}
header('Content-Type: application/json');
header('X-Lamp: ' . getenv('LAMP_NAME'));
echo json_encode(['backend' => getenv('LAMP_NAME'), 'visits' => $visits, 'id' => session_id(),
    'started' => $started, 'wrote' => $wrote, 'error' => implode(' | ', $errors),
    'req' => $_SERVER['REQUEST_TIME_FLOAT'], 'ss' => $ss]);
`,
	"seq.php": `<?php
session_start();
usleep(1000 * max(0, (int)($_GET['ms'] ?? 0)));
$_SESSION['seq'][] = (string)($_GET['n'] ?? '');
header('Content-Type: application/json');
echo json_encode(['backend' => getenv('LAMP_NAME'), 'id' => session_id(), 'seq' => $_SESSION['seq']]);
`,
	"profile.php": `<?php
session_start();
$_SESSION['auth'] = ['user' => ['id' => (int)($_GET['user'] ?? 0), 'name' => 'Zoë'], 'roles' => ['admin', 'ops']];
$prefs = new stdClass;
$prefs->theme = 'dark';
$prefs->scale = 1.5;
$_SESSION['prefs'] = $prefs;
$_SESSION['raw'] = "\xff\xfe";
$_SESSION['note'] = str_repeat('session data ', 2000);
$_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
header('Content-Type: application/json');
echo json_encode(['backend' => getenv('LAMP_NAME'), 'visits' => $_SESSION['visits'], 'id' => session_id()]);
`,
	"peek.php": `<?php
header('Content-Type: application/json');
echo json_encode((object)$_COOKIE, JSON_INVALID_UTF8_SUBSTITUTE);
`,
}
