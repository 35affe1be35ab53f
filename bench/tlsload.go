//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Why a Go client for new TLS connections: wrk (4.1.0, Debian's) reuses
// its OpenSSL SSL object after SSL_clear, which keeps the session, so with
// Connection: close it resumes every connection but each one's first, over
// TLS 1.2 and 1.3 alike (seen in nginx's $ssl_session_reused); it cannot
// do a full handshake per request. h2load keeps its connections. crypto/tls with and
// without a ClientSessionCache does a full handshake on every connection,
// or resumes on every one but a worker's first, whatever the server. The
// client runs inside the bench process: its CPU time is the bench's own,
// never charged to a proxy.

// tlsDrive is the new-TLS-connection workload: tlsWorkers workers each
// connect, shake hands, send one GET with Connection: close, read the
// answer and close, until d has passed. resume gives each worker its own
// session cache (a ticket is never shared between workers).
func tlsDrive(resume bool) func(context.Context, *bench, *contender, time.Duration) (wrkResult, time.Duration, error) {
	return func(ctx context.Context, b *bench, c *contender, d time.Duration) (wrkResult, time.Duration, error) {
		cpu0, err := selfTicks()
		if err != nil {
			return wrkResult{}, 0, err
		}
		r, err := runTLSLoad(ctx, c.tlsAddr, tlsWorkers, d, resume)
		cpu1, err2 := selfTicks()
		return r, b.ticks(cpu1 - cpu0), errors.Join(err, err2)
	}
}

// tlsWorker is one worker's tally.
type tlsWorker struct {
	lat                         []time.Duration
	non2xx, sockErr, resumed, n int64
	firstErr                    error
	tls                         string
}

// runTLSLoad is the Go TLS client's run against addr.
func runTLSLoad(ctx context.Context, addr string, workers int, d time.Duration, resume bool) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	// Past the deadline a dial fails at once, before ctx.Err() is set:
	// the clock, not ctx.Err(), says whether a failure ended the run.
	end, _ := ctx.Deadline()
	over := func() bool { return ctx.Err() != nil || !time.Now().Before(end) }
	ws := make([]tlsWorker, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range ws {
		w := &ws[i]
		cfg := &tls.Config{
			// The client checks no chain (the server still signs the
			// handshake): verifying costs the client, not the proxy.
			InsecureSkipVerify: true,
			ServerName:         "localhost",
			NextProtos:         []string{"http/1.1"},
			// X25519 only, as wrk's and h2load's OpenSSL 3.0 offer: Go's
			// default also offers X25519MLKEM768, which the Go servers
			// (sessiongate, not Caddy 2.6's Go) would pick and OpenSSL's
			// could not, an ML-KEM encapsulation more per handshake.
			CurvePreferences: []tls.CurveID{tls.X25519},
		}
		if resume {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		}
		wg.Go(func() {
			for !over() {
				t0 := time.Now()
				status, state, err := tlsRequest(ctx, addr, cfg)
				switch {
				case over():
					return // cut off by the end of the run: not counted
				case err != nil:
					w.sockErr++
					if w.firstErr == nil {
						w.firstErr = err
					}
					continue
				case status != http.StatusOK:
					w.non2xx++
				}
				w.n++
				w.lat = append(w.lat, time.Since(t0))
				if state.DidResume {
					w.resumed++
				}
				w.tls = tls.VersionName(state.Version) + " " + tls.CipherSuiteName(state.CipherSuite) + " " + state.CurveID.String()
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	var r wrkResult
	var lat []time.Duration
	for _, w := range ws {
		r.Requests += w.n
		r.Non2xx += w.non2xx
		r.SocketErr += w.sockErr
		r.Resumed += w.resumed
		lat = append(lat, w.lat...)
		if w.firstErr != nil && r.FirstErr == "" {
			r.FirstErr = w.firstErr.Error()
		}
		if w.tls != "" {
			r.TLS = w.tls
		}
	}
	if r.Requests == 0 {
		return r, fmt.Errorf("TLS client: no request completed against %s (%d errors)", addr, r.SocketErr)
	}
	slices.Sort(lat)
	r.P50, r.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	r.RPS = float64(r.Requests) / wall.Seconds()
	r.TLSClient = true
	return r, nil
}

// tlsRequest makes one connection, one request.
func tlsRequest(ctx context.Context, addr string, cfg *tls.Config) (int, tls.ConnectionState, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, tls.ConnectionState{}, err
	}
	defer nc.Close()
	conn := nc.(*tls.Conn)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, conn.ConnectionState(), err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, conn.ConnectionState(), err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, conn.ConnectionState(), err
}

// h2Drive is the HTTP/2 workload: h2load with h2Conns clients of h2Streams
// concurrent streams each, one thread, for d.
func h2Drive(ctx context.Context, _ *bench, c *contender, d time.Duration) (wrkResult, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "h2load", h2Args("https://"+c.tlsAddr+"/", d)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, 0, fmt.Errorf("h2load: %v\n%s", err, out)
	}
	used := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	r, err := parseH2load(string(out))
	if err != nil {
		return r, used, fmt.Errorf("%w in:\n%s", err, out)
	}
	return r, used, nil
}

func h2Args(url string, d time.Duration) []string {
	return []string{"-t1", "-c" + strconv.Itoa(h2Conns), "-m" + strconv.Itoa(h2Streams),
		"-D" + strconv.Itoa(int(d/time.Second)), url}
}

// parseH2load reads h2load's (nghttp2 1.52) report. It has no percentiles
// of request time, only min, max, mean and sd: Mean is set, P50 and P99
// are not.
func parseH2load(out string) (wrkResult, error) {
	r := wrkResult{H2load: true}
	var haveFin, haveReq, haveTime bool
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		f := strings.Fields(strings.NewReplacer(",", " ").Replace(line))
		var err error
		switch {
		case strings.HasPrefix(line, "finished in ") && len(f) >= 5:
			// finished in 3.00s, 41234.33 req/s, 1.47MB/s
			r.RPS, err = strconv.ParseFloat(f[3], 64)
			haveFin = true
		case strings.HasPrefix(line, "requests: ") && len(f) >= 15:
			// requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
			var v [7]int64
			for i := range v {
				v[i], err = strconv.ParseInt(f[1+2*i], 10, 64)
				if err != nil {
					break
				}
			}
			r.Requests, r.SocketErr = v[2], v[4] // failed: errored and timed out ones too
			haveReq = true
		case strings.HasPrefix(line, "status codes: ") && len(f) >= 10:
			// status codes: N 2xx, N 3xx, N 4xx, N 5xx
			for i := 4; i <= 8; i += 2 {
				n, e := strconv.ParseInt(f[i], 10, 64)
				r.Non2xx += n
				err = errors.Join(err, e)
			}
		case strings.HasPrefix(line, "TLS Protocol: "):
			r.TLS = strings.TrimPrefix(line, "TLS Protocol: ") + r.TLS
		case strings.HasPrefix(line, "Cipher: "):
			r.TLS += " " + strings.TrimPrefix(line, "Cipher: ")
		case strings.HasPrefix(line, "time for request:") && len(f) >= 6:
			r.Mean, err = wrkDuration(f[5])
			haveTime = true
		}
		if err != nil {
			return r, fmt.Errorf("h2load output: line %q: %w", line, err)
		}
	}
	if !haveFin || !haveReq || !haveTime {
		return r, errors.New("h2load output: no finished, requests or time for request lines")
	}
	return r, nil
}
