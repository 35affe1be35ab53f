//go:build unix

package main

import "syscall"

// sigReopen reopens the access log file.
const sigReopen = syscall.SIGUSR1
