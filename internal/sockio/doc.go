// Package sockio reads and writes a connection's non-blocking socket
// without the Go scheduler's system-call bookkeeping.
//
// Why: every Read and Write through net.Conn enters the runtime's
// blocking-syscall path, and when the process was idle the scheduler's
// monitor thread (sysmon) is asleep, so that entry wakes it with a futex;
// it then polls every 20 µs for a millisecond before it sleeps again. A
// proxy under moderate load goes idle between requests hundreds of times a
// second and pays that wake-up each time, on the request's path. A read or
// write on a non-blocking socket never blocks, so the bookkeeping (which
// exists to hand the thread's P to another thread while a call blocks) buys
// nothing there. Waiting for readiness stays with the netpoller through
// syscall.RawConn, so deadlines, Close and errors behave as with net.Conn.
//
// Under the race detector the annotated syscall.Read and syscall.Write are
// used instead, so that I/O still orders memory for the detector as it does
// for every other connection.
//
// Only on Linux: elsewhere Wrap returns the connection as it is. Callers
// that want net.Conn's own I/O on Linux too (the server.sockio switch) do
// not call Wrap.
package sockio
