package sessionstore

// This file lists and searches the sessions in the pool (List): a metadump
// of every node selects a page of ids, in id order, and each is then
// inspected on every node.

import (
	"context"
	"errors"
	"slices"
	"sort"
	"time"
)

// MaxListLimit caps ListQuery.Limit.
const MaxListLimit = 1000

// ErrNoUserLookup is List's answer to a User query when Options.User is nil.
var ErrNoUserLookup = errors.New("sessionstore: no user lookup configured (session.user_key)")

// ListQuery selects sessions for List.
type ListQuery struct {
	ActiveWithin time.Duration // last accessed within this on some node; 0 = any
	MinBytes     int           // a copy of at least this many value bytes
	User         string        // Options.User of the value on some node is this; "" = any
	Limit        int           // at most this many (1..MaxListLimit; 0 = MaxListLimit)
	After        string        // only ids sorting after this one (the previous page's last)
}

// Listed is one session List found, as every node holds it now.
type Listed struct {
	ID         string
	Bytes      int       // the largest copy's value bytes
	TTL        int64     // the longest copy's seconds left, -1 never expires
	LastAccess time.Time // latest on any node, from the metadump
	Nodes      []string  // nodes holding a copy
	Locked     bool
}

// List returns sessions matching q in id order, at most q.Limit of them,
// and whether more may follow (call again with After set to the last id).
// Memory is bounded by the limit, not the pool: each node's metadump is
// streamed and only the page's candidates are kept. Ids deleted meanwhile
// are left out; ids written meanwhile may or may not be listed.
func (s *Store) List(ctx context.Context, q ListQuery) (page []Listed, more bool, err error) {
	if q.User != "" && s.userOf == nil {
		return nil, false, ErrNoUserLookup
	}
	if q.Limit <= 0 || q.Limit > MaxListLimit {
		q.Limit = MaxListLimit
	}
	cutoff := int64(0)
	if q.ActiveWithin > 0 {
		cutoff = s.now().Add(-q.ActiveWithin).Unix()
	}
	// cand holds the smallest ids after q.After that match, sorted, at most
	// Limit+1 (one more tells whether a next page exists). Once full, its
	// largest only decreases, so an id left out or dropped is never needed
	// again, whichever node it is seen on next.
	var cand []string
	la := make(map[string]int64)
	ok := 0
	for _, n := range s.nodes {
		err := s.metadump(ctx, n, func(it dumpItem) error {
			id := s.sessionID(it.Key)
			if id == nil || string(id) <= q.After || it.Size < q.MinBytes || it.LA < cutoff {
				return nil
			}
			at, found := slices.BinarySearch(cand, string(id))
			if found {
				la[cand[at]] = max(la[cand[at]], it.LA)
				return nil
			}
			if len(cand) > q.Limit && at == len(cand) {
				return nil
			}
			if q.User != "" && !s.userMatches(ctx, n, it.Key, q.User) {
				return nil
			}
			ids := string(id)
			cand = slices.Insert(cand, at, ids)
			la[ids] = it.LA
			if len(cand) > q.Limit+1 {
				delete(la, cand[len(cand)-1])
				cand = cand[:len(cand)-1]
			}
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			s.log.Warn("session list: node not listed", "node", n.addr, "error", err)
			continue
		}
		ok++
	}
	if ok == 0 {
		return nil, false, ErrStoreDown
	}
	if more = len(cand) > q.Limit; more {
		cand = cand[:q.Limit]
	}
	page = make([]Listed, 0, len(cand))
	for _, id := range cand {
		entries, err := s.Inspect(ctx, id)
		if err != nil {
			return nil, false, err
		}
		l := Listed{ID: id, LastAccess: time.Unix(la[id], 0)}
		for _, e := range entries {
			l.Locked = l.Locked || e.Locked
			if !e.Present {
				continue
			}
			l.Nodes = append(l.Nodes, e.Node)
			l.Bytes = max(l.Bytes, e.Size)
			if len(l.Nodes) == 1 || longer(e.TTL, l.TTL) {
				l.TTL = e.TTL
			}
		}
		if len(l.Nodes) > 0 { // deleted since the dump otherwise
			page = append(page, l)
		}
	}
	sort.Slice(page, func(i, j int) bool { return page[i].ID < page[j].ID })
	return page, more, nil
}

// userMatches reads key's value on n and reports whether Options.User
// finds user in it. A value that cannot be read or decoded does not match.
func (s *Store) userMatches(ctx context.Context, n *node, key []byte, user string) bool {
	it, err := s.metaGet(ctx, n, "mg "+string(key)+" v f\r\n")
	if err != nil || !it.Found {
		return false
	}
	u, ok := s.userOf(it.Value, it.Flags)
	return ok && u == user
}
