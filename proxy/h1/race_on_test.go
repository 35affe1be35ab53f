//go:build race

package h1

// raceEnabled: under the race detector crypto/tls allocates more per
// record (halfConn.encrypt, and its record buffer pool, which drops what
// is put back now and then).
const raceEnabled = true
