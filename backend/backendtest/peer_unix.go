//go:build unix

package backendtest

import (
	"errors"
	"net"
	"syscall"
)

// closedByPeer reports whether the other end has closed conn, as far as
// the kernel knows: a peek at the socket finds its end (or a reset), not
// data or nothing yet. It reads nothing; an end behind data still unread
// cannot be seen, and the connection counts as open.
func closedByPeer(conn net.Conn) bool {
	tcp, ok := conn.(*net.TCPConn)
	if !ok {
		return false
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return true // closed here already
	}
	closed := false
	var buf [1]byte
	// Control, not Read: the server's own read of the connection holds the
	// read lock while it waits, and a peek that does not wait needs none.
	err = raw.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		waiting := errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EINTR)
		closed = err == nil && n == 0 || err != nil && !waiting
	})
	return closed || err != nil
}
