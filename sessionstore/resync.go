package sessionstore

// This file fills a node that restarted empty, came back or joined the pool
// with every session it lacks (resync), in the background at a bounded rate:
// after it, a user idle for an hour finds every replica in place, and a
// second node failing soon after the first no longer loses the sessions
// only it held. Check's repair covers the sessions in use; resync covers the
// rest. Only with replicas: all (a sharded pool's nodes hold different
// sessions by design).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Resync bounds.
const (
	// resyncChunk bounds the keys a resync holds at once: a source node's
	// keys are taken in windows (by hash) of about this many, each from a
	// metadump of its own, so that memory does not grow with the pool and
	// no metadump is held open (memcached's crawler, busy for as long as a
	// slow reader keeps a dump open, would answer every other scan BUSY).
	resyncChunk = 10_000
	// resyncBatch is how many keys are checked and copied per pipelined round.
	resyncBatch = 100
	// resyncJoinWait is how long after Run starts the node sizes are
	// compared to find a node that joined empty.
	resyncJoinWait = 2 * statsInterval
	// resyncOpTimeout bounds one pipelined round on a node.
	resyncOpTimeout = 5 * time.Second
)

// ResyncStatus is the progress of the current or last resync.
type ResyncStatus struct {
	Running bool
	Node    string // the node being filled (or last filled)
	Done    int64  // source keys looked at
	Total   int64  // source keys to look at (the sources' session counts when it began)
	Copied  int64  // sessions copied onto Node
	Skipped int64  // copies not made because a request held the session's lock (per source)
	Rate    float64
	Started time.Time
	Ended   time.Time
	Error   string
}

// resyncState is the Store's resync part.
type resyncState struct {
	rate int           // sessions per second; <= 0: off
	wake chan struct{} // some node needs a resync (buffered 1)

	mu sync.Mutex // guards st
	st ResyncStatus

	done, copied, skipped, total atomic.Int64
}

// Resync returns the progress of the current or last resync (zero Started:
// none yet).
func (s *Store) Resync() ResyncStatus {
	s.resync.mu.Lock()
	st := s.resync.st
	s.resync.mu.Unlock()
	st.Done, st.Copied, st.Skipped, st.Total = s.resync.done.Load(), s.resync.copied.Load(), s.resync.skipped.Load(), s.resync.total.Load()
	end := st.Ended
	if st.Running {
		end = time.Now()
	}
	if secs := end.Sub(st.Started).Seconds(); !st.Started.IsZero() && secs > 0 {
		st.Rate = float64(st.Done) / secs
	}
	return st
}

// needResync marks n for a resync (observe calls it on a restart or return).
func (s *Store) needResync(n *node) {
	if s.resync.rate <= 0 || s.sharded {
		return
	}
	n.resync.Store(true)
	select {
	case s.resync.wake <- struct{}{}:
	default:
	}
}

// resyncLoop fills the nodes marked by needResync, one at a time, until
// ctx ends. Once, resyncJoinWait after the start, a node holding less than
// half the items of the fullest is taken as joined empty and marked.
func (s *Store) resyncLoop(ctx context.Context) {
	join := time.NewTimer(resyncJoinWait)
	defer join.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-join.C:
			s.markJoined()
			continue
		case <-s.resync.wake:
		}
		for _, n := range s.nodes {
			if ctx.Err() != nil {
				return
			}
			if n.resync.Swap(false) && n.up.Load() {
				s.resyncNode(ctx, n)
			}
		}
	}
}

// markJoined marks the nodes that hold less than half the items of the
// fullest (a node added to the configuration, empty).
func (s *Store) markJoined() {
	var most int64
	for _, st := range s.Nodes() {
		most = max(most, st.Items)
	}
	for i, st := range s.Nodes() {
		if st.Up && st.Items < most/2 {
			s.needResync(s.nodes[i])
		}
	}
}

// resyncNode copies onto t every session it lacks from the other nodes that
// are up, with add (never over a value PHP wrote meanwhile), with the
// source's value, flags and remaining TTL (less copyAge, as repairs do),
// skipping sessions whose lock a request holds on any node: PHP writes
// every copy at the end of that request anyway.
func (s *Store) resyncNode(ctx context.Context, t *node) {
	var sources []*node
	for _, n := range s.nodes {
		if n != t && n.up.Load() {
			sources = append(sources, n)
		}
	}
	rs := &s.resync
	rs.mu.Lock()
	rs.st = ResyncStatus{Running: true, Node: t.addr, Started: time.Now()}
	rs.mu.Unlock()
	rs.done.Store(0)
	rs.copied.Store(0)
	rs.skipped.Store(0)
	rs.total.Store(0)
	err := s.resyncFrom(ctx, t, sources)
	rs.mu.Lock()
	rs.st.Running, rs.st.Ended = false, time.Now()
	if err != nil {
		rs.st.Error = err.Error()
	}
	rs.mu.Unlock()
	st := s.Resync()
	if err != nil && ctx.Err() == nil {
		s.log.Warn("resync ended early", "node", t.addr, "done", st.Done, "total", st.Total, "copied", st.Copied, "error", err)
		t.resync.Store(true) // again at the next wake
		return
	}
	s.log.Info("resync done", "node", t.addr, "looked_at", st.Done, "copied", st.Copied, "locked_skipped", st.Skipped,
		"seconds", st.Ended.Sub(st.Started).Seconds())
}

func (s *Store) resyncFrom(ctx context.Context, t *node, sources []*node) error {
	rs := &s.resync
	counts := make([]int64, len(sources))
	for i, src := range sources {
		err := s.metadump(ctx, src, func(it dumpItem) error {
			if s.sessionID(it.Key) != nil {
				counts[i]++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("counting on %s: %w", src.addr, err)
		}
		rs.total.Add(counts[i])
	}
	conns := make(map[*node]*pipe)
	defer func() {
		for _, p := range conns {
			p.c.Close()
		}
	}()
	start := time.Now()
	seed := maphash.MakeSeed()
	for i, src := range sources {
		windows := uint64(max(1, (counts[i]+resyncChunk-1)/resyncChunk))
		for w := range windows {
			var ids []string
			err := s.metadump(ctx, src, func(it dumpItem) error {
				if id := s.sessionID(it.Key); id != nil && maphash.Bytes(seed, id)%windows == w {
					ids = append(ids, string(id))
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("listing %s: %w", src.addr, err)
			}
			for b := 0; b < len(ids); b += resyncBatch {
				batch := ids[b:min(b+resyncBatch, len(ids))]
				if err := s.resyncBatch(ctx, conns, t, src, batch); err != nil {
					return err
				}
				done := rs.done.Add(int64(len(batch)))
				// Pace: done keys may take done/rate seconds at the least.
				if wait := time.Duration(float64(done)/float64(rs.rate)*float64(time.Second)) - time.Since(start); wait > 0 {
					tm := time.NewTimer(wait)
					select {
					case <-ctx.Done():
						tm.Stop()
						return ctx.Err()
					case <-tm.C:
					}
				}
			}
		}
	}
	return nil
}

// resyncBatch copies those of ids that t lacks from src.
func (s *Store) resyncBatch(ctx context.Context, conns map[*node]*pipe, t, src *node, ids []string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	keys := make([]string, len(ids))
	locks := make([]string, len(ids))
	for i, id := range ids {
		keys[i], locks[i] = s.Keys(id)
	}
	// 1. Which does t lack?
	present, err := s.pipeline(conns, t, keys, " t")
	if err != nil {
		return err
	}
	var lack []int
	for i, it := range present {
		if !it.Found {
			lack = append(lack, i)
		}
	}
	if len(lack) == 0 {
		return nil
	}
	// 2. Is a request holding any of them (on any node that is up)?
	lockKeys := make([]string, len(lack))
	for k, i := range lack {
		lockKeys[k] = locks[i]
	}
	held := make([]bool, len(lack))
	for _, n := range s.nodes {
		if !n.up.Load() {
			continue
		}
		got, err := s.pipeline(conns, n, lockKeys, " v")
		if err != nil {
			return err
		}
		for k, it := range got {
			held[k] = held[k] || it.Found && s.lockHeld(it.Value)
		}
	}
	var copyKeys []string
	for k, i := range lack {
		if held[k] {
			s.resync.skipped.Add(1)
			continue
		}
		copyKeys = append(copyKeys, keys[i])
	}
	// 3. Read them on every other node that is up, pick the latest copy
	// as repairs do (see source: the longest TTL, and any copy that
	// differs from it must be clearly older), and add it on t. When the
	// copies disagree without a clear latest, the session is left to the
	// lookup of its next request: an empty node is repaired from the
	// latest copy then, a stale one put there now might not be.
	var reads [][]metaItem
	for _, n := range s.nodes {
		if n == t || !n.up.Load() {
			continue
		}
		got, err := s.pipeline(conns, n, copyKeys, " v f t")
		if err != nil {
			if n == src {
				return err
			}
			continue // the node's trouble is the watcher's business
		}
		reads = append(reads, got)
	}
	var req []byte
	var sent int
	for k := range copyKeys {
		it, ok := latestCopy(reads, k)
		if !ok {
			continue // gone meanwhile, or no clear latest copy
		}
		exp := s.expiration(older(it.TTL))
		req = fmt.Appendf(req, "ms %s %d F%d T%d ME\r\n", copyKeys[k], len(it.Value), it.Flags, exp)
		req = append(append(req, it.Value...), "\r\n"...)
		sent++
	}
	if sent == 0 {
		return nil
	}
	if hook := s.beforeResyncAdd.Load(); hook != nil {
		(*hook)()
	}
	stored := 0
	err = s.pipe(conns, t, req, func(r *bufio.Reader) error {
		for range sent {
			line, err := readLine(r)
			if err != nil {
				return err
			}
			switch line {
			case "HD":
				stored++
			case "NS": // PHP wrote it meanwhile: its write wins
			default:
				return fmt.Errorf("%w: %q", errProtocol, line)
			}
		}
		return nil
	})
	s.resync.copied.Add(int64(stored))
	s.repairs.Add(uint64(stored))
	return err
}

// latestCopy returns, of the k-th key's copies in reads, the one to copy:
// the longest TTL, provided every other copy is equal to it or clearly
// older (repair's rule, see source).
func latestCopy(reads [][]metaItem, k int) (metaItem, bool) {
	var best metaItem
	for _, r := range reads {
		if it := r[k]; it.Found && (!best.Found || longer(it.TTL, best.TTL)) {
			best = it
		}
	}
	if !best.Found {
		return best, false
	}
	for _, r := range reads {
		it := r[k]
		if it.Found && !(bytes.Equal(it.Value, best.Value) && it.Flags == best.Flags) && !clearlyLonger(best.TTL, it.TTL) {
			return best, false
		}
	}
	return best, true
}

// pipe is a connection of a resync's own to one node.
type pipe struct {
	c net.Conn
	r *bufio.Reader
}

// pipeline sends `mg <key><flags>` for every key to n at once and parses
// the answers in order.
func (s *Store) pipeline(conns map[*node]*pipe, n *node, keys []string, flags string) ([]metaItem, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	var req []byte
	for _, k := range keys {
		req = append(append(append(append(req, "mg "...), k...), flags...), "\r\n"...)
	}
	out := make([]metaItem, len(keys))
	err := s.pipe(conns, n, req, func(r *bufio.Reader) (err error) {
		for i := range out {
			if out[i], err = readMeta(r); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// pipe sends req to n on the resync's connection to it (dialled the first
// time) and reads the answers with read. A failed connection is dropped.
func (s *Store) pipe(conns map[*node]*pipe, n *node, req []byte, read func(*bufio.Reader) error) error {
	p := conns[n]
	if p == nil {
		c, err := net.DialTimeout("tcp", n.addr, max(s.timeout, time.Second))
		if err != nil {
			return err
		}
		p = &pipe{c: c, r: bufio.NewReaderSize(c, 64<<10)}
		conns[n] = p
	}
	err := p.c.SetDeadline(time.Now().Add(resyncOpTimeout))
	if err == nil {
		_, err = p.c.Write(req)
	}
	if err == nil {
		err = read(p.r)
	}
	if err == nil && p.r.Buffered() > 0 {
		err = fmt.Errorf("%w: unexpected bytes after the answers", errProtocol)
	}
	if err != nil {
		p.c.Close()
		delete(conns, n)
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%s: %w", n.addr, err)
		}
	}
	return err
}
