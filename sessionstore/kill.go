package sessionstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A kill must hold on every instance sharing the pool, and instances know
// nothing of each other, so the pool carries it, in two keys:
//
//   - a tombstone per killed id, <prefix>kill.<id>, set on every node for the
//     session lifetime. Lookups fetch it in the round trip they already make (no
//     extra one): an id with a tombstone is Killed, whatever else the
//     nodes hold, and data PHP re-created under it is deleted.
//   - one kill epoch key, <prefix>sg.kill-epoch, set to a new random value on
//     every node by every kill. Each instance reads its CAS on every node every
//     killPoll (one small meta command per node) and, when it changes, bumps the
//     store epoch: every cached verification is void, so the next Check of
//     any id looks it up and finds the tombstone.
//
// Neither key can be a key of PHP's: session ids have no '.', so no data key
// (<prefix><id>) contains one after the prefix, and the lock keys are
// <prefix><id>.lock and <prefix>lock.<id>. "kill." is as long as the lock
// suffixes, so an id usable as a key is usable for its tombstone.
const (
	tombInfix = "kill."
	epochName = "sg.kill-epoch"
	// killPoll is how often every instance reads the kill epoch on each node,
	// and the bound on each read. Kill waits two of them (see killSettle).
	killPoll = 25 * time.Millisecond
	// killSettle is how long Kill waits after writing the epoch so that every
	// instance has read it: a poll starts at most killPoll after the write and
	// ends (or gives up) killPoll later.
	killSettle = 2*killPoll + 5*time.Millisecond
)

// tombKey is id's tombstone key (id must be usable).
func (s *Store) tombKey(id string) string { return s.prefix + tombInfix + id }

// epochKey is the pool-wide kill epoch key.
func (s *Store) epochKey() string { return s.prefix + epochName }

// watchKills reads the kill epoch on n every killPoll until ctx ends, and
// bumps the store epoch when it changed. A node that does not answer is
// skipped: its liveness is the watcher's business, and a kill reaches every
// instance through the nodes that do answer.
func (s *Store) watchKills(ctx context.Context, n *node) {
	t := time.NewTicker(killPoll)
	defer t.Stop()
	// me (meta debug) rather than a get: it reports the key's CAS, which
	// every set changes, and does not count as a get in the node's stats.
	req := "me " + s.epochKey() + "\r\n"
	var last uint64
	seen := false
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		pctx, cancel := context.WithTimeout(ctx, killPoll)
		var cas uint64
		err := s.metaDo(pctx, n, req, func(r *bufio.Reader) (err error) {
			cas, err = readDebugCAS(r)
			return err
		})
		cancel()
		if err != nil {
			continue
		}
		if seen && cas != last {
			// Also when the key vanished (node restarted): a spare bump.
			s.epoch.Add(1)
		}
		last, seen = cas, true
		// Verifications are cached only from now on: one made before any
		// reader had its baseline would outlive a kill in between.
		s.killWatched.Store(true)
	}
}

// readDebugCAS parses a meta debug answer: EN (0) or "ME <key> ... cas=<n> ...".
func readDebugCAS(r *bufio.Reader) (uint64, error) {
	line, err := readLine(r)
	if err != nil || line == "EN" {
		return 0, err
	}
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "cas="); ok {
			cas, err := strconv.ParseUint(v, 10, 64)
			if err == nil {
				return cas, nil
			}
		}
	}
	return 0, fmt.Errorf("%w: %q", errProtocol, line)
}

// killedLookup handles a lookup that found id's tombstone: data PHP stored
// under the id since the kill (a request forwarded before the kill reached
// every instance, finishing late) is deleted, and the verdict is Killed.
func (s *Store) killedLookup(id, data string, got []outcome[[2]*metaItem]) Result {
	var again []int
	for i, g := range got {
		if g.err == nil && g.v[0] != nil {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		fanout(s, again, func(n *node) (struct{}, error) { return struct{}{}, s.metaDelete(n, data) })
		s.log.Info("killed session written again; deleted", "session", ShortID(id), "nodes", len(again))
	}
	return Result{Verdict: Killed}
}

// Kill ends a session on every instance sharing the pool: it sets id's
// tombstone on every node (known down ones included), then a new kill epoch,
// waits until every instance has read the epoch (killSettle), and deletes
// the data and lock key on every node. When it returns, no instance forwards
// the id from its verification cache, and every lookup of it says Killed.
// It waits for an in-flight lookup of the same id first, so that lookup's
// repair cannot write a copy back afterwards. It fails only if the id is
// invalid, ctx ends while waiting for that lookup, or no node answered.
func (s *Store) Kill(ctx context.Context, id string) error {
	if data, _ := s.Keys(id); data == "" {
		return ErrInvalidID
	}
	ok := false
	_, err := s.flights.exclusive(ctx, id, func() Result {
		ok = s.kill([]string{id})
		return Result{Verdict: Killed}
	})
	switch {
	case err != nil:
		return err
	case !ok:
		return ErrStoreDown
	}
	s.kills.Add(1)
	s.log.Info("session killed", "session", ShortID(id))
	return nil
}

// killBatch is how many ids one pipelined round of KillMany carries.
const killBatch = 1000

// KillMany kills ids as Kill does, killBatch at a time, each batch in one
// pipelined round per node and step and one killSettle: a pool-wide logout
// of 100 000 sessions takes seconds, not the hours of one Kill after the
// other. Invalid ids are skipped. Unlike Kill it does not wait for lookups
// of the ids in flight: a repair that writes a copy back after the delete
// is undone by the next lookup, which finds the tombstone (killedLookup).
// It returns how many it killed; it stops at the first batch no node took,
// or when ctx ends.
func (s *Store) KillMany(ctx context.Context, ids []string) (killed int, err error) {
	batch := make([]string, 0, killBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if !s.kill(batch) {
			return ErrStoreDown
		}
		killed += len(batch)
		s.kills.Add(uint64(len(batch)))
		batch = batch[:0]
		return nil
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return killed, err
		}
		if data, _ := s.Keys(id); data == "" {
			continue
		}
		if batch = append(batch, id); len(batch) == killBatch {
			if err := flush(); err != nil {
				return killed, err
			}
		}
	}
	return killed, flush()
}

// KillAll kills every session in the pool — every data key a metadump of
// any node lists (see Scan) — through KillMany, one batch at a time as the
// dump streams, telling each(id) of every id it killed. Sessions PHP
// creates meanwhile may or may not be killed.
func (s *Store) KillAll(ctx context.Context, each func(id string)) (killed int, err error) {
	var batch []string
	flush := func() error {
		n, err := s.KillMany(ctx, batch)
		for _, id := range batch[:n] {
			each(id)
		}
		killed += n
		batch = batch[:0]
		return err
	}
	ok := 0
	for _, n := range s.nodes {
		err := s.metadump(ctx, n, func(it dumpItem) error {
			id := s.sessionID(it.Key)
			if id == nil {
				return nil
			}
			if data, _ := s.Keys(string(id)); data == "" {
				return nil // KillMany would skip it, and batch[:n] would then name the wrong ids
			}
			if batch = append(batch, string(id)); len(batch) == killBatch {
				return flush()
			}
			return nil
		})
		if err == nil {
			err = flush()
		}
		switch {
		case ctx.Err() != nil:
			return killed, ctx.Err()
		case errors.Is(err, ErrStoreDown):
			return killed, err
		case err != nil:
			// Its sessions are killed through the other nodes' dumps, if
			// they hold them.
			s.log.Warn("logout of every session: node not listed", "node", n.addr, "error", err)
			batch = batch[:0]
			continue
		}
		ok++
	}
	if ok == 0 {
		return killed, ErrStoreDown
	}
	return killed, nil
}

// kill is Kill's and KillMany's work for valid ids: the tombstones on every
// node, a new kill epoch, killSettle, then the data and lock keys deleted on
// every node, each step one pipelined round per node. It reports false if
// no node took the tombstones or the deletes.
func (s *Store) kill(ids []string) bool {
	exp := strconv.Itoa(int(s.expiration(int64(s.lifetime / time.Second))))
	var tombs, dels []byte
	for _, id := range ids {
		data, lock := s.Keys(id)
		tombs = append(tombs, "ms "+s.tombKey(id)+" 1 T"+exp+"\r\n1\r\n"...)
		dels = append(dels, "md "+data+"\r\nmd "+lock+"\r\n"...)
	}
	round := func(req []byte, answers int) bool {
		res := fanout(s, s.all, func(n *node) (struct{}, error) {
			// Bounded by Timeout: an admin going away must not mark nodes down.
			// A batch's pipeline may take longer than one command: 50 µs per
			// answer on top of Timeout, so that a full batch is not taken for
			// a hung node.
			extra := time.Duration(answers) * 50 * time.Microsecond
			return struct{}{}, s.metaDoLong(context.Background(), n, req, extra, func(r *bufio.Reader) error {
				for range answers {
					// NS, EX, NF are answers: a key already gone is fine.
					if err := readStatus(r, nil, nil, nil); err != nil {
						return err
					}
				}
				return nil
			})
		})
		return slices.ContainsFunc(res, func(o outcome[struct{}]) bool { return o.err == nil })
	}
	if !round(tombs, len(ids)) {
		return false
	}
	fanout(s, s.all, func(n *node) (struct{}, error) {
		return struct{}{}, s.metaStore(n, s.epochKey(), strconv.AppendUint(nil, rand.Uint64(), 36), 0, 0, false, 0)
	})
	s.epoch.Add(1) // this instance at once
	for _, id := range ids {
		s.cache.remove(s.cache.hash(id))
	}
	time.Sleep(killSettle) // bounded; the other instances' polls need it
	return round(dels, 2*len(ids))
}
