//go:build !race

package limits

const sprayN = 1_000_000
