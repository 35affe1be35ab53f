package sessionstore

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

// TestReadMeta: meta-get answers as memcached 1.6 sends them, and answers
// it never sends, which must be protocol errors rather than items.
func TestReadMeta(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want metaItem
		err  bool
		next string // what the reader holds after the answer
	}{
		{in: "EN\r\nEN\r\n", want: metaItem{}, next: "EN\r\n"},
		{in: "HD\r\n", want: metaItem{Found: true, TTL: -1}},
		{in: "HD t10 f768 c42\r\n", want: metaItem{Found: true, TTL: 10, Flags: 768, CAS: 42}},
		{in: "HD t-1 s9\r\n", want: metaItem{Found: true, TTL: -1, Size: 9}},
		{in: "VA 3 t1440 f0 c7\r\nabc\r\nEN\r\n", want: metaItem{Found: true, TTL: 1440, CAS: 7, Value: []byte("abc")}, next: "EN\r\n"},
		{in: "VA 40 t9 c3\r\n" + strings.Repeat("v", 40) + "\r\n", want: metaItem{Found: true, TTL: 9, CAS: 3, Value: []byte(strings.Repeat("v", 40))}},
		{in: "VA 0 t5\r\n\r\n", want: metaItem{Found: true, TTL: 5, Value: []byte{}}},
		{in: "VA 2  t5  c1\r\nab\r\n", want: metaItem{Found: true, TTL: 5, CAS: 1, Value: []byte("ab")}},
		{in: "HD q k\r\n", want: metaItem{Found: true, TTL: -1}}, // flags without values are skipped
		{in: "EN x\r\n", err: true},
		{in: "VA x t1\r\nab\r\n", err: true},
		{in: "VA -1\r\n", err: true},
		{in: "VA 2\r\nabcd\r\n", err: true},
		{in: "HD t1x\r\n", err: true},
		{in: "HD c99999999999999999999\r\n", err: true},
		{in: "SERVER_ERROR out of memory\r\n", err: true},
		{in: "HD\n", err: true},
		{in: "", err: true},
	} {
		r := bufio.NewReaderSize(strings.NewReader(tc.in), 32) // small: a long value refills the buffer
		got, err := readMeta(r)
		if tc.err {
			if err == nil {
				t.Errorf("%q: got %+v, want an error", tc.in, got)
			} else if tc.in != "" && !errors.Is(err, errProtocol) && tc.in != "VA 2\r\nabcd\r\n" {
				t.Errorf("%q: error %v, want a protocol error", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got.Found != tc.want.Found || got.TTL != tc.want.TTL || got.Flags != tc.want.Flags ||
			got.Size != tc.want.Size || got.CAS != tc.want.CAS || string(got.Value) != string(tc.want.Value) ||
			(got.Value == nil) != (tc.want.Value == nil) {
			t.Errorf("%q: got %+v, want %+v", tc.in, got, tc.want)
		}
		rest := make([]byte, 64)
		n, _ := r.Read(rest)
		if string(rest[:n]) != tc.next {
			t.Errorf("%q: left %q, want %q", tc.in, rest[:n], tc.next)
		}
	}
}
