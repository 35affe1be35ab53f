package admin

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// ServerLimits are the admin listener's timeouts and header bound.
type ServerLimits struct {
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the whole request: no admin call has a body worth
	// waiting for.
	ReadTimeout time.Duration
	// WriteTimeout bounds each response; the CPU profile, which runs for
	// the seconds asked (up to a minute), extends its own deadlines.
	WriteTimeout   time.Duration
	IdleTimeout    time.Duration
	MaxHeaderBytes int
}

// DefaultLimits are the limits sessiongate serves the admin listener with.
func DefaultLimits() ServerLimits {
	return ServerLimits{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// NewServer returns the admin listener's server for h (from New) with the
// limits l; log receives net/http's own errors.
func NewServer(h http.Handler, l ServerLimits, log *slog.Logger) *http.Server {
	s := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
	if log != nil {
		s.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	}
	return s
}

// hostGuard answers 421 Misdirected Request to a request whose Host is not
// a name of this listener: its own address, a loopback name, or one of
// hosts. A DNS-rebinding page (evil.example, whose name the attacker then
// points at 127.0.0.1) makes the visitor's browser send Host: evil.example,
// and is refused before any handler runs. 421, not 403: the request is not
// forbidden to the client, it was sent to a server that does not serve
// that authority (RFC 9110 15.5.20). Only the name is compared, not the
// port: the attack changes the name, and an SSH tunnel or reverse proxy
// changes the port.
func (h *handler) hostGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.hostAllowed(r) {
			h.log.Warn("admin: request for another host refused", "remote", r.RemoteAddr, "host", r.Host)
			writeError(w, http.StatusMisdirectedRequest, "this admin listener does not answer to that Host; list the name in admin.hosts")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (h *handler) hostAllowed(r *http.Request) bool {
	if r.Host == "" {
		return true // HTTP/1.0 without Host: no browser sends that
	}
	name := r.Host
	if host, _, err := net.SplitHostPort(name); err == nil {
		name = host
	}
	name = strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
	switch strings.ToLower(name) {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if own, err := netip.ParseAddrPort(la.String()); err == nil {
			if ip, err := netip.ParseAddr(name); err == nil && ip.Unmap() == own.Addr().Unmap() {
				return true
			}
		}
	}
	for _, allowed := range h.o.Hosts {
		if strings.EqualFold(strings.TrimSuffix(strings.TrimPrefix(allowed, "["), "]"), name) {
			return true
		}
	}
	return false
}
