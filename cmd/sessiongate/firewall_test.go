package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/config"
)

var update = flag.Bool("update", false, "rewrite testdata/firewall*.golden")

// sampleConfig mirrors the repository's config.yaml: everything on loopback.
const sampleConfig = `listen: 127.0.0.1:8080
backends:
  - {name: lamp01, url: "http://127.0.0.1:8081"}
  - {name: lamp02, url: "http://127.0.0.1:8082"}
  - {name: lamp03, url: "http://127.0.0.1:8083"}
health: {path: /health.php}
session: {handler: memcache, lifetime: 24m}
memcached:
  servers: [127.0.0.1:11211, 127.0.0.1:11212, 127.0.0.1:11213]
admin: {listen: 127.0.0.1:9090, token: change-me}
`

// farmConfig is the classic topology on a LAN, with one backend by name,
// one by IPv6 literal and the admin listener open on all interfaces.
const farmConfig = `listen: 0.0.0.0:80
backends:
  - {name: lamp03, url: "http://10.0.0.23:8080"}
  - {name: lamp01, url: "http://10.0.0.21"}
  - {name: lamp02, url: "https://10.0.0.22:8443/app"}
  - {name: lamp04, url: "http://lamp04.example.net"}
  - {name: lamp05, url: "http://[2001:db8::25]:8080"}
session: {handler: memcached}
memcached:
  servers: [10.0.0.11:11211, 10.0.0.12:11211, "memcached3.example.net:11211"]
admin: {listen: ":9090", token: secret}
`

func mustParse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	c, err := config.Parse("config.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("test config rejected:\n%v", err)
	}
	return c
}

func TestFirewallGolden(t *testing.T) {
	for _, tc := range []struct {
		golden string
		yaml   string
		allow  []string
	}{
		{"firewall.golden", sampleConfig, nil},
		{"firewall_farm.golden", farmConfig, []string{"10.0.0.5", "2001:db8::5", "10.0.1.0/24", "127.0.0.1", "10.0.0.21"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			got := firewallRules(mustParse(t, tc.yaml), firewallOptions{Allow: tc.allow})
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestFirewallGolden -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("output differs from %s (rerun with -update if intended):\n%s", path, got)
			}
		})
	}
}

// TestFirewallGoldenNftCheck has the kernel's nftables check every golden
// ruleset (nft -c parses and validates without applying anything).
func TestFirewallGoldenNftCheck(t *testing.T) {
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Fatal("nft not found: install the Debian package nftables")
	}
	args := []string{"-c", "-f"}
	if os.Geteuid() != 0 {
		// nft needs CAP_NET_ADMIN even to check; a user namespace with its
		// own network namespace grants it without touching the host.
		args = append([]string{"-rn", nft}, args...)
		nft = "unshare"
	}
	goldens, _ := filepath.Glob(filepath.Join("testdata", "firewall*.golden"))
	if len(goldens) == 0 {
		t.Fatal("no testdata/firewall*.golden")
	}
	for _, g := range goldens {
		if out, err := exec.Command(nft, append(args, g)...).CombinedOutput(); err != nil {
			t.Errorf("%s %s %s: %v\n%s", nft, strings.Join(args, " "), g, err, out)
		}
	}
}

func TestFirewallRulesBehaviour(t *testing.T) {
	farm := firewallRules(mustParse(t, farmConfig), firewallOptions{Allow: []string{"10.0.0.5", "2001:db8::5"}})
	sample := firewallRules(mustParse(t, sampleConfig), firewallOptions{})
	for _, tc := range []struct {
		name, out, want string
		present         bool
	}{
		{"memcached open to backends and -allow hosts, sorted", farm, "ip saddr { 10.0.0.5, 10.0.0.21, 10.0.0.22, 10.0.0.23 } tcp dport 11211 accept", true},
		{"IPv6 backend and -allow host", farm, "ip6 saddr { 2001:db8::5, 2001:db8::25 } tcp dport 11211 accept", true},
		{"everyone else dropped on memcached", farm, "tcp dport 11211 drop", true},
		{"named backend explained", farm, `backend lamp04: host "lamp04.example.net" is a name`, true},
		{"open admin reachable from -allow hosts", farm, "ip saddr 10.0.0.5 tcp dport 9090 accept", true},
		{"web port accepted", farm, "tcp dport 80 accept", true},
		{"ip6tables when v6 appears", farm, "# ip6tables -A SESSIONGATE -p tcp --dport 11211 -s 2001:db8::5,2001:db8::25 -j ACCEPT", true},
		{"policy never drops", farm, "policy drop", false},
		{"memcached ports deduplicated and sorted", sample, "tcp dport { 11211, 11212, 11213 } drop", true},
		{"loopback peers need no rule", sample, "saddr", false},
		{"loopback admin dropped from outside", sample, "tcp dport 9090 drop", true},
		{"no ip6tables without v6", sample, "# ip6tables ", false},
	} {
		if strings.Contains(tc.out, tc.want) != tc.present {
			t.Errorf("%s: contains(%q) = %v, want %v", tc.name, tc.want, !tc.present, tc.present)
		}
	}
}

func TestRunFirewall(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte(farmConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("listen: nowhere\nbackends: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(good)
	if err != nil {
		t.Fatal(err)
	}
	want := firewallRules(c, firewallOptions{Allow: []string{"10.0.0.5", "10.0.9.0/24"}})

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		out    string // exact stdout, when code is 0
		errHas string
	}{
		{"prints rules", []string{"-config", good, "-allow", "10.0.0.5", "-allow", "10.0.9.0/24"}, 0, want, ""},
		{"config problems with file and line", []string{"-config", bad}, 1, "", bad + ":1: listen:"},
		{"missing file", []string{"-config", filepath.Join(dir, "none.yaml")}, 1, "", "no such file"},
		{"bad -allow", []string{"-config", good, "-allow", "lamp01"}, 2, "", "not an IP address or CIDR"},
		{"stray argument", []string{"-config", good, "extra"}, 2, "", `unexpected argument "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runFirewall(tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			if code == 0 && stdout.String() != tc.out {
				t.Errorf("stdout differs from firewallRules:\n%s", stdout.String())
			}
			if code != 0 && (stdout.Len() != 0 || !strings.Contains(stderr.String(), tc.errHas)) {
				t.Errorf("stdout %q, stderr %q; want stderr containing %q", stdout.String(), stderr.String(), tc.errHas)
			}
		})
	}
}
