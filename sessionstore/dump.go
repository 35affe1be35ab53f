package sessionstore

// This file streams a node's key list (`lru_crawler metadump hash`, memcached
// 1.6.9+; `all` before) on a connection of its own, and tells PHP's session data keys from
// everything else on the node. Inventory (inventory.go), List (list.go) and
// Resync (resync.go) read the pool through it.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Bounds of a metadump.
const (
	// dumpIdle bounds the wait for the next part of a dump: memcached's
	// crawler runs in a thread of its own and streams at its own pace, and
	// a node that sends nothing for this long is taken as hung.
	dumpIdle = 10 * time.Second
	// dumpBusyTries and dumpBusyPause: one crawler per node runs at a time
	// (another instance may be scanning); BUSY is retried this often, this
	// far apart.
	dumpBusyTries = 100
	dumpBusyPause = 100 * time.Millisecond
	// itemOverhead is what memcached 1.6 (64-bit, CAS on, the default)
	// adds to key and value in the size metadump reports: a 48-byte item
	// header, 8 bytes of CAS, the key's NUL and the value's CRLF. Client
	// flags other than 0 add 4 more (pecl memcache's compressed values, so
	// their sizes read 4 bytes high).
	itemOverhead = 48 + 8 + 1 + 2
	// maxDumpLine bounds a metadump line: a 250-byte key URI-encoded to
	// three times that, and the numbers after it.
	maxDumpLine = 1024
	// dumpYieldEvery is how many lines a metadump parses between letting
	// requests in (pollYield): about 150 µs of a scan's CPU.
	dumpYieldEvery = 256
)

// dumpItem is one metadump line. Key is only valid during the callback.
type dumpItem struct {
	Key  []byte
	Exp  int64 // unix time, -1 = never
	LA   int64 // last access, unix time
	Size int   // value bytes (see itemOverhead)
}

var (
	errBusy   = errors.New("sessionstore: lru_crawler busy")
	errNoHash = errors.New("sessionstore: lru_crawler metadump hash not supported")
)

// metadump streams every key on n to each, in the node's own order. It uses
// a connection of its own, never a pooled one, so requests' lookups never
// wait behind it, and holds one line at a time: memory does not grow with
// the node. each returning an error ends the dump with that error.
//
// It walks the hash table (`metadump hash`), not the LRUs (`metadump all`):
// an LRU walk misses items the LRU maintainer moves between sub-LRUs
// meanwhile — seen here as a third of a node's fresh sessions missing.
// `all` is the fallback for memcached before 1.6.9.
func (s *Store) metadump(ctx context.Context, n *node, each func(dumpItem) error) error {
	mode := "hash"
	for try := 0; ; try++ {
		err := s.metadumpOnce(ctx, n, mode, each)
		if errors.Is(err, errNoHash) && mode == "hash" {
			mode = "all"
			continue
		}
		if !errors.Is(err, errBusy) || try >= dumpBusyTries {
			return err
		}
		t := time.NewTimer(dumpBusyPause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (s *Store) metadumpOnce(ctx context.Context, n *node, mode string, each func(dumpItem) error) error {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, max(s.timeout, time.Second))
	c, err := d.DialContext(dctx, "tcp", n.addr)
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.SetDeadline(time.Now().Add(dumpIdle)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, "lru_crawler metadump "+mode+"\r\n"); err != nil {
		return err
	}
	r := bufio.NewReaderSize(c, 64<<10)
	y := newPollYield()
	defer y.Close()
	var renewed time.Time
	for lines := 1; ; lines++ {
		if lines%dumpYieldEvery == 0 {
			y.Yield()
		}
		// The deadline bounds each wait for the node, not the whole dump,
		// and each's callbacks (List reads values) may take a while. Only
		// a line not wholly buffered can wait, so the clock is read only
		// near the buffer's end, not once a line.
		if r.Buffered() < maxDumpLine {
			if now := time.Now(); now.Sub(renewed) > dumpIdle/4 {
				if err := c.SetReadDeadline(now.Add(dumpIdle)); err != nil {
					return err
				}
				renewed = now
			}
		}
		line, err := r.ReadSlice('\n')
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		switch {
		case bytes.Equal(line, []byte("END")):
			return nil
		case bytes.HasPrefix(line, []byte("BUSY")):
			return errBusy
		case mode == "hash" && (bytes.HasPrefix(line, []byte("CLIENT_ERROR")) || bytes.Equal(line, []byte("ERROR"))):
			return fmt.Errorf("%w: %q", errNoHash, line)
		case !bytes.HasPrefix(line, []byte("key=")):
			// ERROR (crawler disabled), CLIENT_ERROR, ...
			return fmt.Errorf("%w: %q", errProtocol, line)
		}
		it, ok := parseDumpLine(line)
		if !ok {
			continue // a key memcached could not encode: not one of ours
		}
		if err := each(it); err != nil {
			return err
		}
	}
}

// parseDumpLine parses "key=<uri-encoded> exp=N la=N cas=N fetch=x cls=N
// size=N" (and fields newer memcached adds, skipped). The key is decoded in
// place. It splits on single spaces and reads digits itself, not with
// bytes.Fields and strconv: a scan parses every key of every node, and on
// one P it holds the processor while it does (bench/profiles.md, "The
// inventory scan").
func parseDumpLine(line []byte) (dumpItem, bool) {
	var it dumpItem
	for len(line) > 0 {
		f := line
		if sp := bytes.IndexByte(line, ' '); sp >= 0 {
			f, line = line[:sp], line[sp+1:]
		} else {
			line = nil
		}
		eq := bytes.IndexByte(f, '=')
		if eq < 0 {
			continue
		}
		v := f[eq+1:]
		switch string(f[:eq]) {
		case "key":
			k, ok := unescapeKey(v)
			if !ok {
				return it, false
			}
			it.Key = k
		case "exp":
			it.Exp = atoi(v)
		case "la":
			it.LA = atoi(v)
		case "size":
			// key comes first on the line
			it.Size = max(int(atoi(v))-itemOverhead-len(it.Key), 0)
		}
	}
	return it, it.Key != nil
}

// atoi reads a decimal integer with an optional '-', and 0 for anything
// else, as metadump's numbers are read (a number memcached did not write
// cannot matter more than a missing one).
func atoi(b []byte) int64 {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		return -n
	}
	return n
}

// unescapeKey undoes memcached's URI encoding of keys in place (a session
// id's ',' is dumped as %2C).
func unescapeKey(b []byte) ([]byte, bool) {
	if bytes.IndexByte(b, '%') < 0 {
		return b, true
	}
	out := b[:0]
	for i := 0; i < len(b); i++ {
		if b[i] != '%' {
			out = append(out, b[i])
			continue
		}
		if i+2 >= len(b) {
			return nil, false
		}
		v, err := strconv.ParseUint(string(b[i+1:i+3]), 16, 8)
		if err != nil {
			return nil, false
		}
		out = append(out, byte(v))
		i += 2
	}
	return out, true
}

// sessionID returns the session id whose data key is key, or nil when key
// is not a PHP session data key of the configured handler and prefix: lock
// keys (<data>.lock, <prefix>lock.<id>), this store's tombstones, kill
// epoch and resume mark all contain a '.' after the prefix, which no id
// does, and another
// application's keys rarely look like a prefix plus 22 to 256 characters of
// [A-Za-z0-9,-] (those that do are counted: nothing tells them apart).
func (s *Store) sessionID(key []byte) []byte {
	if len(key) < len(s.prefix) || string(key[:len(s.prefix)]) != s.prefix {
		return nil
	}
	id := key[len(s.prefix):]
	if len(key)+lockOverhead > maxKeyLen || len(id) < minIDLen || len(id) > MaxIDLen {
		return nil
	}
	for _, c := range id {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == ',' || c == '-') {
			return nil
		}
	}
	return id
}

// isLockKey reports whether key is a session lock key of the configured
// handler and prefix.
func (s *Store) isLockKey(key []byte) bool {
	if s.handler == HandlerMemcached {
		rest, ok := bytes.CutPrefix(key, []byte(s.prefix+"lock."))
		return ok && s.sessionID(append([]byte(s.prefix), rest...)) != nil
	}
	data, ok := bytes.CutSuffix(key, []byte(".lock"))
	return ok && s.sessionID(data) != nil
}
