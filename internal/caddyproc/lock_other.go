//go:build !unix

package caddyproc

import "os"

// lockFile locks nothing where flock is not.
func lockFile(*os.File) error { return nil }
