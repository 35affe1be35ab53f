package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/sessiongate/sessiongate/config"
)

// reload re-reads the config file and applies it without dropping a
// request: backends and policy change in place (surviving backends keep
// their counters and health), and a new proxy — with a new session layer
// when the session or memcached settings changed — replaces the old one
// atomically. Requests already running finish on what they started with.
// A file that fails validation is refused and the running config stays.
func (a *app) reload() error {
	file, err := config.Load(a.path)
	if err != nil {
		var ps *config.Problems
		if errors.As(err, &ps) {
			return fmt.Errorf("%s has problems:\n%s", a.path, ps.Error())
		}
		return err
	}
	next, err := resolve(context.Background(), file, a.lookup)
	if err != nil {
		return err
	}
	return a.apply(file, next)
}

// apply makes next (an effective config, DNS names resolved) the running
// one; file is the config as written, kept for later re-resolution.
func (a *app) apply(file, next *config.Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.cfg.Load()
	for _, key := range restartOnly(cur, next) {
		a.log.Warn("this setting changes only on restart; the running value stays", "key", key)
	}

	backends, err := buildBackends(next)
	if err != nil {
		return err
	}
	if err := a.pool.Update(next.Balancer.Policy, backends); err != nil {
		return err
	}
	a.pool.SetSlowStart(next.Health.SlowStart)
	a.checker.Update(healthOptions(next), targets(a.pool))

	if cur.Upstream != next.Upstream {
		old := a.transport
		a.transport = newTransport(next, cur.Server.Sockio)
		// In-flight requests keep their connections; idle ones are dropped
		// once the new proxy is in place.
		defer old.CloseIdleConnections()
	}

	if !reflect.DeepEqual(cur.Session, next.Session) || !reflect.DeepEqual(cur.Memcached, next.Memcached) {
		var sp *sessionPart
		if next.Session != nil {
			if sp, err = newSessionPart(next, cur.Server.Sockio, a.log, a.metrics); err != nil {
				return err
			}
			sp.start(a.bg, a.wg)
		}
		if old := a.sess; old != nil {
			// Requests in flight may still be using the old store: the
			// app's reference goes once the new proxy is in place, and the
			// last request's release stops it.
			defer old.release()
		}
		a.sess = sp
	}

	a.file.Store(file)
	a.cfg.Store(next)
	a.handler.Store(&generation{proxy: a.buildProxy(next), sess: a.sess})
	a.buildAdmin(next, a.sess != nil) // a changed token applies at once
	a.log.Info("configuration reloaded", "file", a.path, "backends", len(next.Backends),
		"policy", next.Balancer.Policy, "sessions", next.Session != nil)
	return nil
}

// restartOnly lists changed settings that a reload cannot apply because
// they belong to listeners already open.
func restartOnly(cur, next *config.Config) []string {
	var keys []string
	if cur.Listen != next.Listen {
		keys = append(keys, "listen")
	}
	if !reflect.DeepEqual(cur.TLS, next.TLS) {
		keys = append(keys, "tls")
	}
	if cur.Server != next.Server {
		keys = append(keys, "server")
	}
	if cur.Admin.Listen != next.Admin.Listen {
		keys = append(keys, "admin.listen")
	}
	if cur.AccessLog != next.AccessLog {
		keys = append(keys, "access_log")
	}
	if !reflect.DeepEqual(cur.ProxyProtocol, next.ProxyProtocol) {
		keys = append(keys, "proxy_protocol")
	}
	if !reflect.DeepEqual(cur.Limits, next.Limits) {
		keys = append(keys, "limits")
	}
	return keys
}
