package backendtest

import (
	"context"
	"encoding/json"
	"io"
	"log"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxBodyBytes bounds how much of a request body the fake reads and records.
const maxBodyBytes = 1 << 20

// Server is a running fake of Clerk's Backend API on 127.0.0.1. All its
// methods are safe for concurrent use. Create it with New and stop it with
// Close.
type Server struct {
	// URL is the base URL of the fake, e.g. "http://127.0.0.1:41234", with no
	// trailing slash. Use it as the Clerk API URL of the code under test.
	URL string

	srv        *httptest.Server
	routes     map[string]route
	closing    chan struct{} // closed by Close to release hanging handlers
	closeOnce  sync.Once
	secretKey  string
	instanceID string
	clientID   string // the OAuth application's client id
	userID     string // the user who approves authorizations

	mu          sync.Mutex
	clock       func() time.Time
	keys        []signingKey // the last one is the current signing key
	extraJWKs   []json.RawMessage
	grants      map[string][]string     // machine id → the machine ids it may call
	machineKeys map[string]string       // machine secret key → machine id
	records     map[string]*tokenRecord // by secret: opaque token or API key
	recordIDs   map[string]*tokenRecord // by id
	requests    []Request
	faults      map[faultKey]Fault

	authorization AuthorizationOptions
	oauthClients  map[string]*oauthClient       // registered, by client id
	codes         map[string]*authorizationCode // handed out, not yet exchanged

	load *load
}

// route is what serves one normalised path.
type route struct {
	method string
	handle func(*call) reply
}

// call is one request being answered.
type call struct {
	r       *http.Request
	body    []byte
	traceID string
}

// reply is an answer before faults shape how it is written.
type reply struct {
	status int
	body   []byte
	header http.Header // beyond those every answer has
}

// New starts a fake with a fresh instance: an instance id, an instance
// secret key, one RSA-2048 signing key whose kid is the instance id and one
// OAuth application (see OAuthClientID).
func New() *Server {
	instanceID := "ins_" + randomString(alphanumerics, 27)
	s := &Server{
		closing:     make(chan struct{}),
		secretKey:   "sk_test_" + randomString(alphanumerics, 40),
		instanceID:  instanceID,
		clientID:    "client_" + randomString(alphanumerics, 27),
		userID:      "user_" + randomString(alphanumerics, 27),
		keys:        []signingKey{newSigningKey(instanceID)},
		grants:      make(map[string][]string),
		machineKeys: make(map[string]string),
		records:     make(map[string]*tokenRecord),
		recordIDs:   make(map[string]*tokenRecord),
		faults:      make(map[faultKey]Fault),
		load:        newLoad(),

		oauthClients: make(map[string]*oauthClient),
		codes:        make(map[string]*authorizationCode),
	}
	s.routes = map[string]route{
		"/m2m_tokens/verify": {http.MethodPost, s.verifyRoute(m2mVerifier)},
		"/m2m_tokens":        {http.MethodPost, s.createToken},
		"/api_keys/verify":   {http.MethodPost, s.verifyRoute(apiKeyVerifier)},
		"/oauth_applications/access_tokens/verify": {http.MethodPost, s.verifyRoute(oauthVerifier)},
		"/v1/jwks":               {http.MethodGet, s.privateJWKS},
		"/.well-known/jwks.json": {http.MethodGet, s.publicJWKS},

		"/.well-known/oauth-authorization-server": {http.MethodGet, s.authorizationServerMetadata},
		"/oauth/register":                         {http.MethodPost, s.registerClient},
		"/oauth/authorize":                        {http.MethodGet, s.approve},
		"/oauth/token":                            {http.MethodPost, s.exchangeCode},
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	// Faults deliberately break connections; that is not worth logging.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.Config.ConnState = s.load.connState
	s.srv.Config.ConnContext = withConn
	s.srv.Start()
	s.URL = s.srv.URL
	return s
}

// Close stops the fake. Requests held by a Hang, Delay or SlowBody fault are
// cut off first, so Close never waits for them.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
	s.srv.Close()
}

// CloseClientConnections closes every connection to the fake, idle or
// not, as a restart of Clerk's front end would: a client's next request
// opens a new one. A test that measures what a client holds at rest (its
// goroutines, say) can leave its pool of idle connections out this way.
func (s *Server) CloseClientConnections() { s.srv.CloseClientConnections() }

// SecretKey returns the instance secret key ("sk_test_…"), the equivalent of
// CLERK_SECRET_KEY.
func (s *Server) SecretKey() string { return s.secretKey }

// InstanceID returns the instance id ("ins_" and 27 alphanumerics), which is
// also the kid of the first signing key.
func (s *Server) InstanceID() string { return s.instanceID }

// SetClock makes the fake read the time from now, for token expiry, the
// timestamps it reports and the claims of minted JWTs. nil restores
// time.Now.
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock = now
}

func (s *Server) now() time.Time {
	s.mu.Lock()
	clock := s.clock
	s.mu.Unlock()
	if clock == nil {
		return time.Now()
	}
	return clock()
}

// Request is one request the fake received.
type Request struct {
	Method string
	Path   string // the URL path as sent, e.g. "/m2m_tokens/verify"
	Header http.Header
	Body   []byte
}

// Requests returns a copy of every request received since New or the last
// ResetCalls, in arrival order. Requests are recorded before any fault
// applies, so even requests that were answered with a fault are included.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	for i, r := range s.requests {
		out[i] = Request{Method: r.Method, Path: r.Path, Header: r.Header.Clone(), Body: append([]byte(nil), r.Body...)}
	}
	return out
}

// Calls returns how many requests, of any method, reached path since New or
// the last ResetCalls. Paths are normalised the way the fake routes them, so
// "/m2m_tokens/verify" and "/v1/m2m_tokens/verify" count together (ask for
// either), and so do "/api_keys/verify" and
// "/oauth_applications/access_tokens/verify" with their "/v1" forms; the
// JWKS routes are "/v1/jwks" and "/.well-known/jwks.json".
func (s *Server) Calls(path string) int {
	want := normaliseRoute(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if normaliseRoute(r.Path) == want {
			n++
		}
	}
	return n
}

// ResetCalls forgets all recorded requests, resetting both Calls and
// Requests.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// unversioned are the route families that Clerk's JS SDK calls without
// "/v1" and the Go SDK with it.
var unversioned = []string{"/m2m_tokens", "/api_keys", "/oauth_applications"}

// normaliseRoute maps the versioned machine routes onto the unversioned ones.
func normaliseRoute(path string) string {
	rest, ok := strings.CutPrefix(path, "/v1")
	if !ok {
		return path
	}
	for _, family := range unversioned {
		if rest == family || strings.HasPrefix(rest, family+"/") {
			return rest
		}
	}
	return path
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	defer s.load.started(r)()
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes))
	path := normaliseRoute(r.URL.Path)
	s.record(r, body)
	c := &call{r: r, body: body, traceID: randomString(hexDigits, 32)}

	f := s.takeFault(path, credentialOf(body))
	if f.Delay > 0 && !s.wait(r.Context(), time.After(f.Delay)) {
		panic(http.ErrAbortHandler)
	}
	if f.Hang {
		s.wait(r.Context(), nil)
		// Abort rather than return, which would send an empty 200.
		panic(http.ErrAbortHandler)
	}
	s.send(w, c, s.answer(c, path, f), f)
}

func (s *Server) record(r *http.Request, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
}

// answer decides the status and body: the fault's, or the route's.
func (s *Server) answer(c *call, path string, f Fault) reply {
	switch {
	case f.Status != 0:
		return c.fail(f.Status, statusError(f.Status))
	case f.Garbage:
		return reply{status: http.StatusOK, body: []byte("<html><body>this is not JSON</body></html>")}
	case f.Body != "":
		return reply{status: http.StatusOK, body: []byte(f.Body)}
	}
	rt, ok := s.routes[path]
	switch {
	case !ok:
		return c.fail(http.StatusNotFound, errNotFound)
	case c.r.Method != rt.method:
		return c.fail(http.StatusMethodNotAllowed, errMethodNotAllowed)
	}
	return rt.handle(c)
}

// send writes the reply, shaped by the fault's ContentType, RetryAfter,
// Truncated and SlowBody.
func (s *Server) send(w http.ResponseWriter, c *call, rep reply, f Fault) {
	h := w.Header()
	for name, values := range rep.header {
		h[name] = values
	}
	h.Set("Content-Type", "application/json")
	if f.ContentType != "" {
		h.Set("Content-Type", f.ContentType)
	}
	h.Set("Clerk-Trace-Id", c.traceID)
	if f.Status != 0 && f.RetryAfter != "" {
		h.Set("Retry-After", f.RetryAfter)
	}
	body := rep.body
	if f.Truncated {
		body = body[:len(body)/2]
	}
	if f.SlowBody <= 0 {
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rep.status)
		_, _ = w.Write(body)
		return
	}
	w.WriteHeader(rep.status)
	rc := http.NewResponseController(w)
	for i := range body {
		if i > 0 && !s.wait(c.r.Context(), time.After(f.SlowBody)) {
			panic(http.ErrAbortHandler)
		}
		if _, err := w.Write(body[i : i+1]); err != nil {
			return
		}
		_ = rc.Flush()
	}
}

// wait blocks until done fires (never, if done is nil) and reports whether it
// did; it gives up early when the client goes away (counted in Load) or
// the fake is closed.
func (s *Server) wait(ctx context.Context, done <-chan time.Time) bool {
	select {
	case <-done:
		return true
	case <-ctx.Done():
		s.load.abandon()
	case <-s.closing:
	}
	return false
}

const (
	alphanumerics = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	hexDigits     = "0123456789abcdef"
)

// randomString draws n characters of alphabet. math/rand/v2's global source
// is seeded from the operating system, which is unpredictable enough for the
// ids and keys of a test fake.
func randomString(alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[mrand.IntN(len(alphabet))]
	}
	return string(b)
}
