package sessionstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/sessiongate/sessiongate/internal/sockio"
)

// This file is the store's memcached client: the meta protocol (memcached
// 1.6), one pool of connections per node for every command the store sends —
// lookups, repairs, kills, renewals, stats. A lookup's one meta get per key
// (`mg <key> v f t c`) returns value, flags, remaining TTL and CAS together,
// so a repair needs no further read before it writes. Callers only pass keys
// built by Keys, which never contain spaces or control bytes.

// Answers that are not failures of the node: fanout does not count them.
var (
	errMiss        = errors.New("sessionstore: no such key")
	errNotStored   = errors.New("sessionstore: not stored (add found the key)")
	errCASConflict = errors.New("sessionstore: not stored (changed or gone since read)")
)

// metaConn is one pooled connection with its reader (which may hold nothing between
// calls: every call reads its whole response).
type metaConn struct {
	c net.Conn
	r *bufio.Reader
}

// metaItem is a parsed meta-get answer.
type metaItem struct {
	Found bool
	TTL   int64 // seconds left; -1 = never expires
	Flags uint32
	Size  int
	CAS   uint64 // only if requested with the c flag
	Value []byte // only if requested with the v flag
}

var errProtocol = errors.New("sessionstore: unexpected memcached response")

// dial connects to addr with the store's timeout and sets a deadline of Timeout (or
// ctx's deadline if sooner) for the whole exchange.
func (s *Store) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: s.timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if err := c.SetDeadline(s.deadline(ctx)); err != nil {
		c.Close()
		return nil, err
	}
	return s.wrap(c), nil
}

// wrap gives c reads and writes that skip the scheduler's system-call
// bookkeeping (internal/sockio), unless Options.DisableRawIO. Why: on a
// proxy between requests each exchange through net.Conn woke the
// runtime's monitor thread, which then polled every 20 µs for a
// millisecond (bench/profiles.md).
func (s *Store) wrap(c net.Conn) net.Conn {
	if !s.rawIO {
		return c
	}
	return sockio.Wrap(c)
}

// deadline is Timeout from now on the wall clock (network deadlines never use the
// injected clock), or ctx's deadline if that is sooner.
func (s *Store) deadline(ctx context.Context) time.Time {
	dl := time.Now().Add(s.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	return dl
}

// metaDo sends req to n on a pooled connection and parses the answer with read.
func (s *Store) metaDo(ctx context.Context, n *node, req string, read func(*bufio.Reader) error) error {
	return s.metaDoBytes(ctx, n, []byte(req), read)
}

// metaDoBytes is metaDo for a request already in bytes.
func (s *Store) metaDoBytes(ctx context.Context, n *node, req []byte, read func(*bufio.Reader) error) error {
	return s.metaDoLong(ctx, n, req, 0, read)
}

// metaDoLong is metaDoBytes allowing extra beyond Timeout, for long pipelines.
func (s *Store) metaDoLong(ctx context.Context, n *node, req []byte, extra time.Duration, read func(*bufio.Reader) error) error {
	mc, err := s.metaConn(ctx, n, s.deadline(ctx).Add(extra))
	if err != nil {
		return err
	}
	err = send(mc.c, req)
	if err == nil {
		err = read(mc.r)
	}
	if err != nil || mc.r.Buffered() > 0 {
		mc.c.Close() // the stream position is unknown
		return err
	}
	putIdle(n, mc)
	return nil
}

// metaConn takes an idle connection to n from its pool, or dials one, with
// deadline set for the whole exchange.
func (s *Store) metaConn(ctx context.Context, n *node, deadline time.Time) (metaConn, error) {
	select {
	case mc := <-n.meta:
		if err := mc.c.SetDeadline(deadline); err != nil {
			mc.c.Close()
			return metaConn{}, err
		}
		return mc, nil
	default:
	}
	c, err := (&net.Dialer{Deadline: deadline}).DialContext(ctx, "tcp", n.dialAddr)
	if err != nil {
		return metaConn{}, err
	}
	if err := c.SetDeadline(deadline); err != nil {
		c.Close()
		return metaConn{}, err
	}
	c = s.wrap(c)
	return metaConn{c, bufio.NewReaderSize(c, 1024)}, nil
}

// send writes req to c and, when c is a sockio connection, waits until c
// is readable (WriteThenWait), saving the read that would find nothing.
func send(c net.Conn, req []byte) error {
	if sc, ok := c.(*sockio.Conn); ok {
		_, err := sc.WriteThenWait(req)
		return err
	}
	_, err := c.Write(req)
	return err
}

// putIdle returns mc to n's idle pool, or closes it when the pool is full.
func putIdle(n *node, mc metaConn) {
	select {
	case n.meta <- mc:
	default:
		mc.c.Close()
	}
}

// metaGet sends n the one meta command req and reads its one answer.
func (s *Store) metaGet(ctx context.Context, n *node, req string) (metaItem, error) {
	var it metaItem
	err := s.metaDo(ctx, n, req, func(r *bufio.Reader) (err error) {
		it, err = readMeta(r)
		return err
	})
	return it, err
}

// metaStore writes value under key on n with a meta set: `ms <key> <len>
// F<flags> T<exp>`, as an add (mode E) if add, as a compare-and-swap if cas
// is not 0. An add that found the key is errNotStored, a compare-and-swap
// whose item changed or went errCASConflict.
func (s *Store) metaStore(n *node, key string, value []byte, flags uint32, exp int32, add bool, cas uint64) error {
	req := make([]byte, 0, len(key)+len(value)+64)
	req = append(req, "ms "...)
	req = append(req, key...)
	req = append(req, ' ')
	req = strconv.AppendInt(req, int64(len(value)), 10)
	req = append(req, " F"...)
	req = strconv.AppendUint(req, uint64(flags), 10)
	req = append(req, " T"...)
	req = strconv.AppendInt(req, int64(exp), 10)
	if add {
		req = append(req, " ME"...)
	}
	if cas != 0 {
		req = append(req, " C"...)
		req = strconv.AppendUint(req, cas, 10)
	}
	req = append(req, "\r\n"...)
	req = append(req, value...)
	req = append(req, "\r\n"...)
	return s.metaDoBytes(context.Background(), n, req, func(r *bufio.Reader) error {
		return readStatus(r, errNotStored, errCASConflict, errCASConflict)
	})
}

// metaDelete deletes key on n (`md <key>`); a key that is not there is errMiss.
func (s *Store) metaDelete(n *node, key string) error {
	return s.metaDo(context.Background(), n, "md "+key+"\r\n", func(r *bufio.Reader) error {
		return readStatus(r, errMiss, errCASConflict, errMiss)
	})
}

// metaTouch sets key's TTL on n to exp without reading it (`mg <key> T<exp>`);
// a key that is not there is errMiss.
func (s *Store) metaTouch(n *node, key string, exp int32) error {
	return s.metaDo(context.Background(), n, "mg "+key+" T"+strconv.Itoa(int(exp))+"\r\n", func(r *bufio.Reader) error {
		return readStatus(r, errMiss, errMiss, errMiss)
	})
}

// readStatus reads the one-line answer of ms, md or a value-less mg: HD is
// success; NS, EX and NF/EN are the given errors.
func readStatus(r *bufio.Reader, ns, ex, nf error) error {
	line, err := readLine(r)
	switch {
	case err != nil:
		return err
	case line == "HD":
		return nil
	case line == "NS":
		return ns
	case line == "EX":
		return ex
	case line == "NF" || line == "EN":
		return nf
	}
	return fmt.Errorf("%w: %q", errProtocol, line)
}

// sessionReads is the meta gets of a session's data, with what a repair needs
// (value, flags, TTL, CAS), and of its lock with its CAS (a release compares
// it); readFound parses their answers. room is spare capacity for more.
func sessionReads(data, lock string, room int) []byte {
	return appendSessionReads(make([]byte, 0, len(data)+len(lock)+27+room), data, lock)
}

// appendSessionReads appends sessionReads(data, lock) to req.
func appendSessionReads(req []byte, data, lock string) []byte {
	req = append(append(append(req, "mg "...), data...), " v f t c\r\nmg "...)
	return append(append(req, lock...), " v c\r\n"...)
}

// readFound reads one meta-get answer per element of into, setting the
// element to the item when it was found (nil otherwise).
func readFound(r *bufio.Reader, into []*metaItem) error {
	for i := range into {
		it, err := readMeta(r)
		if err != nil {
			return err
		}
		if it.Found {
			into[i] = &it
		}
	}
	return nil
}

// readMeta parses one meta-get response: EN, HD <flags>, or VA <size> <flags> + data.
// It parses the line in the reader's buffer, without copying it: the flags
// are read before the value, which overwrites that buffer.
func readMeta(r *bufio.Reader) (metaItem, error) {
	var it metaItem
	line, err := r.ReadSlice('\n')
	if err != nil {
		return it, err
	}
	rest, ok := bytes.CutSuffix(line, []byte("\r\n"))
	if !ok {
		return it, fmt.Errorf("%w: %q", errProtocol, line)
	}
	bad := func() (metaItem, error) { return metaItem{}, fmt.Errorf("%w: %q", errProtocol, line) }
	word, rest := cutField(rest)
	size := -1
	switch string(word) {
	case "EN":
		if f, _ := cutField(rest); len(f) > 0 {
			return bad()
		}
		return it, nil
	case "HD":
	case "VA":
		var f []byte
		f, rest = cutField(rest)
		n, ok := parseInt(f)
		if !ok || n < 0 || n > 1<<30 {
			return bad()
		}
		size = int(n)
	default:
		return bad()
	}
	it.Found, it.TTL = true, -1
	for f, more := cutField(rest); len(f) > 0; f, more = cutField(more) {
		if len(f) < 2 {
			continue
		}
		v, ok := parseInt(f[1:])
		if !ok {
			return bad()
		}
		switch f[0] {
		case 't':
			it.TTL = v
		case 'f':
			it.Flags = uint32(v)
		case 's':
			it.Size = int(v)
		case 'c':
			it.CAS = uint64(v)
		}
	}
	if size < 0 {
		return it, nil
	}
	it.Value = make([]byte, size+2)
	if _, err := io.ReadFull(r, it.Value); err != nil {
		return metaItem{}, err
	}
	if string(it.Value[size:]) != "\r\n" {
		return metaItem{}, fmt.Errorf("%w: value not terminated", errProtocol)
	}
	it.Value = it.Value[:size]
	return it, nil
}

// cutField returns the first space-separated field of b and what follows it.
func cutField(b []byte) (field, rest []byte) {
	b = bytes.TrimLeft(b, " ")
	field, rest, _ = bytes.Cut(b, []byte{' '})
	return field, rest
}

// parseInt parses a decimal int64, optionally negative, without allocating.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n < 0 { // overflowed 19 digits
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// readStats parses a `stats` response up to END.
func readStats(r *bufio.Reader) (map[string]string, error) {
	m := make(map[string]string, 96)
	for range 1000 { // memcached 1.6 sends ~90 lines; bound the loop anyway
		line, err := readLine(r)
		if err != nil {
			return nil, err
		}
		if line == "END" {
			return m, nil
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "STAT "), " ")
		if !ok || !strings.HasPrefix(line, "STAT ") {
			return nil, fmt.Errorf("%w: %q", errProtocol, line)
		}
		m[name] = value
	}
	return nil, fmt.Errorf("%w: stats without END", errProtocol)
}

// readLine reads one CRLF-terminated line (without the CRLF).
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return "", err
	}
	s, ok := strings.CutSuffix(string(line), "\r\n")
	if !ok {
		return "", fmt.Errorf("%w: %q", errProtocol, line)
	}
	return s, nil
}

// NodeStats returns the raw `stats` of the node addr (one of Options.Servers), bounded
// by Timeout and ctx.
func (s *Store) NodeStats(ctx context.Context, addr string) (map[string]string, error) {
	n := s.byAddr[addr]
	if n == nil {
		return nil, fmt.Errorf("sessionstore: %q is not a configured server", addr)
	}
	var m map[string]string
	err := s.metaDo(ctx, n, "stats\r\n", func(r *bufio.Reader) (err error) {
		m, err = readStats(r)
		return err
	})
	return m, err
}
