//go:build race

package limits

// The race detector makes the spray 15 times slower: a quarter million
// distinct clients still overflow the table four times.
const sprayN = 250_000
