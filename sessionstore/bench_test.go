package sessionstore

import (
	"testing"
	"time"
)

// BenchmarkCheckWarm is a Check answered from the cache. A busy loop on one
// P can keep the kill epoch reader from its turn for longer than killFresh:
// those Checks look the session up (uncached/op).
func BenchmarkCheckWarm(b *testing.B) {
	f := setupBench(b, time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	uncached := 0
	for b.Loop() {
		r := f.s.Check(b.Context(), f.id)
		if r.Verdict != Verified {
			b.Fatalf("result %+v", r)
		}
		if !r.Cached {
			uncached++
		}
	}
	b.ReportMetric(float64(uncached)/float64(b.N), "uncached/op")
}

func BenchmarkCheckWarmParallel(b *testing.B) {
	f := setupBench(b, time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f.s.Check(b.Context(), f.id)
		}
	})
}

func BenchmarkCheckCold(b *testing.B) {
	f := setupBench(b, -1)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if r := f.s.Check(b.Context(), f.id); r.Verdict != Verified || r.Cached {
			b.Fatalf("result %+v", r)
		}
	}
}

func BenchmarkCheckInvalid(b *testing.B) {
	f := setupBench(b, time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		f.s.Check(b.Context(), "3vdj8srh32rjq4kfeitc4hk4l'")
	}
}

type benchFixture struct {
	*fixture
	id string
}

// setupBench is a 3-node real memcached cluster holding one session on every node.
func setupBench(b *testing.B, verifyTTL time.Duration) benchFixture {
	f := setup(b, 3, func(o *Options) { o.VerifyTTL = verifyTTL; o.Logger = nil })
	id := newID(b)
	for i := range 3 {
		f.set(i, id, session, 0, 1440)
	}
	f.s.Check(b.Context(), id)
	return benchFixture{f, id}
}

// BenchmarkPeekNodes is one peek at the watcher connection and one idle
// pooled connection of 3 nodes, done by at most one cache hit per peekEvery
// (see peekDue).
func BenchmarkPeekNodes(b *testing.B) {
	f := setupBench(b, time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if f.s.peekNodes() {
			b.Fatal("a node lost")
		}
	}
}
