//go:build unix

package phptest

import (
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
)

type visit struct {
	Backend string   `json:"backend"`
	Visits  int      `json:"visits"`
	ID      string   `json:"id"`
	Had     []string `json:"had"`
}

func get(t *testing.T, c *http.Client, url string) visit {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var v visit
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
		t.Fatalf("GET %s: %d: %v", url, res.StatusCode, err)
	}
	return v
}

// TestFarmSharesSessions: both handlers store the session in the pool, so a
// client alternating between backends keeps counting, also across a backend
// stop and start on the same port.
func TestFarmSharesSessions(t *testing.T) {
	mc := memtest.Start(t, 2)
	for _, h := range []string{Memcache, Memcached} {
		t.Run(h, func(t *testing.T) {
			f := Start(t, Options{N: 2, Handler: h, Servers: mc.Addrs()})
			jar, _ := cookiejar.New(nil)
			c := &http.Client{Jar: jar, Timeout: 5 * time.Second}
			want := 0
			step := func(i int) {
				t.Helper()
				want++
				v := get(t, c, f.URL(i)+"/visit.php")
				if v.Visits != want || v.Backend != f.Name(i) || len(v.ID) != 26 {
					t.Fatalf("visit %d on %s = %+v", want, f.Name(i), v)
				}
			}
			step(0)
			step(1)
			f.Stop(0)
			if _, err := c.Get(f.URL(0) + "/health.php"); err == nil {
				t.Fatal("stopped backend still answers")
			}
			step(1)
			f.Start(0)
			step(0)
		})
	}
}

func TestIniQuoting(t *testing.T) {
	args, err := iniArgs(Options{Handler: Memcache, Servers: []string{"127.0.0.1:1", "127.0.0.1:2"}, GCMaxLifetime: 60})
	if err != nil {
		t.Fatal(err)
	}
	want := `session.save_path="tcp://127.0.0.1:1, tcp://127.0.0.1:2"`
	found := false
	for _, a := range args {
		found = found || a == want
	}
	if !found {
		t.Errorf("args %q lack %q", args, want)
	}
	if _, err := iniArgs(Options{Handler: "redis", Servers: []string{"x:1"}}); err == nil {
		t.Error("redis handler accepted")
	}
}
