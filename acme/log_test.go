package acme

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// TestZapThroughSlog: certmagic's zap lines come out of sessiongate's slog
// handler with their level, fields and logger name; debug lines only when
// the handler takes them.
func TestZapThroughSlog(t *testing.T) {
	var buf bytes.Buffer
	z := zapLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})).With("component", "acme"))
	z.Named("obtain").With(zap.String("identifier", "www.example.com")).Error("could not get certificate", zap.Error(errors.New("boom")), zap.Int("attempt", 2))
	z.Debug("noise")
	z.Warn("careful")
	out := buf.String()
	for _, w := range []string{
		`level=ERROR msg="could not get certificate" component=acme identifier=www.example.com attempt=2 error=boom logger=obtain`,
		`level=WARN msg=careful component=acme`,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("missing %q in:\n%s", w, out)
		}
	}
	if strings.Contains(out, "noise") {
		t.Errorf("debug line passed an info handler:\n%s", out)
	}
}
