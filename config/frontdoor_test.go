package config

import (
	"strings"
	"testing"
	"time"
)

// TestFrontDoorKeys: proxy_protocol, limits and health.slow_start default
// to off, take valid values, and refuse bad ones with file, line and key.
func TestFrontDoorKeys(t *testing.T) {
	const base = "listen: 127.0.0.1:8080\nbackends:\n  - name: a\n    url: http://127.0.0.1:8081\n"
	c, err := Parse("c.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.ProxyProtocol.Enabled || c.ProxyProtocol.HeaderTimeout != 5*time.Second || (c.Limits.RequestsPerSecond|c.Limits.Burst|c.Limits.ConnectionsPerClient) != 0 || c.Health.SlowStart != 0 {
		t.Fatalf("defaults: %+v %+v %v", c.ProxyProtocol, c.Limits, c.Health.SlowStart)
	}
	c, err = Parse("c.yaml", []byte(base+"proxy_protocol:\n  enabled: true\n  trusted: [10.0.0.0/8, \"::1\"]\n  header_timeout: 2s\n"+
		"limits:\n  requests_per_second: 10\n  burst: 20\n  connections_per_client: 50\n  exempt: [192.0.2.1]\nhealth:\n  slow_start: 30s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.ProxyProtocol.Enabled || len(c.ProxyProtocol.Trusted) != 2 || c.ProxyProtocol.HeaderTimeout != 2*time.Second ||
		c.Limits.RequestsPerSecond != 10 || c.Limits.Burst != 20 || c.Limits.ConnectionsPerClient != 50 ||
		len(c.Limits.Exempt) != 1 || c.Health.SlowStart != 30*time.Second {
		t.Fatalf("parsed: %+v %+v %v", c.ProxyProtocol, c.Limits, c.Health.SlowStart)
	}
	for _, tc := range []struct{ yaml, err string }{
		{"proxy_protocol:\n  enabled: true\n", "c.yaml:5: proxy_protocol.trusted: is required"},
		{"proxy_protocol:\n  trusted: [nope]\n", `c.yaml:6: proxy_protocol.trusted[0]: "nope" is not an IP address or CIDR`},
		{"proxy_protocol:\n  header_timeout: 0s\n", "c.yaml:6: proxy_protocol.header_timeout: 0s is out of range 1ms-1m"},
		{"limits:\n  requests_per_second: -1\n", "c.yaml:6: limits.requests_per_second: -1 is out of range"},
		{"limits:\n  burst: 5\n", "c.yaml:6: limits.burst: applies only with limits.requests_per_second"},
		{"limits:\n  connections_per_client: -2\n", "c.yaml:6: limits.connections_per_client: -2 is out of range"},
		{"limits:\n  exempt: [10.0.0.0/33]\n", `c.yaml:6: limits.exempt[0]: "10.0.0.0/33" is not an IP address or CIDR`},
		{"health:\n  slow_start: 2h\n", "c.yaml:6: health.slow_start: 2h0m0s is out of range 0-1h"},
	} {
		_, err := Parse("c.yaml", []byte(base+tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: err %v, want %q", tc.yaml, err, tc.err)
		}
	}
}
