package sessionstore

import (
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseDumpLine(t *testing.T) {
	const overhead = itemOverhead
	for _, c := range []struct {
		line string
		want dumpItem
		ok   bool
	}{
		// memcached 1.6.18 (Debian 12), as read from a real node.
		{"key=memc.sess.key.abcdefghijklmnopqrstuvwxyz exp=1796659202 la=1796657762 cas=1 fetch=no cls=2 size=102",
			dumpItem{Key: []byte("memc.sess.key.abcdefghijklmnopqrstuvwxyz"), Exp: 1796659202, LA: 1796657762, Size: 102 - overhead - 40}, true},
		// Never expires; fields newer memcached adds; a ',' dumped as %2C.
		{"key=a%2Cb exp=-1 la=5 cas=7 fetch=yes cls=1 size=300 flags=4",
			dumpItem{Key: []byte("a,b"), Exp: -1, LA: 5, Size: 300 - overhead - 3}, true},
		// A size below the overhead is an empty value, not a negative one.
		{"key=k exp=0 la=0 size=10", dumpItem{Key: []byte("k")}, true},
		// Numbers memcached did not write read as 0.
		{"key=k exp=12x la=-", dumpItem{Key: []byte("k")}, true},
		{"key=k la=99999999999999999999", dumpItem{Key: []byte("k")}, true},
		// A key memcached could not encode, and lines without a key.
		{"key=ab%2 exp=1", dumpItem{}, false},
		{"key=ab%zz exp=1", dumpItem{}, false},
		{"exp=1 la=2", dumpItem{}, false},
		{"", dumpItem{}, false},
	} {
		got, ok := parseDumpLine([]byte(c.line))
		if ok != c.ok {
			t.Errorf("parseDumpLine(%q) ok = %v, want %v", c.line, ok, c.ok)
			continue
		}
		if ok && (string(got.Key) != string(c.want.Key) || got.Exp != c.want.Exp || got.LA != c.want.LA || got.Size != c.want.Size) {
			t.Errorf("parseDumpLine(%q) = %+v (key %q); want %+v (key %q)",
				c.line, got, got.Key, c.want, c.want.Key)
		}
	}
}

// TestPollYieldLetsNetworkIn: on one P, a goroutine whose connection became
// readable runs between two chunks of a busy loop that calls Yield. With
// runtime.Gosched in Yield's place it does not: nothing polls the network
// until the runtime's monitor thread does, up to 10 ms later.
func TestPollYieldLetsNetworkIn(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	server.SetDeadline(time.Now().Add(10 * time.Second))

	const rounds = 20
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 1)
		for range rounds {
			if _, err := server.Read(b); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	y := newPollYield()
	defer y.Close()
	missed := 0
	for i := range rounds {
		// Let the reader park in the poller, then make it ready there.
		for deadline := time.Now().Add(time.Second); got.Load() < int64(i) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Millisecond)
		if _, err := client.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		y.Yield()
		// The poll may hand this goroutine the P first; the reader, made
		// runnable by the same poll, runs at the next yield of any kind.
		runtime.Gosched()
		if got.Load() != int64(i+1) {
			missed++
		}
	}
	<-done
	t.Logf("missed %d of %d", missed, rounds)
	if missed > rounds/4 {
		t.Errorf("the reader had not run after Yield in %d of %d rounds", missed, rounds)
	}
}
