package acme

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Redirect answers every request with a 308 to the same host, path and
// query over HTTPS on httpsPort (left out of the URL when it is 443). 308
// rather than 301 keeps the method and body of a POST.
func Redirect(httpsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		// net/http lets sub-delimiters such as ! $ ( ) through in Host;
		// only a DNS name or an IP address goes into the Location.
		if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
			if host = a.String(); a.Is6() {
				host = "[" + host + "]"
			}
		} else if !dnsName(host) {
			http.Error(w, "the Host header is not a DNS name or IP address", http.StatusBadRequest)
			return
		}
		if httpsPort != "" && httpsPort != "443" {
			host += ":" + httpsPort
		}
		uri := r.URL.RequestURI()
		if !strings.HasPrefix(uri, "/") { // "*" (OPTIONS) or an absolute-form target
			uri = "/"
		}
		w.Header().Set("Location", "https://"+host+uri)
		w.WriteHeader(http.StatusPermanentRedirect)
	})
}

// dnsName reports whether s is made of letters, digits, '-', '_' and
// non-empty dot-separated labels.
func dnsName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
