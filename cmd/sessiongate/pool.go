package main

import (
	"context"
	"encoding/base64"
	"errors"

	"github.com/sessiongate/sessiongate/admin"
	"github.com/sessiongate/sessiongate/metrics"
	"github.com/sessiongate/sessiongate/sessionstore"
	"github.com/sessiongate/sessiongate/sessionstore/phpsession"
)

// userOf finds the user id at key in a stored session value decoded with
// serializer; nil without a key (user searches are then refused).
func userOf(serializer, key string) func([]byte, uint32) (string, bool) {
	if key == "" {
		return nil
	}
	return func(value []byte, flags uint32) (string, bool) {
		data, err := phpsession.Decode(value, flags, serializer)
		if err != nil {
			return "", false
		}
		return phpsession.Field(data, key)
	}
}

// poolAdmin adapts the current store to the admin pool endpoints.
type poolAdmin struct{ a *app }

func (p poolAdmin) Scan(ctx context.Context) (*admin.PoolView, error) {
	sp := p.a.session()
	if sp == nil {
		return nil, errNoSessions
	}
	inv, err := sp.store.Scan(ctx)
	if err != nil {
		return nil, err
	}
	return poolView(inv, sp.store.Resync()), nil
}

// The cursor is the last id of the page, base64url: opaque to clients, so
// that its form may change.
func (p poolAdmin) List(ctx context.Context, q admin.SessionQuery) (admin.SessionPage, error) {
	sp := p.a.session()
	if sp == nil {
		return admin.SessionPage{}, errNoSessions
	}
	after, err := base64.RawURLEncoding.DecodeString(q.Cursor)
	if err != nil {
		return admin.SessionPage{}, errors.New("cursor: not one this API gave")
	}
	list, more, err := sp.store.List(ctx, sessionstore.ListQuery{ActiveWithin: q.ActiveWithin, MinBytes: q.MinBytes,
		User: q.User, Limit: q.Limit, After: string(after)})
	if errors.Is(err, sessionstore.ErrNoUserLookup) {
		return admin.SessionPage{}, admin.ErrNoUserKey
	}
	if err != nil {
		return admin.SessionPage{}, err
	}
	page := admin.SessionPage{Sessions: make([]admin.ListedSession, len(list))}
	for i, l := range list {
		page.Sessions[i] = admin.ListedSession{ID: l.ID, Bytes: l.Bytes, TTL: l.TTL, LastAccess: l.LastAccess,
			Nodes: l.Nodes, Locked: l.Locked}
	}
	if more && len(list) > 0 {
		page.Next = base64.RawURLEncoding.EncodeToString([]byte(list[len(list)-1].ID))
	}
	return page, nil
}

// maxLogoutPages bounds the pages of one user's logout.
const maxLogoutPages = 1000

// Logout kills user's sessions (every session for user ""), in batches
// (sessionstore.KillMany), each seen by every instance.
func (p poolAdmin) Logout(ctx context.Context, user string, each func(id string)) (int, error) {
	sp := p.a.session()
	if sp == nil {
		return 0, errNoSessions
	}
	if user == "" {
		return sp.store.KillAll(ctx, each)
	}
	killed := 0
	q := sessionstore.ListQuery{User: user, Limit: sessionstore.MaxListLimit}
	for range maxLogoutPages {
		list, more, err := sp.store.List(ctx, q)
		if errors.Is(err, sessionstore.ErrNoUserLookup) {
			return killed, admin.ErrNoUserKey
		}
		if err != nil {
			return killed, err
		}
		ids := make([]string, len(list))
		for i, l := range list {
			ids[i] = l.ID
		}
		n, err := sp.store.KillMany(ctx, ids)
		for _, id := range ids[:n] {
			each(id)
		}
		if killed += n; err != nil || !more || len(list) == 0 {
			return killed, err
		}
		q.After = list[len(list)-1].ID
	}
	return killed, nil
}

// Pool implements admin.PoolSource: nil until a scan finished.
func (s adminSource) Pool() *admin.PoolView {
	sp := s.a.session()
	if sp == nil {
		return nil
	}
	inv, ok := sp.store.Inventory()
	if !ok {
		return nil
	}
	return poolView(inv, sp.store.Resync())
}

func poolView(inv sessionstore.Inventory, rs sessionstore.ResyncStatus) *admin.PoolView {
	v := &admin.PoolView{Sessions: inv.Sessions, WithData: inv.WithData, Incomplete: inv.Incomplete,
		Active:    map[string]int64{"1m": inv.Active1m, "5m": inv.Active5m, "15m": inv.Active15m},
		PerNode:   make(map[string]admin.PoolNodeView, len(inv.Nodes)),
		ScannedAt: inv.ScannedAt, ScanSecs: inv.Duration.Seconds(), Sampled: inv.Sampled,
		Largest: []admin.LargestView{}}
	for _, n := range inv.Nodes {
		v.PerNode[n.Addr] = admin.PoolNodeView{Sessions: n.Sessions, WithData: n.WithData, Locks: n.Locks,
			Other: n.Other, Error: n.Error}
	}
	for i, c := range inv.Sizes {
		le := -1
		if i < len(sessionstore.SizeBounds) {
			le = sessionstore.SizeBounds[i]
		}
		v.Sizes = append(v.Sizes, admin.SizeBucket{LE: le, Count: c})
	}
	for _, l := range inv.Largest {
		v.Largest = append(v.Largest, admin.LargestView{Session: sessionstore.ShortID(l.ID), Bytes: l.Bytes})
	}
	if !rs.Started.IsZero() {
		v.Resync = &admin.ResyncView{Running: rs.Running, Node: rs.Node, Done: rs.Done, Total: rs.Total,
			Copied: rs.Copied, Rate: rs.Rate, Started: rs.Started, Ended: rs.Ended, Error: rs.Error}
	}
	return v
}

// Pool implements metrics.PoolSource.
func (s metricsSource) Pool() (metrics.PoolSample, bool) {
	sp := s.a.session()
	if sp == nil {
		return metrics.PoolSample{}, false
	}
	inv, ok := sp.store.Inventory()
	rs := sp.store.Resync()
	ps := metrics.PoolSample{Scanned: ok, Sessions: inv.Sessions, WithData: inv.WithData, Incomplete: inv.Incomplete,
		Active:      map[string]int64{"1m": inv.Active1m, "5m": inv.Active5m, "15m": inv.Active15m},
		ScanSeconds: inv.Duration.Seconds(), ScannedAt: inv.ScannedAt, PerNode: map[string]int64{},
		ResyncDone: rs.Done, ResyncTotal: rs.Total, ResyncCopied: rs.Copied, ResyncRunning: rs.Running}
	for _, n := range inv.Nodes {
		if n.Error == "" {
			ps.PerNode[n.Addr] = n.Sessions
		}
	}
	ps.SizeBounds = make([]float64, len(sessionstore.SizeBounds))
	for i, b := range sessionstore.SizeBounds {
		ps.SizeBounds[i] = float64(b)
	}
	ps.SizeCounts = inv.Sizes[:]
	return ps, true
}
