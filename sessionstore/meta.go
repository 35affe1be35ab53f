package sessionstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// This file is a minimal memcached text-protocol client for what gomemcache lacks:
// meta get (`mg <key> s f t`, for remaining TTLs) and `stats`. Callers only pass keys
// built by Keys, which never contain spaces or control bytes.

// metaIdle is how many idle connections per node the meta client keeps. Repairs after
// a node restart need one `mg` per session per source node; dialing for each would
// leave a TIME_WAIT socket per call and can exhaust ephemeral ports.
const metaIdle = 4

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
	return c, nil
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
	var mc metaConn
	select {
	case mc = <-n.meta:
		if err := mc.c.SetDeadline(s.deadline(ctx)); err != nil {
			mc.c.Close()
			return err
		}
	default:
		c, err := s.dial(ctx, n.addr)
		if err != nil {
			return err
		}
		mc = metaConn{c, bufio.NewReaderSize(c, 1024)}
	}
	_, err := io.WriteString(mc.c, req)
	if err == nil {
		err = read(mc.r)
	}
	if err != nil || mc.r.Buffered() > 0 {
		mc.c.Close() // the stream position is unknown
		return err
	}
	select {
	case n.meta <- mc:
	default:
		mc.c.Close()
	}
	return nil
}

// metaTTL returns key's remaining TTL on n (`mg <key> t`).
func (s *Store) metaTTL(n *node, key string) (metaItem, error) {
	var it metaItem
	err := s.metaDo(context.Background(), n, "mg "+key+" t\r\n", func(r *bufio.Reader) (err error) {
		it, err = readMeta(r)
		return err
	})
	return it, err
}

// readMeta parses one meta-get response: EN, HD <flags>, or VA <size> <flags> + data.
func readMeta(r *bufio.Reader) (metaItem, error) {
	var it metaItem
	line, err := readLine(r)
	if err != nil {
		return it, err
	}
	fields := strings.Fields(line)
	switch {
	case len(fields) == 1 && fields[0] == "EN":
		return it, nil
	case len(fields) >= 1 && fields[0] == "HD":
		fields = fields[1:]
	case len(fields) >= 2 && fields[0] == "VA":
		size, err := strconv.Atoi(fields[1])
		if err != nil || size < 0 {
			return it, fmt.Errorf("%w: %q", errProtocol, line)
		}
		it.Value = make([]byte, size+2)
		if _, err := io.ReadFull(r, it.Value); err != nil {
			return it, err
		}
		if string(it.Value[size:]) != "\r\n" {
			return it, fmt.Errorf("%w: value not terminated", errProtocol)
		}
		it.Value = it.Value[:size]
		fields = fields[2:]
	default:
		return it, fmt.Errorf("%w: %q", errProtocol, line)
	}
	it.Found, it.TTL = true, -1
	for _, f := range fields {
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1:], 10, 64)
		if err != nil {
			return it, fmt.Errorf("%w: %q", errProtocol, line)
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
	return it, nil
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
