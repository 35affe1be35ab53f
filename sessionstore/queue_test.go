package sessionstore

import "testing"

// TestEnterQueue: past max in flight, requests queue in order up to
// maxQueue; Release hands the slot to the first waiter, Leave takes a waiter
// out unless it was handed a slot, and the counts follow.
func TestEnterQueue(t *testing.T) {
	s, err := New(Options{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	const id = "3vdj8srh32rjq4kfeitc4hk4l5"
	if ok, _ := s.Enter(id, 1, 2, nil); !ok {
		t.Fatal("first request not admitted")
	}
	if ok, q := s.Enter(id, 1, 2, nil); ok || q {
		t.Fatal("second request admitted, or queued without a waiter")
	}
	w1, w2, w3 := NewWaiter(), NewWaiter(), NewWaiter()
	for _, w := range []*Waiter{w1, w2} {
		if ok, q := s.Enter(id, 1, 2, w); ok || !q {
			t.Fatalf("waiter: admitted %v queued %v, want queued", ok, q)
		}
	}
	if _, q := s.Enter(id, 1, 2, w3); q {
		t.Fatal("queued past maxQueue")
	}
	if ok, _ := s.Enter(id, 0, 0, nil); !ok {
		t.Fatal("max 0 (bypass) not admitted at once")
	}
	s.End(id) // the bypass request: no slot of the queue's
	select {
	case <-w1.Ready():
		t.Fatal("the end of a request not counted against max handed a slot over")
	default:
	}
	s.Release(id) // the first request: its slot passes to w1
	if sess, n := s.Queued(); sess != 1 || n != 1 {
		t.Fatalf("Queued() = %d, %d; want 1 session, 1 waiter", sess, n)
	}
	select {
	case <-w1.Ready():
	default:
		t.Fatal("Release did not hand the slot to the first waiter")
	}
	if s.Leave(id, w1) {
		t.Fatal("Leave took out a waiter that already had its slot")
	}
	if !s.Leave(id, w2) {
		t.Fatal("Leave did not find a queued waiter")
	}
	if sess, n := s.Queued(); sess != 0 || n != 0 {
		t.Fatalf("Queued() = %d, %d after the queue emptied", sess, n)
	}
	s.Release(id) // w1's
	if f, ok := s.inflight.get(s.cache.hash(id)); ok {
		t.Fatalf("record left after every request ended: %+v", f)
	}
}
