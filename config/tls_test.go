package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestACMEDefaults: a tls.acme section with only domains gets Let's
// Encrypt, both challenges and the default storage.
func TestACMEDefaults(t *testing.T) {
	c, err := Parse("c.yaml", []byte("backends: [{name: a, url: 'http://h'}]\ntls:\n  http_listen: ':80'\n  acme:\n    domains: [www.example.com]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := &ACME{Domains: []string{"www.example.com"}, CA: LetsEncrypt, Storage: "/var/lib/sessiongate/acme",
		Challenges: []string{"http-01", "tls-alpn-01"}, RenewInterval: 10 * time.Minute}
	if !reflect.DeepEqual(c.TLS.ACME, want) || c.TLS.HTTPListen != ":80" {
		t.Errorf("tls = %+v, acme = %+v; want acme %+v", c.TLS, c.TLS.ACME, want)
	}
	// tls-alpn-01 alone needs no HTTP listener.
	if _, err := Parse("c.yaml", []byte("backends: [{name: a, url: 'http://h'}]\ntls:\n  acme:\n    domains: [www.example.com]\n    challenges: [tls-alpn-01]\n")); err != nil {
		t.Error(err)
	}
}

// TestACMEProblems: each mistake is named with file, line and key.
func TestACMEProblems(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "root.txt")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	file := `listen: 127.0.0.1:8443
backends: [{name: a, url: 'http://h'}]
tls:
  cert: /etc/cert.pem
  http_listen: 127.0.0.1:8443
  acme:
    domains: [www.example.com, '*.example.com', 10.0.0.1, localhost, WWW.example.com]
    email: not-an-address
    ca: http://acme.example/dir
    ca_root: ` + notPEM + `
    storage: ` + notPEM + `
    challenges: [http-01, dns-01, http-01]
    renew_interval: 100ms
`
	_, err := Parse("bad.yaml", []byte(file))
	var ps *Problems
	if !errors.As(err, &ps) {
		t.Fatalf("err = %v, want *Problems", err)
	}
	want := []string{
		`bad.yaml:5: tls.http_listen: must differ from listen and admin.listen`,
		`bad.yaml:6: tls.acme: give tls.cert and tls.key, or tls.acme, not both`,
		`bad.yaml:7: tls.acme.domains[1]: "*.example.com": wildcard names need the DNS-01 challenge`,
		`bad.yaml:7: tls.acme.domains[2]: "10.0.0.1" is not a fully qualified DNS name`,
		`bad.yaml:7: tls.acme.domains[3]: "localhost" is not a fully qualified DNS name`,
		`bad.yaml:7: tls.acme.domains[4]: "WWW.example.com" is already listed as tls.acme.domains[0]`,
		`bad.yaml:8: tls.acme.email: "not-an-address" is not an e-mail address`,
		`bad.yaml:9: tls.acme.ca: "http://acme.example/dir" is not an https:// ACME directory URL`,
		`bad.yaml:10: tls.acme.ca_root: "` + notPEM + `" holds no PEM certificate`,
		`bad.yaml:11: tls.acme.storage: "` + notPEM + `" is not a directory`,
		`bad.yaml:12: tls.acme.challenges[1]: "dns-01" must be http-01 or tls-alpn-01`,
		`bad.yaml:12: tls.acme.challenges[2]: "http-01" is already listed as tls.acme.challenges[0]`,
		`bad.yaml:13: tls.acme.renew_interval: 100ms is out of range 1s-24h`,
	}
	var got []string
	for _, p := range ps.List {
		got = append(got, p.String())
	}
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, w)
		}
		if !found {
			t.Errorf("missing %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}

	for _, tc := range []struct{ tls, want string }{
		{"tls:\n  acme:\n    email: a@b.example\n", `c.yaml:3: tls.acme.domains: at least one domain is required`},
		{"tls:\n  acme:\n    domains: [a.example]\n", `c.yaml:3: tls.acme.challenges[0]: http-01 is answered on tls.http_listen, which is not set`},
		{"tls:\n  acme:\n    domains: [a.example]\n    challenges: []\n", `c.yaml:5: tls.acme.challenges: at least one of http-01 and tls-alpn-01 is required`},
		{"tls:\n  http_listen: ':80'\n", `c.yaml:2: tls.cert: is required when tls is set (or tls.acme)`},
		{"tls:\n  cert: /a\n  key: /b\n  http_listen: nope\n", `c.yaml:5: tls.http_listen: "nope" is not host:port`},
	} {
		_, err := Parse("c.yaml", []byte("backends: [{name: a, url: 'http://h'}]\n"+tc.tls))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.tls, err, tc.want)
		}
	}
}
