package upstream

import (
	"net"
	"net/http"
	"time"
)

// TransportOptions configure the upstream HTTP/1.1 client.
type TransportOptions struct {
	DialTimeout     time.Duration
	ResponseTimeout time.Duration // until response headers
	MaxIdleConns    int           // keep-alive connections kept per backend
}

// NewTransport returns a net/http Transport with
// pooled keep-alive connections per backend, no compression of its own (the
// client's Accept-Encoding passes through) and no proxy from the
// environment.
func NewTransport(o TransportOptions) *http.Transport {
	d := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           d.DialContext,
		MaxIdleConns:          0, // no global cap; bounded per host below
		MaxIdleConnsPerHost:   o.MaxIdleConns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: o.ResponseTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}
