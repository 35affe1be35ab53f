package sockio

import "runtime"

// OneP reports whether one P runs every goroutine of the process
// (GOMAXPROCS 1). h1 and upstream read it once, when a server or upstream
// is made, to decide whether to yield before each write (their
// GatherWrites): the requests ready to run then reach their writes first,
// the writes go out together, and a backend or client asleep in its poll
// is woken once for them rather than once each (bench/profiles.md,
// "Waking the receiver"). With more Ps there is no batch to join: Gosched
// puts the goroutine on the global queue and wakes an idle P to take it,
// a thread wake per write.
func OneP() bool { return runtime.GOMAXPROCS(0) == 1 }
