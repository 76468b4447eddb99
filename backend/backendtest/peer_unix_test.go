//go:build unix

package backendtest

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestClosedByPeer asks the kernel about a connection: open while the
// other end has sent nothing, or something still unread, and closed once
// it hangs up, before the end is read.
func TestClosedByPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	server, err := ln.Accept()
	require.NoError(t, err)
	defer server.Close()

	assert.False(t, closedByPeer(server), "nothing sent")
	_, err = client.Write([]byte("GET"))
	require.NoError(t, err)
	assert.False(t, closedByPeer(server), "something sent, unread")
	buf := make([]byte, 3)
	n, err := server.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "GET", string(buf[:n]), "the peek read nothing")

	require.NoError(t, client.Close())
	require.Eventually(t, func() bool { return closedByPeer(server) }, 5*time.Second, time.Millisecond)
}
