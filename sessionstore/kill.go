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
	"sync"
	"sync/atomic"
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
//     every node by every kill. Each instance reads its CAS on every node
//     marked up, all at once, every killPoll (one small meta command per
//     node) and, when it changed, bumps the store epoch: every cached
//     verification is void, so the next Check of any id looks it up and
//     finds the tombstone.
//
// A Check uses a cached verification only while the epoch was read recently
// (killFresh), so a kill holds on an instance whose reader is late, starved
// of CPU or parked, not only on one that keeps time. The reader parks after
// a second without a cache hit (killIdleRounds): an idle instance costs
// the pool nothing, and the first Check after it waits for one read.
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
	// killFresh is how old the latest read may be for a Check to use a
	// cached verification. Under killSettle, so that a read that passes it
	// started after the write of any kill that has returned.
	killFresh = 2 * killPoll
	// killIdleRounds is how many reads in a row without a cache hit between
	// them park the reader until a Check needs it.
	killIdleRounds = 40
)

// tombKey is id's tombstone key (id must be usable).
func (s *Store) tombKey(id string) string { return s.prefix + tombInfix + id }

// epochKey is the pool-wide kill epoch key.
func (s *Store) epochKey() string { return s.prefix + epochName }

// killReads is what the kill epoch reader (watchKills) shares with Checks.
type killReads struct {
	// at is when (s.mono) the latest read that some node answered started,
	// stored after the epoch bump that read may have made; 0 before one.
	at     atomic.Int64
	parked atomic.Bool
	wake   chan struct{} // buffered: a Check needs a read while parked
	mu     sync.Mutex
	done   chan struct{} // closed when the next read ends
}

// cachedVerification returns the cached verification of the id with hash h
// if a Check at now (s.now, unix ns) may use it: made in the current epoch,
// younger than verifyTTL, and the kill epoch read at most killFresh ago.
// When the reader is parked, it is woken and waited for (awaitKillRead).
// The read's time is loaded before the epoch: a read that made it fresh
// bumped the epoch first, if it saw a kill.
func (s *Store) cachedVerification(ctx context.Context, h uint64, now int64) (cacheEntry, bool) {
	fresh := s.killReadSince(s.mono())
	e, ok := s.cache.get(h, s.epoch.Load(), now, int64(s.verifyTTL))
	if !ok || fresh {
		return e, ok
	}
	if !s.awaitKillRead(ctx) {
		return cacheEntry{}, false
	}
	return s.cache.get(h, s.epoch.Load(), now, int64(s.verifyTTL))
}

// killReadSince reports whether the latest read started at most killFresh
// before now (s.mono).
func (s *Store) killReadSince(now int64) bool {
	at := s.kr.at.Load()
	return at != 0 && now-at <= int64(killFresh)
}

// mono is the time since the store was made, on the monotonic clock: the
// reader's timing is real time, never the clock tests inject (Options.Now),
// and never stepped.
func (s *Store) mono() int64 { return int64(time.Since(s.born)) }

// awaitKillRead wakes the parked kill epoch reader and waits, at most
// killSettle, for its read. A reader that is not parked is late or finds
// no node answering: the Check then looks the session up rather than wait.
func (s *Store) awaitKillRead(ctx context.Context) bool {
	if !s.kr.parked.Load() {
		return false
	}
	s.kr.mu.Lock()
	done := s.kr.done
	s.kr.mu.Unlock()
	select {
	case s.kr.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(killSettle)
	defer t.Stop()
	select {
	case <-done:
		return s.killReadSince(s.mono())
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// watchKills reads the kill epoch every killPoll until ctx ends (readKills),
// parked after killIdleRounds reads without a cache hit until a Check wakes
// it (awaitKillRead).
func (s *Store) watchKills(ctx context.Context) {
	// me (meta debug) rather than a get: it reports the key's CAS, which
	// every set changes, and does not count as a get in the node's stats.
	req := []byte("me " + s.epochKey() + "\r\n")
	last := make([]epochRead, len(s.nodes))
	t := time.NewTicker(killPoll)
	defer t.Stop()
	hits, quiet := s.cached.Load(), 0
	for {
		s.readKills(ctx, req, last)
		if h := s.cached.Load(); h != hits {
			hits, quiet = h, 0
		} else if quiet++; quiet >= killIdleRounds {
			t.Stop()
			s.kr.parked.Store(true)
			select {
			case <-ctx.Done():
				return
			case <-s.kr.wake:
			}
			s.kr.parked.Store(false)
			t.Reset(killPoll)
			quiet = 0
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// epochRead is the kill epoch reader's record of one node: the CAS it last
// read there, and whether it read one.
type epochRead struct {
	cas  uint64
	seen bool
}

// readKills reads the kill epoch on every node marked up, at once, each
// read bounded by killPoll, and bumps the store epoch if it changed on any
// of them, or was read there for the first time: a verification cached
// before may predate a kill. Then, if some node answered, it stores the
// read's start in s.kr.at. A node that does not answer is skipped: its
// liveness is the watcher's business, and a kill reaches every instance
// through the nodes that do answer.
func (s *Store) readKills(ctx context.Context, req []byte, last []epochRead) {
	if h := s.killRead.Load(); h != nil {
		(*h)()
	}
	start := s.mono()
	rctx, cancel := context.WithTimeout(ctx, killPoll)
	var wg sync.WaitGroup
	var answered, changed atomic.Bool
	for i, n := range s.nodes {
		if !n.up.Load() {
			continue
		}
		wg.Go(func() {
			var cas uint64
			err := s.metaDoBytes(rctx, n, req, func(r *bufio.Reader) (err error) {
				cas, err = readDebugCAS(r)
				return err
			})
			if err != nil {
				return
			}
			// Also when the key vanished (node restarted): a spare bump.
			if !last[i].seen || cas != last[i].cas {
				changed.Store(true)
			}
			last[i] = epochRead{cas, true}
			answered.Store(true)
		})
	}
	wg.Wait()
	cancel()
	if changed.Load() {
		s.epoch.Add(1)
	}
	if answered.Load() {
		s.kr.at.Store(start)
	}
	s.kr.mu.Lock()
	close(s.kr.done)
	s.kr.done = make(chan struct{})
	s.kr.mu.Unlock()
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
