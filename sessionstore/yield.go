package sessionstore

import (
	"os"
	"runtime"
)

// pollYield lets requests in between the chunks of a long CPU-bound loop
// (a metadump's parsing: 300 000 lines take 0.2 s of CPU) when one P runs
// the process, the bench's setting and that of an operator who gives each
// instance one core.
//
// Why a pipe: runtime.Gosched puts the caller back on the run queue, and
// the scheduler polls the network only when the run queues are empty or
// when its monitor thread finds it unpolled for 10 ms. A request that
// arrived during a scan that only called Gosched waited for that monitor
// every time it needed the network: a p99 of 19-20 ms (bench/profiles.md,
// "The inventory scan"). A sleep does let the scheduler poll, but the
// poller's timeout granularity is a millisecond, so each sleep lasted one
// and the scan five times as long. Yield instead parks the caller on a
// pipe's read and has a helper goroutine write one byte to it: the caller
// is woken by the network poller, which hands the scheduler every request
// that became ready meanwhile in the same poll.
//
// With more than one P the write may come before the read, and Yield
// returns at once: other Ps serve requests then. If the pipe cannot be
// made, Yield is runtime.Gosched.
type pollYield struct {
	r, w *os.File
	kick chan struct{}
	done chan struct{}
	b    [1]byte
}

// newPollYield starts a pollYield's helper goroutine; Close stops it.
func newPollYield() *pollYield {
	y := &pollYield{}
	r, w, err := os.Pipe()
	if err != nil {
		return y
	}
	y.r, y.w = r, w
	y.kick, y.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(y.done)
		one := []byte{0}
		for range y.kick {
			if _, err := w.Write(one); err != nil {
				return
			}
		}
	}()
	return y
}

// Yield returns after the runtime has polled the network once (see
// pollYield).
func (y *pollYield) Yield() {
	if y.r == nil {
		runtime.Gosched()
		return
	}
	select {
	case y.kick <- struct{}{}:
	case <-y.done: // the helper's write failed: no byte is coming
		runtime.Gosched()
		return
	}
	if _, err := y.r.Read(y.b[:]); err != nil {
		runtime.Gosched()
	}
}

// Close stops the helper and closes the pipe.
func (y *pollYield) Close() {
	if y.r == nil {
		return
	}
	close(y.kick)
	y.r.Close() // first: a write blocked on a full pipe then fails
	<-y.done
	y.w.Close()
}
