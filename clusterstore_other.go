//go:build !unix

package clerkm2m

// openNoFollowNoBlock: elsewhere, the flags do not exist; the file's type
// and size are checked once it is open.
const openNoFollowNoBlock = 0
