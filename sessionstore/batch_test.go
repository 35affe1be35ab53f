package sessionstore

import (
	"bufio"
	"bytes"
	"sync"
	"testing"
	"time"
)

// lookupOn sends one lookup of id to node i through the batcher.
func (f *fixture) lookupOn(i int, id string) ([2]*metaItem, error) {
	var got [2]*metaItem
	var killed bool
	err := f.s.metaPiped(f.s.nodes[i], f.s.lookupReads(nil, id), func(r *bufio.Reader) error {
		return readLookup(r, &got, &killed)
	})
	return got, err
}

// Lookups that reach a node while one is in flight go together in the next
// exchange, and each gets its own answers: a session stored with its own
// value, nothing for an unknown id.
func TestLookupsShareOneExchange(t *testing.T) {
	f := setup(t, 3, func(o *Options) { o.Timeout = 5 * time.Second; o.VerifyTTL = -1 })
	const queued = 40
	ids := make([]string, queued+1)
	for k := range ids {
		ids[k] = newID(t)
		if k%2 == 0 { // every other one is unknown
			f.set(0, ids[k], []byte("n|i:"+ids[k]+";"), 0, 1440)
		}
	}
	b := &f.s.nodes[0].batch
	calls0, exchanges0 := b.calls.Load(), b.exchanges.Load()

	f.mc.Pause(0) // the first lookup's exchange waits for the node
	t.Cleanup(func() { f.mc.Resume(0) })
	results := make([][2]*metaItem, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	ask := func(k int) { wg.Go(func() { results[k], errs[k] = f.lookupOn(0, ids[k]) }) }
	ask(0)
	waitFor(t, "the first exchange in flight", func() bool { return b.exchanges.Load() == exchanges0+1 })
	for k := 1; k <= queued; k++ {
		ask(k)
	}
	waitFor(t, "the other lookups to queue", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.waiting) == queued
	})
	f.mc.Resume(0)
	wg.Wait()

	if got := b.exchanges.Load() - exchanges0; got != 2 {
		t.Errorf("%d lookups took %d exchanges, want 2 (the first alone, then the rest together)", len(ids), got)
	}
	if got := b.calls.Load() - calls0; got != uint64(len(ids)) {
		t.Errorf("exchanges carried %d lookups, want %d", got, len(ids))
	}
	for k, id := range ids {
		data := results[k][0]
		switch {
		case errs[k] != nil:
			t.Errorf("lookup %d: %v", k, errs[k])
		case k%2 == 1 && data != nil:
			t.Errorf("lookup %d of an unknown id found %q", k, data.Value)
		case k%2 == 0 && (data == nil || !bytes.Equal(data.Value, []byte("n|i:"+id+";"))):
			t.Errorf("lookup %d got %+v, want its own session's value", k, data)
		}
	}

	// And through Check, all at once.
	verdicts := make([]Verdict, len(ids))
	for k := range ids {
		wg.Go(func() { verdicts[k] = f.s.Check(t.Context(), ids[k]).Verdict })
	}
	wg.Wait()
	for k, v := range verdicts {
		want := Unknown
		if k%2 == 0 {
			want = Repaired // onto nodes 1 and 2
		}
		if v != want {
			t.Errorf("Check of id %d = %v, want %v", k, v, want)
		}
	}
}

// A lookup that queued behind an exchange to a hung node returns with that
// exchange's timeout, not after another Timeout of its own: the store's
// bound on a hung node holds for every lookup, within twice Timeout.
func TestQueuedLookupsKeepTheirTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	f := setup(t, 3, func(o *Options) { o.Timeout = timeout; o.RestartHold = -1 })
	b := &f.s.nodes[1].batch
	exchanges0 := b.exchanges.Load()
	f.mc.Pause(1)
	t.Cleanup(func() { f.mc.Resume(1) })

	var wg sync.WaitGroup
	first := make(chan error, 1)
	wg.Go(func() {
		_, err := f.lookupOn(1, newID(t))
		first <- err
	})
	waitFor(t, "the first exchange in flight", func() bool { return b.exchanges.Load() == exchanges0+1 })
	time.Sleep(timeout / 4) // the queued ones ask well after it began
	took := make([]time.Duration, 8)
	errs := make([]error, len(took))
	for k := range took {
		wg.Go(func() {
			start := time.Now()
			_, errs[k] = f.lookupOn(1, newID(t))
			took[k] = time.Since(start)
		})
	}
	wg.Wait()
	if err := <-first; !isTimeout(err) {
		t.Errorf("first lookup: %v, want a timeout", err)
	}
	for k, d := range took {
		if !isTimeout(errs[k]) {
			t.Errorf("queued lookup %d: %v, want a timeout", k, errs[k])
		}
		// Sent in an exchange of their own they would take about 1.75 ×:
		// what was left of the first exchange, then a whole Timeout.
		if d > timeout*3/2 {
			t.Errorf("queued lookup %d took %v, want about Timeout (%v)", k, d, timeout)
		}
	}
}
