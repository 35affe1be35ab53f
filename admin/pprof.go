package admin

import (
	"fmt"
	"net/http"
	"runtime/pprof"
	"strconv"
	"time"
)

// maxProfile bounds a CPU profile request.
const maxProfile = 60 * time.Second

// cpuProfile answers GET /debug/pprof/profile?seconds=N (default 10) with a
// CPU profile for `go tool pprof`. It is behind the token: a profile shows
// code paths and costs CPU while it runs.
func (h *handler) cpuProfile(w http.ResponseWriter, r *http.Request) {
	secs := 10
	if s := r.URL.Query().Get("seconds"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || time.Duration(n)*time.Second > maxProfile {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("seconds must be 1-%d", int(maxProfile/time.Second)))
			return
		}
		secs = n
	}
	// The profile outlasts the listener's read and write timeouts: move
	// both deadlines past its end (a passed read deadline would also
	// cancel the request's context and cut the profile short).
	rc := http.NewResponseController(w)
	end := time.Now().Add(time.Duration(secs)*time.Second + 10*time.Second)
	rc.SetReadDeadline(end)
	rc.SetWriteDeadline(end)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="cpu.pprof"`)
	if err := pprof.StartCPUProfile(w); err != nil {
		writeError(w, http.StatusConflict, "a CPU profile is already running")
		return
	}
	t := time.NewTimer(time.Duration(secs) * time.Second)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
	pprof.StopCPUProfile()
}

// namedProfile answers GET /debug/pprof/{name} for heap, allocs, goroutine,
// block, mutex and threadcreate.
func (h *handler) namedProfile(w http.ResponseWriter, r *http.Request) {
	p := pprof.Lookup(r.PathValue("name"))
	if p == nil {
		writeError(w, http.StatusNotFound, "no such profile")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.pprof"`, p.Name()))
	p.WriteTo(w, 0)
}
