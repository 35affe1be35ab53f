package proxy

import (
	"io"
	"net/http"
	"sync"
)

// switchProtocols completes an Upgrade (e.g. WebSocket): it hijacks the
// client connection, sends the backend's 101 and copies bytes both ways
// until either side closes.
func (p *Proxy) switchProtocols(w http.ResponseWriter, r *http.Request, res *http.Response) int {
	backConn, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		p.o.Logger.Error("backend switched protocols without a writable body", "request_id", requestIDOf(r))
		http.Error(w, "bad gateway", http.StatusBadGateway)
		return http.StatusBadGateway
	}
	defer backConn.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.o.Logger.Error("cannot hijack client connection for upgrade", "err", err, "request_id", requestIDOf(r))
		http.Error(w, "bad gateway", http.StatusBadGateway)
		return http.StatusBadGateway
	}
	defer conn.Close()

	res.Header["Connection"] = []string{"Upgrade"}
	res.Header["Upgrade"] = []string{upgradeType(r.Header)}
	res.Body = nil // Write must not consume the tunnel
	if err := res.Write(brw); err != nil {
		return http.StatusSwitchingProtocols
	}
	if err := brw.Flush(); err != nil {
		return http.StatusSwitchingProtocols
	}
	// Both copies end when either side closes: closing both connections
	// after the first finishes unblocks the other.
	var once sync.Once
	closeBoth := func() { once.Do(func() { conn.Close(); backConn.Close() }) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(conn, backConn)
		closeBoth()
	}()
	// Bytes the client sent after its request are buffered in brw.
	io.Copy(backConn, brw)
	closeBoth()
	<-done
	return http.StatusSwitchingProtocols
}
