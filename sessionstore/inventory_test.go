package sessionstore

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// poolFixture writes, through real PHP with handler, withData sessions with
// data (one of them ~30 kB), empties empty sessions, and on every node lock
// keys (PHP's own, and a held one) and another application's keys that
// resemble session keys. It returns the ids with data, then the empty ones.
func poolFixture(t *testing.T, f *fixture, handler string, withData, empties int) (data, empty []string) {
	t.Helper()
	args := f.phpArgs(handler)
	for k := range withData {
		id := newID(t)
		mode := "inc"
		if k == 0 {
			mode = "big"
		}
		f.php(args, id, mode)
		data = append(data, id)
	}
	for range empties {
		id := newID(t)
		f.php(args, id, "")
		empty = append(empty, id)
	}
	prefix := ""
	if handler == HandlerMemcached {
		prefix = DefaultMemcachedPrefix
	}
	held := newID(t)
	for i := range f.raw {
		// Lock keys without data (a held lock of a session being created).
		if handler == HandlerMemcached {
			f.set(i, prefix+"lock."+held, []byte("1"), 0, 60)
		} else {
			f.set(i, held+".lock", []byte("1"), 768, 15)
		}
		// Another application's keys: too short, wrong characters, a
		// different prefix, a dot.
		f.set(i, prefix+"abc", []byte("x"), 0, 60)
		f.set(i, prefix+"user:42:profile:0123456789abcdef", []byte("x"), 0, 60)
		f.set(i, "other."+newID(t), []byte("x"), 0, 60)
		f.set(i, prefix+newID(t)+"_cache", []byte("x"), 0, 60)
	}
	return data, empty
}

func TestScanCountsExactly(t *testing.T) {
	for _, handler := range []string{HandlerMemcache, HandlerMemcached} {
		t.Run(handler, func(t *testing.T) {
			var ahead atomic.Int64 // seconds the store's clock runs ahead
			f := setup(t, 3, func(o *Options) {
				o.Handler = handler
				o.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load()) * time.Second) }
			})
			data, empty := poolFixture(t, f, handler, 4, 2)
			// One session missing on node 2: incomplete.
			key, _ := f.s.Keys(data[1])
			if err := f.raw[2].Delete(key); err != nil {
				t.Fatal(err)
			}
			inv, err := f.s.Scan(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			total := int64(len(data) + len(empty))
			if inv.Sessions != total || inv.WithData != int64(len(data)) || inv.Incomplete != 1 || inv.Sampled {
				t.Errorf("sessions %d, with data %d, incomplete %d, sampled %v; want %d, %d, 1, false",
					inv.Sessions, inv.WithData, inv.Incomplete, inv.Sampled, total, len(data))
			}
			if inv.Active1m != total || inv.Active15m != total {
				t.Errorf("active 1m %d 15m %d, want %d", inv.Active1m, inv.Active15m, total)
			}
			for i, n := range inv.Nodes {
				want := total
				if i == 2 {
					want--
				}
				if n.Sessions != want || n.Error != "" || n.Other < 4 {
					t.Errorf("node %d: %+v, want %d sessions and the 4 foreign keys as other", i, n, want)
				}
				if n.Locks < 1 {
					t.Errorf("node %d: %d lock keys, want at least the held one", i, n.Locks)
				}
			}
			// (memcache stores the big one zlib-compressed: small, but the largest.)
			if len(inv.Largest) == 0 || inv.Largest[0].ID != data[0] {
				t.Errorf("largest %+v, want %s (the big session) first", inv.Largest, ShortID(data[0]))
			}
			var hist int64
			for _, c := range inv.Sizes {
				hist += c
			}
			if hist != total || inv.Sizes[0] != int64(len(empty)) {
				t.Errorf("size histogram %v: want %d sessions, %d of them empty", inv.Sizes, total, len(empty))
			}
			if got, ok := f.s.Inventory(); !ok || got.Sessions != inv.Sessions {
				t.Errorf("Inventory() = %+v, %v; want the scan's", got, ok)
			}

			// Three minutes on: nobody active within a minute, all within 5.
			ahead.Store(180)
			inv, err = f.s.Scan(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if inv.Active1m != 0 || inv.Active5m != total {
				t.Errorf("3 min later: active 1m %d 5m %d, want 0 and %d", inv.Active1m, inv.Active5m, total)
			}
		})
	}
}

// TestScanSamplesBeyondCap: past sampleCap distinct sessions the counts are
// estimates within a few percent, and memory stays bounded by the sample.
func TestScanSamplesBeyondCap(t *testing.T) {
	f := setup(t, 1, nil)
	const n = sampleCap + sampleCap/16
	fillPool(t, f.mc.Addrs(), "", n, 10)
	inv, err := f.s.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The node's 16 MB may evict a few: its own count is the truth.
	exact := inv.Nodes[0].Sessions
	if !inv.Sampled || exact < n*99/100 || inv.Sessions < exact*95/100 || inv.Sessions > exact*105/100 {
		t.Errorf("sampled %v, node count %d, estimate %d; want sampled, about %d on the node, estimate within 5%%",
			inv.Sampled, exact, inv.Sessions, n)
	}
}

// poolID is the i-th of a set of distinct ids in PHP's format (26
// characters of [0-9a-v]).
func poolID(i int) string {
	const alphabet = "0123456789abcdefghijklmnopqrstuv"
	b := []byte("sg00000000000000000000000")
	b = append(b, 'x')
	for k := len(b) - 2; i > 0 && k >= 2; k-- {
		b[k] = alphabet[i%32]
		i /= 32
	}
	return string(b)
}

// fillPool writes n sessions in PHP's key format (prefix + poolID) with
// values of size bytes and PHP's default 1440 s TTL on every node in
// addrs, pipelined on one connection per node.
func fillPool(t testing.TB, addrs []string, prefix string, n, size int) {
	t.Helper()
	value := strings.Repeat("v", size)
	for _, a := range addrs {
		c, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		w := bufio.NewWriterSize(c, 64<<10)
		r := bufio.NewReader(c)
		const batch = 1000
		for start := 0; start < n; start += batch {
			end := min(start+batch, n)
			for i := start; i < end; i++ {
				fmt.Fprintf(w, "ms %s%s %d T1440 q\r\n%s\r\n", prefix, poolID(i), size, value)
			}
			w.WriteString("mn\r\n")
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			line, err := r.ReadString('\n')
			if err != nil || line != "MN\r\n" {
				t.Fatalf("fill %s: %q %v", a, line, err)
			}
		}
		c.Close()
	}
}
