package backendtest

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// Load is what the fake has been asked to carry at once, since New or the
// last ResetLoad: to test that a client bounds its calls and connections,
// and cancels the calls it no longer needs.
type Load struct {
	// Requests and Connections are being answered, and open, now.
	Requests, Connections int
	// PeakRequests and PeakConnections are the most there were at once.
	PeakRequests, PeakConnections int
	// Abandoned counts the requests whose client went away before their
	// answer was written: a client that cancels a call ends its connection.
	Abandoned int
}

// Load returns what the fake carries now and has carried at most. A
// connection, and a request on it, count until the fake sees its end, or
// until the kernel has it closed by the client, whichever comes first: the
// fake's reading of a closed connection may come later than the client's
// next call, which must not count twice.
func (s *Server) Load() Load {
	s.load.mu.Lock()
	defer s.load.mu.Unlock()
	s.load.forgetClosed()
	return Load{
		Requests:        len(s.load.requests),
		Connections:     len(s.load.conns),
		PeakRequests:    s.load.peakRequests,
		PeakConnections: s.load.peakConns,
		Abandoned:       s.load.abandoned,
	}
}

// ResetLoad starts the peaks again from what is carried now, and the count
// of abandoned requests from 0.
func (s *Server) ResetLoad() {
	s.load.mu.Lock()
	defer s.load.mu.Unlock()
	s.load.forgetClosed()
	s.load.peakRequests, s.load.peakConns, s.load.abandoned = len(s.load.requests), len(s.load.conns), 0
}

// load tracks what the fake carries.
type load struct {
	mu           sync.Mutex
	conns        map[net.Conn]struct{}
	requests     map[*http.Request]net.Conn
	peakConns    int
	peakRequests int
	abandoned    int
}

func newLoad() *load {
	return &load{conns: make(map[net.Conn]struct{}), requests: make(map[*http.Request]net.Conn)}
}

// connState follows the fake's connections (http.Server.ConnState).
func (l *load) connState(conn net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch state {
	case http.StateNew:
		l.forgetClosed()
		l.conns[conn] = struct{}{}
		l.peakConns = max(l.peakConns, len(l.conns))
	case http.StateClosed, http.StateHijacked:
		delete(l.conns, conn)
	}
}

// connKey holds, in a request's context, the connection it came on.
type connKey struct{}

// withConn puts a connection in its requests' context (http.Server.ConnContext).
func withConn(ctx context.Context, conn net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, conn)
}

// started counts a request in, and returns what counts it out.
func (l *load) started(r *http.Request) (ended func()) {
	conn, _ := r.Context().Value(connKey{}).(net.Conn)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetClosed()
	l.requests[r] = conn
	l.peakRequests = max(l.peakRequests, len(l.requests))
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.requests, r)
	}
}

// abandon counts a request whose client went away.
func (l *load) abandon() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.abandoned++
}

// forgetClosed forgets the connections, and the requests on them, that the
// kernel knows the client has closed, though the fake has not read it yet.
func (l *load) forgetClosed() {
	for conn := range l.conns {
		if closedByPeer(conn) {
			delete(l.conns, conn)
		}
	}
	for r, conn := range l.requests {
		if conn != nil && closedByPeer(conn) {
			delete(l.requests, r)
		}
	}
}
