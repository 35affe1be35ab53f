package sessionstore

// Benchmarks of the pool inventory and resync at scale (issue 15 item 7):
// 100 000 sessions per node in PHP's key format on real memcached. Run with
//
//	go test -run '^$' -bench 'Pool' -benchtime 1x ./sessionstore
//
// make test only compiles them.

import (
	"context"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/sessionstore/memtest"
)

const (
	benchSessions = 100_000
	benchValue    = 200 // bytes per session value
)

// benchPool is a 3-node cluster with room for benchSessions per node, each
// node holding all of them, and a Store over it.
func benchPool(b *testing.B, fillNodes int, mod func(*Options)) (*memtest.Cluster, *Store) {
	b.Helper()
	mc := memtest.StartArgs(b, 3, "-m", "256")
	fillPool(b, mc.Addrs()[:fillNodes], "", benchSessions, benchValue)
	o := Options{Servers: mc.Addrs(), Timeout: 500 * time.Millisecond, VerifyTTL: -1}
	if mod != nil {
		mod(&o)
	}
	s, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return mc, s
}

// heapPeak samples the Go heap every millisecond until stop is closed and
// returns the largest value seen above base.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		metrics.Read(sample)
		base, peak := sample[0].Value.Uint64(), uint64(0)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
				metrics.Read(sample)
				if v := sample[0].Value.Uint64(); v > base {
					peak = max(peak, v-base)
				}
			}
		}
	}()
	return out
}

// BenchmarkPoolScan100k: one scan of 3 nodes × 100 000 sessions; reports
// the scan's time (ns/op), its sessions/s and the peak Go heap it added.
func BenchmarkPoolScan100k(b *testing.B) {
	_, s := benchPool(b, 3, nil)
	var peak uint64
	b.ReportAllocs()
	cpu0 := processCPU(b)
	for b.Loop() {
		runtime.GC()
		stop := make(chan struct{})
		got := heapPeak(stop)
		inv, err := s.Scan(b.Context())
		close(stop)
		peak = max(peak, <-got)
		if err != nil || inv.Sessions != benchSessions {
			b.Fatalf("scan: %d sessions, %v", inv.Sessions, err)
		}
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(3*benchSessions/(b.Elapsed().Seconds()/float64(b.N)), "keys/s")
	// The process's CPU, not the scan's wall time: memcached streams a
	// dump at its own pace, and on one P what a scan costs requests is
	// the CPU it holds.
	b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/1e3/float64(b.N), "cpu-ms/op")
}

// processCPU is the CPU time, user and system, this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPoolCheckP99DuringScan: the p99 of uncached Checks (a lookup on
// every node, as a request's) from 4 goroutines, without and during
// back-to-back scans of 3 × 100 000 sessions.
func BenchmarkPoolCheckP99DuringScan(b *testing.B) {
	_, s := benchPool(b, 3, nil)
	const perPhase = 4000
	measure := func() time.Duration {
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for k := range perPhase / 4 {
					id := poolID((g*perPhase + k*7919) % benchSessions)
					start := time.Now()
					if r := s.Check(b.Context(), id); r.Verdict != Verified {
						b.Errorf("Check: %+v", r)
						return
					}
					d := time.Since(start)
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		slices.Sort(lat)
		return lat[len(lat)*99/100]
	}
	var idle, scanning time.Duration
	scans := 0
	for b.Loop() {
		idle = measure()
		ctx, cancel := context.WithCancel(b.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ctx.Err() == nil {
				if _, err := s.Scan(ctx); err == nil {
					scans++
				}
			}
		}()
		time.Sleep(20 * time.Millisecond) // the first dump under way
		scanning = measure()
		cancel()
		<-done
	}
	b.ReportMetric(float64(idle.Microseconds()), "p99-idle-µs")
	b.ReportMetric(float64(scanning.Microseconds()), "p99-scan-µs")
	b.ReportMetric(float64(scans), "scans")
}

// BenchmarkPoolResync100k: node 2 restarted empty is refilled from nodes 0
// and 1 (100 000 sessions each) at an unbounded rate; reports the time,
// sessions/s and the CPU the source nodes' memcached spent.
func BenchmarkPoolResync100k(b *testing.B) {
	mc, s := benchPool(b, 2, func(o *Options) { o.ResyncRate = 1_000_000 })
	cpu := func() float64 {
		var sum float64
		for _, a := range mc.Addrs()[:2] {
			st, err := s.NodeStats(b.Context(), a)
			if err != nil {
				b.Fatal(err)
			}
			u, _ := strconv.ParseFloat(st["rusage_user"], 64)
			sys, _ := strconv.ParseFloat(st["rusage_system"], 64)
			sum += u + sys
		}
		return sum
	}
	// Node 2 starts empty and is taken as joined resyncJoinWait after the
	// start: let that first resync pass, outside the measurement.
	time.Sleep(resyncJoinWait + time.Second)
	for s.Resync().Running {
		time.Sleep(10 * time.Millisecond)
	}
	var took time.Duration
	var srcCPU float64
	for b.Loop() {
		before := cpu()
		restarted := time.Now()
		mc.Restart(2)
		for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
			st := s.Resync()
			if st.Node == mc.Addr(2) && !st.Running && st.Started.After(restarted) && st.Error == "" {
				if st.Copied != benchSessions {
					b.Fatalf("resync: %+v", st)
				}
				took = st.Ended.Sub(st.Started)
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("resync did not end within 5 minutes: %+v", s.Resync())
			}
		}
		srcCPU = cpu() - before
	}
	b.ReportMetric(took.Seconds(), "resync-s")
	b.ReportMetric(benchSessions/took.Seconds(), "sessions/s")
	b.ReportMetric(srcCPU, "source-memcached-cpu-s")
}
