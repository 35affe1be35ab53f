package main

// GET /api/sessions/{id}?decode=1 end to end: sessions written by real PHP
// (php -S with Debian's memcache and memcached handlers, each serializer)
// into real memcached, read and decoded through the real admin listener.

import (
	"bytes"
	"compress/zlib"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

// adminGet requests path on the admin listener, with the token if bearer is
// set, and returns the status and body.
func adminGet(t *testing.T, admin, path string, bearer bool) (int, []byte) {
	t.Helper()
	token := ""
	if bearer {
		token = adminToken
	}
	return adminDo(t, "GET", "http://"+admin+path, token)
}

// decodedSession is the part of ?decode=1's answer the test reads.
type decodedSession struct {
	Bytes      int    `json:"bytes"`
	Flags      uint32 `json:"flags"`
	Serializer string `json:"serializer"`
	User       string `json:"user"`
	Data       struct {
		Auth struct {
			User  struct{ ID int64 } `json:"user"`
			Roles []string           `json:"roles"`
		} `json:"auth"`
		Prefs struct {
			Class      string         `json:"class"`
			Properties map[string]any `json:"properties"`
		} `json:"prefs"`
		Raw    map[string]string `json:"raw"`
		Note   string            `json:"note"`
		Visits int               `json:"visits"`
	} `json:"data"`
}

func TestDecodeSessionsWrittenByPHP(t *testing.T) {
	note := strings.Repeat("session data ", 2000)
	for _, handler := range []string{phptest.Memcache, phptest.Memcached} {
		t.Run(handler, func(t *testing.T) {
			mc := memtest.Start(t, 2)
			for _, ser := range []string{"php", "php_serialize", "php_binary"} {
				t.Run(ser, func(t *testing.T) {
					p := &pool{handler: handler, mc: mc, tr: &http.Transport{}}
					p.php = phptest.Start(t, phptest.Options{N: 1, Handler: handler, Servers: mc.Addrs(),
						Extra: []string{"session.serialize_handler=" + ser}})
					t.Cleanup(p.tr.CloseIdleConnections)
					g := startCaptured(t, gateYAML(p, "  serializer: "+ser+"\n  user_key: auth.user.id\n"))
					t.Cleanup(p.tr.CloseIdleConnections)
					u := p.newUser(t)
					var pg page
					if _, err := u.get("http://"+g.addrs.front+"/profile.php?user=42", &pg); err != nil || pg.Visits != 1 {
						t.Fatalf("profile.php: %v %+v", err, pg)
					}
					path := "/api/sessions/" + pg.ID + "?decode=1"

					if code, body := adminGet(t, g.addrs.admin, path, false); code != http.StatusUnauthorized {
						t.Errorf("without the token: %d %s, want 401", code, body)
					}
					code, body := adminGet(t, g.addrs.admin, path, true)
					if code != http.StatusOK {
						t.Fatalf("decode: %d %s", code, body)
					}
					var got decodedSession
					if err := json.Unmarshal(body, &got); err != nil {
						t.Fatalf("%v in %s", err, body)
					}
					d := got.Data
					if got.Serializer != ser || got.User != "42" || d.Auth.User.ID != 42 || strings.Join(d.Auth.Roles, ",") != "admin,ops" ||
						d.Prefs.Class != "stdClass" || d.Prefs.Properties["theme"] != "dark" || d.Prefs.Properties["scale"] != 1.5 ||
						d.Raw["base64"] != "//4=" || d.Note != note || d.Visits != 1 {
						t.Errorf("decoded %s", body)
					}
					// pecl memcache compresses values of 20000 bytes or more
					// (flags 2); pecl memcached stores them raw.
					if handler == phptest.Memcache && (got.Flags != 2 || got.Bytes >= len(note)) {
						t.Errorf("memcache stored flags %d, %d bytes: want compressed (2)", got.Flags, got.Bytes)
					}
					if handler == phptest.Memcached && (got.Flags != 0 || got.Bytes <= len(note)) {
						t.Errorf("memcached stored flags %d, %d bytes: want raw (0)", got.Flags, got.Bytes)
					}
					if strings.Contains(g.logs.String(), pg.ID) {
						t.Errorf("a full session id is in the log:\n%s", g.logs.String())
					}
				})
			}
		})
	}
}

// zlibOf compresses b as pecl memcache does (zlib format).
func zlibOf(b []byte) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// TestDecodeHostileSessionData stores hostile session values straight into
// memcached under valid ids and reads them through the admin listener: each
// is a 422 with the decoder's reason, the listener keeps serving, and the
// log names the sessions by hash only.
func TestDecodeHostileSessionData(t *testing.T) {
	mc := memtest.Start(t, 1)
	be := newRecordingBackend(t)
	g := startCaptured(t, sessionGateYAML(be.URL, mc.Addrs()))
	cases := []struct {
		value []byte
		flags int
		want  string
	}{
		{[]byte("a|" + strings.Repeat("a:1:{i:0;", 5000) + "N;" + strings.Repeat("}", 5000)), 0, "nested deeper than 64"},
		{[]byte("a|a:2147483647:{i:0;N;}"), 0, "exceeds"},
		{[]byte("a|s:999999999:\"x\";"), 0, "exceeds"},
		{[]byte("a|i:1;b|r:99;"), 0, "reference to value 99"},
		{[]byte("a|O:1:\"X\":1:{"), 0, "exceeds the 3 bytes left"},
		{[]byte("a|b:2;"), 0, "bool must be"},
		{zlibOf(make([]byte, 9<<20)), 2, "inflates to more than"},
		{[]byte("not zlib"), 2, "zlib"},
		{[]byte("1"), 768, "flags 768"},
	}
	admin := g.addrs.admin
	for i, c := range cases {
		id := fmt.Sprintf("h%025d", i)
		if r := mcDo(t, mc.Addr(0), fmt.Sprintf("set %s %d 600 %d\r\n%s\r\n", id, c.flags, len(c.value), c.value)); r != "STORED" {
			t.Fatalf("seeding case %d (%d bytes): %q", i, len(c.value), r)
		}
		req, _ := http.NewRequest("GET", "http://"+admin+"/api/sessions/"+id+"?decode=1", nil)
		req.Header.Set("Authorization", "Bearer "+hostileToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		var e struct{ Error string }
		err = json.NewDecoder(res.Body).Decode(&e)
		res.Body.Close()
		if res.StatusCode != http.StatusUnprocessableEntity || err != nil || !strings.Contains(e.Error, c.want) {
			t.Errorf("case %d: %d %q (%v), want 422 with %q", i, res.StatusCode, e.Error, err, c.want)
		}
		if strings.Contains(g.logs.String(), id) {
			t.Errorf("case %d: the full session id is in the log", i)
		}
	}
	// Still serving, and a good session next to them decodes.
	const good = "gooooooooooooooooooooooood"
	mcDo(t, mc.Addr(0), "set "+good+" 0 600 10\r\nvisit|i:1;\r\n")
	code, body := adminDo(t, "GET", "http://"+admin+"/api/sessions/"+good+"?decode=1", hostileToken)
	if code != http.StatusOK || !strings.Contains(string(body), `"data":{"visit":1}`) {
		t.Errorf("good session after the hostile ones: %d %s", code, body)
	}
	if !strings.Contains(g.logs.String(), "session data not decodable") {
		t.Errorf("no log line for undecodable data:\n%s", g.logs.String())
	}
}
