//go:build race

package proxy

// raceEnabled: the race detector makes sync.Pool drop a random quarter of
// what is put back, so pooled buffers are sometimes allocated anew.
const raceEnabled = true
