package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"github.com/sessiongate/sessiongate/acme"
	"github.com/sessiongate/sessiongate/admin"
)

// runServe is `sessiongate run`: it serves until SIGTERM/SIGINT, then stops
// accepting, lets in-flight requests finish within the grace period and
// returns 0. SIGHUP reloads the configuration; SIGUSR1 reopens the access
// log file.
func runServe(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "configuration file")
	format := fs.String("log-format", "text", "log format: text or json")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, err := newLogger(stderr, *format, *level)
	if err != nil {
		fmt.Fprintln(stderr, "sessiongate:", err)
		return 2
	}
	if _, set := os.LookupEnv("GOGC"); !set {
		ballast := make([]byte, heapBallast)
		defer runtime.KeepAlive(ballast)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP, sigReopen)
	defer signal.Stop(hup)

	if err := serve(ctx, *path, log, hup, nil, nil); err != nil {
		var pe *problemsError
		if errors.As(err, &pe) {
			fmt.Fprintln(stderr, pe.text)
		} else {
			log.Error("sessiongate stopped", "err", err)
		}
		return 1
	}
	return 0
}

// heapBallast is a heap floor. The collector starts a cycle when the heap
// has grown by its live size (GOGC=100), and a proxy's live heap is small:
// about 1 MB at 7 000 requests/s, so it collected 7 times a second, and
// each cycle costs the requests in flight — mark assists, and goroutine
// stacks that the cycle shrinks and the next request grows again. A
// never-touched allocation counts as live without becoming resident
// (fresh pages from the OS are not zeroed), so collections come every
// ~2 × heapBallast of allocation instead, while a large live heap (10 000
// idle connections) still collects at about twice its size. GOGC set in
// the environment turns it off: the operator tunes the collector then.
// (go_memstats_heap_alloc_bytes and similar include it.)
const heapBallast = 16 << 20

// problemsError carries config problems to print verbatim.
type problemsError struct{ text string }

func (e *problemsError) Error() string { return e.text }

// serve runs sessiongate from the config at path until ctx ends. Each value
// on reload triggers a reload, except SIGUSR1, which reopens the access log.
// ready, if not nil, receives the bound addresses once listening (tests use
// it with port 0).
// lookup resolves DNS-named backends and memcached servers (nil: the
// system resolver).
func serve(ctx context.Context, path string, log *slog.Logger, reload <-chan os.Signal, ready chan<- addrs, lookup lookupFunc) error {
	a, err := newApp(path, log, lookup)
	if err != nil {
		return err
	}
	cfg := a.cfg.Load()

	ln, err := listen(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if cfg.Server.MaxConnections > 0 {
		ln = limitListener(ln, cfg.Server.MaxConnections, cfg.TLS == nil)
	}
	if pp := cfg.ProxyProtocol; pp.Enabled {
		// Under the max_connections limit, so that connections whose
		// header is still awaited count too.
		ln = newProxyListener(ln, prefixes(pp.Trusted), pp.HeaderTimeout, a.refuse, log.Debug)
	}
	if cfg.Limits.ConnectionsPerClient > 0 {
		// Over the PROXY protocol, so that it counts the real clients.
		ln = &connLimitListener{Listener: ln, limits: a.limits, trusted: prefixes(cfg.TrustedProxies), refused: a.refuse}
	}
	listeners := []net.Listener{ln}
	fail := func(err error) error {
		for _, l := range listeners {
			l.Close()
		}
		return err
	}
	var httpLn net.Listener // tls.http_listen
	if cfg.TLS != nil && cfg.TLS.HTTPListen != "" {
		if httpLn, err = listen(cfg.TLS.HTTPListen); err != nil {
			return fail(fmt.Errorf("tls.http_listen %s: %w", cfg.TLS.HTTPListen, err))
		}
		listeners = append(listeners, httpLn)
	}
	var adminLn net.Listener
	if cfg.Admin.Listen != "" {
		if adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			return fail(fmt.Errorf("admin listen %s: %w", cfg.Admin.Listen, err))
		}
		listeners = append(listeners, adminLn)
	}
	var certs *acme.Manager
	if cfg.TLS != nil && cfg.TLS.ACME != nil {
		if certs, err = newCertManager(cfg.TLS.ACME, ln, httpLn, log); err != nil {
			return fail(fmt.Errorf("tls.acme: %w", err))
		}
	}
	if cfg.TLS != nil {
		a.served.Store(newServedCerts(cfg.TLS, certs))
	}

	bg, cancelBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	a.start(bg, &wg)

	front := a.frontServer(certs)
	errc := make(chan error, 3)
	go func() { errc <- front.Serve(ln) }()
	var adminSrv, httpSrv *http.Server
	if adminLn != nil {
		adminSrv = admin.NewServer(a.adminHandler(), admin.DefaultLimits(), log)
		go func() { errc <- adminSrv.Serve(adminLn) }()
	}
	if httpLn != nil {
		httpSrv = a.httpServer(certs, ln.Addr())
		go func() { errc <- httpSrv.Serve(httpLn) }()
	}
	if certs != nil {
		// After the listeners: they answer the challenges. Stops when bg
		// ends, after the front server's shutdown.
		wg.Go(func() { certs.Run(bg) })
	}
	log.Info("sessiongate listening", "listen", ln.Addr().String(), "admin", addrOf(adminLn),
		"http", addrOf(httpLn), "acme", certs != nil,
		"backends", len(cfg.Backends), "sessions", cfg.Session != nil, "version", buildVersion())
	if ready != nil {
		ready <- addrs{front: ln.Addr().String(), admin: addrOf(adminLn), http: addrOf(httpLn)}
	}

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case sig := <-reload:
			if sig == sigReopen {
				a.reopenAccessLog()
				continue
			}
			if err := a.reload(); err != nil {
				log.Error("reload refused; the running configuration stays", "err", err)
			}
		case err := <-errc:
			if !errors.Is(err, http.ErrServerClosed) {
				runErr = err
				break loop
			}
		}
	}

	grace := a.cfg.Load().Server.ShutdownGrace
	log.Info("shutting down: no new connections, finishing in-flight requests", "grace", grace)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	// The servers drain at once under the same deadline: the admin and
	// HTTP servers get the whole grace too, not what the front server left.
	var down sync.WaitGroup
	for _, srv := range []*http.Server{adminSrv, httpSrv} {
		if srv != nil {
			down.Go(func() {
				if err := srv.Shutdown(sctx); err != nil {
					srv.Close()
				}
			})
		}
	}
	if err := front.Shutdown(sctx); err != nil {
		log.Warn("grace period over, closing remaining connections", "err", err)
		front.Close()
	}
	down.Wait()
	cancelBG()
	wg.Wait()
	a.close()
	log.Info("sessiongate stopped")
	return runErr
}

// addrs are the bound listener addresses (http: tls.http_listen).
type addrs struct{ front, admin, http string }

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// tlsConfig is the client TLS setup: HTTP/2 and HTTP/1.1 over TLS 1.2+.
func tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
}
