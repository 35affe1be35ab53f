package sessionstore

// This file holds the operations on one session besides Check: Touch
// (renewal) and Inspect (what every node holds). Kill is in kill.go, beside
// its tombstones and kill epoch.

import (
	"bufio"
	"context"
	"errors"
	"time"
)

// Touch renews the data key's TTL to Lifetime on every live node that has it, in
// parallel. It never touches lock keys and never creates a key. It fails only if the
// id is invalid or no node answered.
func (s *Store) Touch(ctx context.Context, id string) error {
	data, _ := s.Keys(id)
	if data == "" {
		return ErrInvalidID
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	exp := s.expiration(int64(s.lifetime / time.Second))
	res := fanout(s, s.liveNodes(), func(n *node) (struct{}, error) { return struct{}{}, s.metaTouch(n, data, exp) })
	for _, o := range res {
		if o.err == nil || errors.Is(o.err, errMiss) {
			s.touches.Add(1)
			return nil
		}
	}
	return ErrStoreDown
}

// Inspect reports what every node (known down ones included) holds for id.
func (s *Store) Inspect(ctx context.Context, id string) ([]NodeEntry, error) {
	data, lock := s.Keys(id)
	if data == "" {
		return nil, ErrInvalidID
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	req := "mg " + data + " s f t\r\nmg " + lock + " v\r\n"
	res := fanout(s, s.all, func(n *node) (entry NodeEntry, err error) {
		// Bounded by Timeout, not ctx: a caller going away must not mark nodes down.
		err = s.metaDo(context.Background(), n, req, func(r *bufio.Reader) error {
			d, err := readMeta(r)
			if err != nil {
				return err
			}
			l, err := readMeta(r)
			if err != nil {
				return err
			}
			entry = NodeEntry{Reachable: true, Present: d.Found, Size: d.Size, Flags: d.Flags,
				Locked: l.Found && s.lockHeld(l.Value)}
			if d.Found {
				entry.TTL = d.TTL
			}
			return nil
		})
		return entry, err
	})
	out := make([]NodeEntry, len(s.nodes))
	for i, o := range res {
		out[i] = o.v
		out[i].Node = s.nodes[i].addr
		if o.err != nil {
			out[i].Error = o.err.Error()
		}
	}
	return out, nil
}

// Stored is a session's stored value as PHP's handler wrote it (Read).
type Stored struct {
	Node  string // the node it was read from
	Value []byte
	Flags uint32 // memcached client flags: 0, or 2 = zlib (pecl memcache)
	TTL   int64  // seconds left, -1 never expires
}

// Read returns id's stored value from the node whose copy has the most time
// left (the one written or renewed last), found=false if no node has it. Like
// Inspect it asks every node, known down ones included: it serves the admin
// API, where an answer matters more than one Timeout. It fails only if the id
// is invalid or no node answered.
func (s *Store) Read(ctx context.Context, id string) (st Stored, found bool, err error) {
	data, _ := s.Keys(id)
	if data == "" {
		return st, false, ErrInvalidID
	}
	if err := ctx.Err(); err != nil {
		return st, false, err
	}
	res := fanout(s, s.all, func(n *node) (metaItem, error) {
		// Bounded by Timeout, not ctx: a caller going away must not mark nodes down.
		return s.metaGet(context.Background(), n, "mg "+data+" v f t\r\n")
	})
	answered := false
	for i, o := range res {
		if o.err != nil {
			continue
		}
		answered = true
		if !o.v.Found || found && !longer(o.v.TTL, st.TTL) {
			continue
		}
		st = Stored{Node: s.nodes[i].addr, Value: o.v.Value, Flags: o.v.Flags, TTL: o.v.TTL}
		found = true
	}
	if !answered {
		return Stored{}, false, ErrStoreDown
	}
	return st, found, nil
}
