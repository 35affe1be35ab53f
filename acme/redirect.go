package acme

import (
	"net"
	"net/http"
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
		// net/http has checked the Host header's characters; an IPv6
		// literal lost its brackets above and gets them back here.
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		if host == "" {
			http.Error(w, "a Host header is required", http.StatusBadRequest)
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
