package sessionstore

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestFlightsCoalesce(t *testing.T) {
	var f flights
	release := make(chan struct{})
	calls := 0
	leaderIn := make(chan struct{})
	results := make(chan Result, 11)
	go func() {
		results <- f.do(t.Context(), "id", func() Result {
			calls++
			close(leaderIn)
			<-release
			return Result{Verdict: Repaired}
		})
	}()
	<-leaderIn
	const followers = 10
	for range followers {
		go func() {
			results <- f.do(t.Context(), "id", func() Result { calls++; return Result{Verdict: Unknown} })
		}()
	}
	waitFor(t, "followers to join", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.calls["id"].dups == followers
	})
	close(release)
	for range followers + 1 {
		if r := <-results; r.Verdict != Repaired {
			t.Errorf("caller got %v, want the leader's result", r.Verdict)
		}
	}
	if calls != 1 {
		t.Errorf("fn ran %d times, want 1", calls)
	}
	if len(f.calls) != 0 {
		t.Errorf("%d calls left in flight", len(f.calls))
	}
}

func TestFlightsFollowerCtx(t *testing.T) {
	var f flights
	release := make(chan struct{})
	defer close(release)
	leaderIn := make(chan struct{})
	go f.do(context.Background(), "id", func() Result { close(leaderIn); <-release; return Result{} })
	<-leaderIn
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if r := f.do(ctx, "id", func() Result { return Result{} }); r.Verdict != StoreDown {
		t.Errorf("follower with an expired ctx got %v, want store_down (fail open)", r.Verdict)
	}
	if _, err := f.exclusive(ctx, "id", func() Result { return Result{} }); err == nil {
		t.Error("exclusive ran while a call was in flight")
	}
}

func TestFlightsExclusiveWaits(t *testing.T) {
	var f flights
	var mu sync.Mutex
	var order []string
	release := make(chan struct{})
	leaderIn := make(chan struct{})
	done := make(chan struct{})
	go func() {
		f.do(t.Context(), "id", func() Result {
			close(leaderIn)
			<-release
			mu.Lock()
			order = append(order, "lookup")
			mu.Unlock()
			return Result{}
		})
		close(done)
	}()
	<-leaderIn
	killed := make(chan struct{})
	go func() {
		f.exclusive(t.Context(), "id", func() Result {
			mu.Lock()
			order = append(order, "kill")
			mu.Unlock()
			return Result{}
		})
		close(killed)
	}()
	waitFor(t, "exclusive to wait", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.calls["id"].dups == 1
	})
	close(release)
	<-killed
	<-done
	if len(order) != 2 || order[0] != "lookup" {
		t.Errorf("order = %v, want the lookup to finish before the kill", order)
	}
}

func TestVerifyCacheBounded(t *testing.T) {
	c := newVerifyCache(64)
	for i := range uint64(10_000) {
		c.put(i<<50|i, cacheEntry{epoch: 1, at: 1})
	}
	total := 0
	for i := range c.shards {
		total += len(c.shards[i].m)
	}
	if total > 64 {
		t.Errorf("cache holds %d entries, bound is 64", total)
	}
	h := c.hash("3vdj8srh32rjq4kfeitc4hk4l5")
	c.put(h, cacheEntry{epoch: 7, at: 100})
	for _, tc := range []struct {
		epoch    uint64
		now, ttl int64
		ok       bool
	}{
		{7, 150, 100, true},
		{8, 150, 100, false}, // a node changed since
		{7, 200, 100, false}, // too old
	} {
		if _, ok := c.get(h, tc.epoch, tc.now, tc.ttl); ok != tc.ok {
			t.Errorf("get(epoch %d, now %d) = %v, want %v", tc.epoch, tc.now, ok, tc.ok)
		}
	}
	c.remove(h)
	if _, ok := c.get(h, 7, 150, 100); ok {
		t.Error("removed entry still answers")
	}
}
