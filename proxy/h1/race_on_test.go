//go:build race

package h1

// raceEnabled: the race detector makes sync.Pool drop a random quarter of
// what is put back, so pooled buffers and header maps are sometimes
// allocated anew, and crypto/tls allocates more per record
// (halfConn.encrypt, and its record buffer pool).
const raceEnabled = true
