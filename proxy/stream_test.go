package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestFlushImmediately(t *testing.T) {
	for _, tc := range []struct {
		ct     string
		length int64
		want   bool
	}{
		{"text/event-stream", 100, true},
		{"Text/Event-Stream; charset=utf-8", 100, true},
		{" text/event-stream ;retry=1", 100, true},
		{"text/event-stream; bad parameter", 100, true},
		{"text/html; charset=utf-8", 100, false},
		{"text/event-streamx", 100, false},
		{"", 100, false},
		{"text/html", -1, true}, // unknown length: streamed output
	} {
		res := &http.Response{Header: http.Header{}, ContentLength: tc.length}
		if tc.ct != "" {
			res.Header.Set("Content-Type", tc.ct)
		}
		if got := flushImmediately(res); got != tc.want {
			t.Errorf("flushImmediately(%q, length %d) = %v, want %v", tc.ct, tc.length, got, tc.want)
		}
	}
}

// A backend that dies after its headers, part-way through a framed body
// (Content-Length or chunked), must not give the client a whole-looking
// answer: the client's read fails. (A close-delimited body, as php -S
// sends, ends the same way whether cut or whole: nothing can tell.)
func TestBodyCutByBackendDeathIsNotEnded(t *testing.T) {
	for _, head := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{\"a\"",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n4\r\n{\"a\"\r\n",
	} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			bufio.NewReader(c).ReadSlice('\n') // the request line is enough
			io.WriteString(c, head)
			c.Close() // as the kernel does for a killed process
		}()
		f := newFarm(t, []string{"http://" + l.Addr().String()}, nil)
		res, err := http.Get(f.front.URL + "/page")
		l.Close()
		if err != nil {
			continue // the connection closed before the headers: no answer at all
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err == nil {
			t.Errorf("backend sent %q and died: the client read %d %q as a whole answer, want a failed read", head, res.StatusCode, b)
		}
	}
}
