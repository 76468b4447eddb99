//go:build unix

package clerkm2m

import "syscall"

// openNoFollowNoBlock opens a file only if it is no symbolic link, and
// without waiting for a writer if it is a pipe.
const openNoFollowNoBlock = syscall.O_NOFOLLOW | syscall.O_NONBLOCK
