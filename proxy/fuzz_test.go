package proxy

import (
	"net/http"
	"net/textproto"
	"strings"
	"testing"
)

// cookieNames parses Cookie lines the way findCookies and keepOnly split
// them and returns how often each name occurs.
func cookieNames(lines []string) map[string]int {
	names := map[string]int{}
	for _, line := range lines {
		for _, part := range strings.Split(line, ";") {
			if part = textproto.TrimString(part); part != "" {
				k, _, _ := strings.Cut(part, "=")
				names[k]++
			}
		}
	}
	return names
}

// FuzzCookieHeader: on any Cookie header (several lines separated by \n),
// findCookies and keepOnly never panic; findCookies returns values that were
// in the header; keepOnly leaves at most one session cookie, removes the
// marker and never makes up a cookie name.
func FuzzCookieHeader(f *testing.F) {
	for _, s := range []string{
		"",
		"PHPSESSID=" + liveID,
		"a=1; PHPSESSID=bad!; PHPSESSID=" + liveID + "; b=2; PHPSESSID=" + otherID,
		"PHPSESSID=" + liveID + "; SGRENEW=abc|def",
		`PHPSESSID="` + liveID + `"`,
		"PHPSESSID; PHPSESSID=; =PHPSESSID; ;;; PHPSESSID==x",
		"a=1\nPHPSESSID=" + liveID + "\nPHPSESSID=" + otherID,
		"\tPHPSESSID=" + liveID + " ;PHPSESSID =x; PHPSESSID= y",
		"PHPSESSID=\xff\xfe; PHPSESSID=%0d%0a",
		strings.Repeat("PHPSESSID=x; ", 20) + "PHPSESSID=" + liveID,
	} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(1))
	}
	f.Fuzz(func(t *testing.T, header string, pick uint8) {
		const name, marker = "PHPSESSID", "SGRENEW"
		lines := strings.Split(header, "\n")
		var vals [maxSessionCookies]string
		n := findCookies(lines, name, vals[:])
		in := cookieNames(lines)
		if n < 0 || n > in[name] {
			t.Fatalf("findCookies counted %d of %d %s cookies", n, in[name], name)
		}
		for _, v := range vals[:min(n, maxSessionCookies)] {
			if !strings.Contains(header, v) {
				t.Fatalf("findCookies made up value %q", v)
			}
		}
		keep := ""
		if n > 0 && pick%4 != 0 { // sometimes remove them all
			keep = vals[int(pick)%min(n, maxSessionCookies)]
		}
		h := http.Header{"Cookie": lines}
		keepOnly(h, name, keep, marker)
		if len(h["Cookie"]) > 1 {
			t.Fatalf("keepOnly left %d Cookie lines", len(h["Cookie"]))
		}
		out := cookieNames(h["Cookie"])
		if out[name] > 1 || (keep == "" && out[name] != 0) {
			t.Fatalf("keepOnly(keep %q) left %d session cookies: %q", keep, out[name], h["Cookie"])
		}
		if out[marker] != 0 {
			t.Fatalf("keepOnly left the marker: %q", h["Cookie"])
		}
		for k, c := range out {
			if in[k] < c {
				t.Fatalf("keepOnly output %q has %d %q cookies, input had %d", h["Cookie"], c, k, in[k])
			}
		}
	})
}
