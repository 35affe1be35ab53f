package proxy

import (
	"io"
	"net/http"
	"strings"

	"github.com/sessiongate/sessiongate/proxy/internal/syntax"
)

// flushImmediately reports whether each chunk of res must reach the client
// as soon as it arrives: server-sent events and bodies of unknown length
// (streamed output such as PHP's flush()).
func flushImmediately(res *http.Response) bool {
	return res.ContentLength == -1 || isEventStream(res.Header)
}

// isEventStream reports whether h announces server-sent events.
func isEventStream(h http.Header) bool {
	// The media type is what precedes any parameters; names are
	// case-insensitive (RFC 9110 8.3.1). No mime.ParseMediaType: it builds
	// a parameter map for every response.
	ct, _, _ := strings.Cut(syntax.Get(h, "Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// copyBody streams src to w through buf, never holding more than one
// buffer of the body in memory.
func copyBody(w http.ResponseWriter, src io.Reader, buf []byte, flush bool) error {
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
	}
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if rc != nil {
				if err := rc.Flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
