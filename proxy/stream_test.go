package proxy

import (
	"net/http"
	"testing"
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
