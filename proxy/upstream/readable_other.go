//go:build !linux

package upstream

// canPeek is false off Linux: stale checks an idle connection with a read
// that fails at once instead of a raw peek at its socket.
const canPeek = false

// readable is never called off Linux (canPeek).
func readable(fd uintptr, b []byte) bool { return true }
