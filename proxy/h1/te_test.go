package h1

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

// TestUnsupportedTEText pins the net/http error text isUnsupportedTE
// matches: if a Go release rewords it, these heads would get 400 instead of
// 501 and this test fails.
func TestUnsupportedTEText(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		want       bool
	}{
		{"unsupported coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", true},
		{"coding list", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", true},
		{"two fields", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		// Other malformed heads must not match: the check is not vacuous.
		{"bad header line", "POST / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", false},
		{"bad Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", false},
	} {
		_, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tc.head)))
		if err == nil {
			t.Errorf("%s: http.ReadRequest accepted the head", tc.name)
			continue
		}
		if got := isUnsupportedTE(err); got != tc.want {
			t.Errorf("%s: isUnsupportedTE(%q) = %v, want %v", tc.name, err, got, tc.want)
		}
	}
}
