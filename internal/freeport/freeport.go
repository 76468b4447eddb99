// Package freeport chooses the TCP ports of the servers that tests and
// benchmarks start: on the loopback interface only, at run time.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
)

// Host is the address the ports are free on.
const Host = "127.0.0.1"

// tries bounds Retry's attempts.
const tries = 5

// The ports chosen lie below the range systems hand out for a bind to
// port 0 and for the local end of an outgoing connection (Linux's starts
// at 32768 by default, the BSDs', macOS's and Windows's at 49152): a test
// that makes thousands of connections cannot then take, for one of them,
// a port chosen a moment before for a server.
const lowest, highest = 20000, 32767

// pickTries bounds how many ports Ports tries for each one it returns.
const pickTries = 1000

// Ports returns n distinct ports of Host that nothing listened on a moment
// ago, chosen at random. Another process may take one before the caller
// binds it: see Retry.
func Ports(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		l, err := listenOnSome()
		if err != nil {
			return nil, err
		}
		defer l.Close() // held until all n are chosen, so that they differ
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// listenOnSome listens on a port of Host between lowest and highest that
// nothing listens on.
func listenOnSome() (net.Listener, error) {
	var err error
	for range pickTries {
		var l net.Listener
		if l, err = net.Listen("tcp", Addr(lowest+rand.IntN(highest-lowest+1))); err == nil {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no free port of %s between %d and %d in %d tries: %w", Host, lowest, highest, pickTries, err)
}

// Addr is Host and port, as host:port.
func Addr(port int) string { return net.JoinHostPort(Host, strconv.Itoa(port)) }

// Retry calls start with n ports of Ports, and again with others (five
// tries in all) when start fails because another process took one in
// between: an error that says "address already in use", in any case, as
// Go's and Caddy's errors (which wrap the listener's with %v) and Redis's
// do.
func Retry[T any](n int, start func(ports []int) (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		ports, err := Ports(n)
		if err != nil {
			var none T
			return none, err
		}
		started, err := start(ports)
		if err == nil || attempt == tries || !strings.Contains(strings.ToLower(err.Error()), "address already in use") {
			return started, err
		}
	}
}
