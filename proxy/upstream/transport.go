package upstream

import (
	"net"
	"net/http"
	"time"
)

// idleTimeout is how long an unused keep-alive connection to a backend is
// kept, by Lean and by the Transport alike.
const idleTimeout = 90 * time.Second

// TransportOptions configure the upstream HTTP/1.1 client.
type TransportOptions struct {
	DialTimeout     time.Duration
	ResponseTimeout time.Duration // until response headers
	MaxIdleConns    int           // keep-alive connections kept per backend
	// MaxHeaderBytes bounds a response's head; 0 is DefaultMaxHeaderBytes.
	MaxHeaderBytes int64
}

// NewTransport returns a net/http Transport with pooled keep-alive
// connections per backend, no compression of its own (the client's
// Accept-Encoding passes through), no proxy from the environment and
// Lean's bound on response heads. Lean sends what it does not take itself
// through one.
func NewTransport(o TransportOptions) *http.Transport {
	d := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
	maxHead := o.MaxHeaderBytes
	if maxHead <= 0 {
		maxHead = DefaultMaxHeaderBytes
	}
	return &http.Transport{
		DialContext:            d.DialContext,
		MaxIdleConns:           0, // no global cap; bounded per host below
		MaxIdleConnsPerHost:    o.MaxIdleConns,
		IdleConnTimeout:        idleTimeout,
		ResponseHeaderTimeout:  o.ResponseTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxHead,
		DisableCompression:     true,
		ForceAttemptHTTP2:      false,
	}
}
