//go:build unix

package caddyproc

import (
	"os"
	"syscall"
)

// lockFile waits for an exclusive lock on f, held until f is closed.
func lockFile(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }
