package freeport

import (
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPortsAreDistinctAndFreeOnLoopback(t *testing.T) {
	ports, err := Ports(3)
	require.NoError(t, err)
	require.Len(t, ports, 3)
	assert.Len(t, slices.Compact(slices.Sorted(slices.Values(ports))), 3, "three ports, not one twice")
	for _, port := range ports {
		l, err := net.Listen("tcp", Addr(port))
		require.NoError(t, err, "free")
		assert.True(t, l.Addr().(*net.TCPAddr).IP.IsLoopback())
		l.Close()
	}
}

// TestPortsAreNotOnesAConnectionCouldTake: the ports lie below the range
// the system hands out for the local end of a connection (read from Linux's
// /proc where it can be), so no connection a test makes takes one.
func TestPortsAreNotOnesAConnectionCouldTake(t *testing.T) {
	ephemeralFrom := 32768
	if text, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		from, err := strconv.Atoi(strings.Fields(string(text))[0])
		require.NoError(t, err)
		ephemeralFrom = from
	}
	require.Greater(t, ephemeralFrom, highest, "this system hands out the ports Ports chooses from for connections")
	ports, err := Ports(50)
	require.NoError(t, err)
	for _, port := range ports {
		assert.True(t, port >= lowest && port <= highest, "port %d", port)
	}
}

func TestRetryTriesOtherPortsWhenOneWasTaken(t *testing.T) {
	var tried [][]int
	ports, err := Retry(2, func(ports []int) ([]int, error) {
		tried = append(tried, ports)
		switch len(tried) {
		case 1:
			return nil, errors.New("listen tcp 127.0.0.1: bind: address already in use")
		case 2:
			return nil, errors.New("Could not create server TCP listening socket 127.0.0.1: bind: Address already in use") // Redis
		}
		return ports, nil
	})
	require.NoError(t, err)
	require.Len(t, tried, 3)
	assert.Equal(t, tried[2], ports)
	assert.False(t, slices.Equal(tried[0], tried[1]) && slices.Equal(tried[1], tried[2]), "fresh ports for each try")
}

func TestRetryGivesUpAfterFiveTriesOrAnotherError(t *testing.T) {
	for message, want := range map[string]int{"address already in use": tries, "no such file": 1} {
		calls := 0
		_, err := Retry(1, func([]int) (int, error) {
			calls++
			return 0, errors.New(message)
		})
		assert.EqualError(t, err, message)
		assert.Equal(t, want, calls, message)
	}
}
