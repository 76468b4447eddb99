package backendtest

import "time"

// Fault makes the fake misbehave the way a real network or Clerk sometimes
// does. Set it with SetFault. The request is recorded first, then the fault
// applies in this order: Delay; Hang; the answer (Status, else Garbage, else
// Body, else the normal answer); and finally how it is written
// (ContentType, Truncated, SlowBody).
type Fault struct {
	// Path selects the route, normalised as for Server.Calls (e.g.
	// "/m2m_tokens/verify" also covers "/v1/m2m_tokens/verify"); "" applies
	// to every request that has no fault of its own.
	Path string
	// Credential narrows the fault to the verify requests for one
	// credential: the opaque token, API key secret or OAuth access token
	// named in the request body. Faults for a credential come before those
	// for a route, so that each credential of a test can meet its own
	// answer from Clerk while others get the normal one.
	Credential string
	// Status answers with this HTTP status (e.g. 500, 502, 503, 429) and a
	// Clerk error body.
	Status int
	// RetryAfter is sent as the Retry-After header along with Status.
	RetryAfter string
	// Hang never answers: the request blocks until the client gives up or
	// the fake is closed, and then the connection is cut.
	Hang bool
	// Delay waits this long before answering.
	Delay time.Duration
	// Garbage answers 200 with Content-Type application/json and a body that
	// is not JSON.
	Garbage bool
	// Truncated sends only the first half of the body, with a matching
	// Content-Length, so the response is complete but the JSON is not.
	Truncated bool
	// ContentType replaces the Content-Type header of the answer.
	ContentType string
	// SlowBody writes the body one byte at a time, flushing each and pausing
	// this long between bytes.
	SlowBody time.Duration
	// Body answers 200 with exactly this body, e.g.
	// `{"object":"machine_to_machine_token"}` or `{"keys":[]}`.
	Body string
	// Times applies the fault to this many requests and then clears it;
	// 0 keeps it until ClearFaults or a SetFault for the same Path.
	Times int
}

// faultKey is what a fault applies to: a route ("" for every route) and a
// credential ("" for every request).
type faultKey struct{ path, credential string }

// SetFault installs f, replacing any fault for the same Path and
// Credential.
func (s *Server) SetFault(f Fault) {
	f.Path = normaliseRoute(f.Path)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[faultKey{f.Path, f.Credential}] = f
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.faults)
}

// takeFault returns the fault for one request to path naming credential
// (the zero Fault when there is none), the most specific first, and counts
// it against the fault's Times.
func (s *Server) takeFault(path, credential string) Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := []faultKey{{path, ""}, {"", ""}}
	if credential != "" {
		keys = append([]faultKey{{path, credential}, {"", credential}}, keys...)
	}
	for _, k := range keys {
		f, ok := s.faults[k]
		if !ok {
			continue
		}
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				delete(s.faults, k)
			} else {
				s.faults[k] = f
			}
		}
		return f
	}
	return Fault{}
}
