package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/sessiongate/sessiongate/config"
)

// lookupFunc resolves a host name to its addresses; tests supply their own.
type lookupFunc func(ctx context.Context, host string) ([]string, error)

// resolve returns a copy of cfg in which backends and memcached servers
// given by DNS name are expanded into one explicit entry per address, in a
// stable order, so that the rest of sessiongate only ever sees addresses.
// A DNS backend "lamp" with dns lamp.svc:80 resolving to 10.0.0.5 becomes
// backend "lamp-10.0.0.5" with url http://10.0.0.5:80.
func resolve(ctx context.Context, cfg *config.Config, lookup lookupFunc) (*config.Config, error) {
	if !usesDNS(cfg) {
		return cfg, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	eff := *cfg
	eff.Backends = nil
	for _, b := range cfg.Backends {
		if b.DNS == "" {
			eff.Backends = append(eff.Backends, b)
			continue
		}
		ips, port, err := lookupAll(ctx, lookup, b.DNS)
		if err != nil {
			return nil, fmt.Errorf("backend %s: %w", b.Name, err)
		}
		scheme := b.Scheme
		if scheme == "" {
			scheme = "http"
		}
		for _, ip := range ips {
			eff.Backends = append(eff.Backends, config.Backend{
				Name:   b.Name + "-" + ip,
				URL:    scheme + "://" + net.JoinHostPort(ip, port),
				Weight: b.Weight,
			})
		}
	}
	// memcached servers written as host names are resolved too: gomemcache
	// resolves a name once, so a memcached pod that comes back on a new
	// address (Kubernetes) would otherwise stay unreachable, and unrepaired,
	// until sessiongate restarts. Re-resolving turns that into a change of
	// the server set, applied like a reload.
	eff.Memcached.Servers = nil
	for _, srv := range cfg.Memcached.Servers {
		if !isHostName(srv) {
			eff.Memcached.Servers = appendNew(eff.Memcached.Servers, srv)
			continue
		}
		ips, port, err := lookupAll(ctx, lookup, srv)
		if err != nil {
			return nil, fmt.Errorf("memcached server %s: %w", srv, err)
		}
		for _, ip := range ips {
			eff.Memcached.Servers = appendNew(eff.Memcached.Servers, net.JoinHostPort(ip, port))
		}
	}
	if d := cfg.Memcached.DNS; d != "" {
		ips, port, err := lookupAll(ctx, lookup, d)
		if err != nil {
			return nil, fmt.Errorf("memcached: %w", err)
		}
		for _, ip := range ips {
			eff.Memcached.Servers = appendNew(eff.Memcached.Servers, net.JoinHostPort(ip, port))
		}
	}
	return &eff, nil
}

func usesDNS(cfg *config.Config) bool {
	if cfg.Memcached.DNS != "" || slices.ContainsFunc(cfg.Memcached.Servers, isHostName) {
		return true
	}
	return slices.ContainsFunc(cfg.Backends, func(b config.Backend) bool { return b.DNS != "" })
}

// isHostName reports whether hostport names its host rather than giving an
// IP address.
func isHostName(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	return err == nil && net.ParseIP(host) == nil
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// lookupAll resolves hostport's host to a sorted, de-duplicated address list.
func lookupAll(ctx context.Context, lookup lookupFunc, hostport string) ([]string, string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, "", err
	}
	addrs, err := lookup(ctx, host)
	if err != nil {
		return nil, "", fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, "", fmt.Errorf("resolve %s: no addresses", host)
	}
	slices.SortFunc(addrs, strings.Compare)
	return slices.Compact(addrs), port, nil
}

// discover re-resolves DNS names every discovery.interval and applies a
// changed set like a reload. A failed lookup keeps the current set.
func (a *app) discover(ctx context.Context) {
	t := time.NewTicker(a.file.Load().Discovery.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		file := a.file.Load()
		t.Reset(file.Discovery.Interval)
		if !usesDNS(file) {
			continue
		}
		eff, err := resolve(ctx, file, a.lookup)
		if err != nil {
			a.log.Warn("DNS discovery failed; keeping the current backends and memcached nodes", "err", err)
			continue
		}
		if sameTargets(eff, a.cfg.Load()) {
			continue
		}
		a.log.Info("DNS discovery found a changed set; applying it")
		if err := a.apply(file, eff); err != nil {
			a.log.Error("applying the discovered set failed; the running set stays", "err", err)
		}
	}
}

// sameTargets reports whether two effective configs name the same backends
// and memcached servers.
func sameTargets(a, b *config.Config) bool {
	return slices.Equal(a.Backends, b.Backends) && slices.Equal(a.Memcached.Servers, b.Memcached.Servers)
}
