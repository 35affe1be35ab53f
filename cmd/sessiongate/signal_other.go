//go:build !unix

package main

import "syscall"

// sigReopen is a signal that never comes: off Unix there is no SIGUSR1, so
// the access log is not reopened on a signal (logrotate is Unix's anyway).
const sigReopen = syscall.Signal(-1)
