package config

import (
	"strings"
	"testing"
)

// TestUnderscoresInHeaders: off unless set; a value that is not a boolean
// is refused with file, line and key.
func TestUnderscoresInHeaders(t *testing.T) {
	const base = "listen: 127.0.0.1:8080\nbackends:\n  - name: a\n    url: http://127.0.0.1:8081\n"
	for _, tc := range []struct {
		server string
		want   bool
		err    string
	}{
		{"", false, ""},
		{"server:\n  underscores_in_headers: true\n", true, ""},
		{"server:\n  underscores_in_headers: maybe\n", false, `c.yaml:6: server.underscores_in_headers: "maybe" is not true or false`},
	} {
		c, err := Parse("c.yaml", []byte(base+tc.server))
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.server, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.server, err)
		case c.Server.UnderscoresInHeaders != tc.want:
			t.Errorf("%q: UnderscoresInHeaders %v, want %v", tc.server, c.Server.UnderscoresInHeaders, tc.want)
		}
	}
}

// TestEngineAndSockio: h1 with sockio unless set; other values are refused
// with file, line and key.
func TestEngineAndSockio(t *testing.T) {
	const base = "listen: 127.0.0.1:8080\nbackends:\n  - name: a\n    url: http://127.0.0.1:8081\n"
	for _, tc := range []struct {
		server string
		engine string
		sockio bool
		err    string
	}{
		{"", "h1", true, ""},
		{"server:\n  engine: net/http\n  sockio: false\n", "net/http", false, ""},
		{"server:\n  engine: h1\n  sockio: true\n", "h1", true, ""},
		{"server:\n  engine: h2\n", "", false, `c.yaml:6: server.engine: "h2" is not h1 or net/http`},
		{"server:\n  sockio: off\n", "", false, `c.yaml:6: server.sockio: "off" is not true or false`},
	} {
		c, err := Parse("c.yaml", []byte(base+tc.server))
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.server, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.server, err)
		case c.Server.Engine != tc.engine || c.Server.Sockio != tc.sockio:
			t.Errorf("%q: engine %q sockio %v, want %q %v", tc.server, c.Server.Engine, c.Server.Sockio, tc.engine, tc.sockio)
		}
	}
}
