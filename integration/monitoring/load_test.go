package monitoring_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
)

// rounds is how many times the load runs: once to create every series
// (Prometheus counts no increase in the first sample of a series), once
// for the increases the rules and the dashboard see.
const rounds = 2

// gatewayCaddyfile is a gateway (/gateway/), a route whose machine secret
// key Clerk does not know (/misconfigured/), both asking Clerk as often as
// the load needs (max_clerk_rate), the metrics (/metrics, served
// by the metrics handler as the README shows for a Prometheus on another
// host), and, for each round, two calling ends (/call/<n>/) that mint JWTs
// of the caller machine and call the gateway with them. Each calling end
// has a lifetime of its own, so that each has a token source of its own: a
// source paces mints after one failed, and each round needs a fresh
// failure and a fresh success.
func gatewayCaddyfile(p caddyproc.Ports) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{
	admin 127.0.0.1:%d
	http_port %d
	metrics
}

http://127.0.0.1:%d {
	handle /gateway/* {
		clerk_m2m {
			secret_key {env.FAKE_CLERK_SECRET_KEY}
			machine_secret_key {env.GATEWAY_MACHINE_SECRET_KEY}
			api_url {env.FAKE_CLERK_URL}
			require_scopes {env.GATEWAY_MACHINE_ID}
			timeout 2s
			max_clerk_rate 1000
		}
		respond "through"
	}
	handle /misconfigured/* {
		clerk_m2m {
			machine_secret_key ak_00000000000000000000000000000000
			api_url {env.FAKE_CLERK_URL}
			max_clerk_rate 1000
		}
		respond "never"
	}
	handle /metrics {
		metrics
	}
`, p.Admin, p.HTTP, p.HTTP)
	for source := 1; source <= 2*rounds; source++ {
		fmt.Fprintf(&b, `	handle /call/%d/* {
		rewrite * /gateway/called
		clerk_m2m_token {
			machine_secret_key {env.CALLER_MACHINE_SECRET_KEY}
			api_url {env.FAKE_CLERK_URL}
			format jwt
			ttl %dm
		}
		reverse_proxy 127.0.0.1:%d
	}
`, source, 30+source, p.HTTP)
	}
	b.WriteString("}\n")
	return b.String()
}

// fixture is the fake Clerk, its machines, and the Caddy in front of them.
type fixture struct {
	t        *testing.T
	clerk    *backendtest.Server
	gateway  *backendtest.Machine // the machine the gateway stands for
	caller   *backendtest.Machine // granted access to the gateway
	outsider *backendtest.Machine // granted nothing
	caddy    *caddyproc.Process
	client   *http.Client
}

func startFixture(t *testing.T) *fixture {
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	f := &fixture{
		t:        t,
		clerk:    clerk,
		gateway:  clerk.NewMachine("gateway"),
		caller:   clerk.NewMachine("caller"),
		outsider: clerk.NewMachine("outsider"),
		client:   &http.Client{Timeout: 10 * time.Second},
	}
	clerk.GrantScopes(f.caller, f.gateway.ID)
	f.caddy = caddyproc.Start(t, gatewayCaddyfile,
		"FAKE_CLERK_SECRET_KEY="+clerk.SecretKey(),
		"FAKE_CLERK_URL="+clerk.URL,
		"GATEWAY_MACHINE_SECRET_KEY="+f.gateway.SecretKey,
		"GATEWAY_MACHINE_ID="+f.gateway.ID,
		"CALLER_MACHINE_SECRET_KEY="+f.caller.SecretKey)
	return f
}

// request is one call through Caddy and the status it must get.
type request struct {
	path   string
	token  string // sent as a Bearer token; "" sends no Authorization
	status int
}

// runLoad runs round round of the load, with n requests of each kind:
// accepted, refused for each reason of the caller's, refused because
// Clerk fails, rate-limits or rejects the key, a key rotation, and a
// failed and a successful mint. Every request must get the status its
// kind calls for.
func (f *fixture) runLoad(round, n int) {
	f.t.Helper()
	opaque, _ := f.clerk.CreateM2MToken(f.caller, backendtest.TokenOptions{Scopes: []string{f.gateway.ID}})
	f.repeat(n, request{"/gateway/opaque", opaque, http.StatusOK})
	f.repeat(n, request{"/gateway/jwt", f.jwt(f.caller, time.Hour), http.StatusOK})
	f.repeat(n, request{"/gateway/missing", "", http.StatusUnauthorized})
	f.each(n, func() request { return request{"/gateway/forged", "mt_" + randomHex(16), http.StatusUnauthorized} })
	f.repeat(n, request{"/gateway/expired", f.jwt(f.caller, -time.Hour), http.StatusUnauthorized})
	f.each(n, func() request { return request{"/gateway/oauth", "oat_" + randomHex(16), http.StatusUnauthorized} })
	f.repeat(n, request{"/gateway/unscoped", f.jwt(f.outsider, time.Hour), http.StatusForbidden})
	f.withFault(backendtest.Fault{Path: "/m2m_tokens/verify", Status: http.StatusServiceUnavailable}, func() {
		f.each(n, f.freshOpaque("/gateway/clerk-down", http.StatusServiceUnavailable))
	})
	f.withFault(backendtest.Fault{Path: "/m2m_tokens/verify", Status: http.StatusTooManyRequests, RetryAfter: "1"}, func() {
		f.each(n, f.freshOpaque("/gateway/clerk-busy", http.StatusServiceUnavailable))
	})
	// After a 429 the gateway calls Clerk again once its Retry-After has
	// passed: until then, the rotation below could not be fetched.
	next := f.freshOpaque("/gateway/after-pause", http.StatusOK)
	require.Eventually(f.t, func() bool { return f.send(next()) == nil }, 30*time.Second, 50*time.Millisecond,
		"the gateway calls Clerk again after the 429's Retry-After")
	f.each(n, f.freshOpaque("/misconfigured/", http.StatusInternalServerError))

	// A new signing key: the gateway fetches the keys again for it.
	f.clerk.RotateKey(true)
	f.repeat(1, request{"/gateway/rotated", f.jwt(f.caller, time.Hour), http.StatusOK})

	failing, succeeding := 2*round-1, 2*round
	f.withFault(backendtest.Fault{Path: "/m2m_tokens", Status: http.StatusServiceUnavailable, Times: 1}, func() {
		f.repeat(1, request{fmt.Sprintf("/call/%d/", failing), "", http.StatusServiceUnavailable})
	})
	f.repeat(1, request{fmt.Sprintf("/call/%d/", succeeding), "", http.StatusOK})
}

// jwt mints an M2M JWT of m expiring in ttl, with the gateway among its
// scopes when m is the caller.
func (f *fixture) jwt(m *backendtest.Machine, ttl time.Duration) string {
	var scopes []string
	if m == f.caller {
		scopes = []string{f.gateway.ID}
	}
	return f.clerk.MintM2MJWT(m, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{Scopes: scopes, TTL: ttl}})
}

// freshOpaque makes requests with a valid opaque token each, never seen
// before, so that none is answered from the gateway's cache.
func (f *fixture) freshOpaque(path string, status int) func() request {
	return func() request {
		token, _ := f.clerk.CreateM2MToken(f.caller, backendtest.TokenOptions{Scopes: []string{f.gateway.ID}})
		return request{path, token, status}
	}
}

func (f *fixture) withFault(fault backendtest.Fault, run func()) {
	f.clerk.SetFault(fault)
	defer f.clerk.ClearFaults()
	run()
}

// repeat sends r n times: once first, so that the others find the
// credential in the gateway's cache.
func (f *fixture) repeat(n int, r request) {
	f.t.Helper()
	same := func() request { return r }
	f.each(1, same)
	f.each(n-1, same)
}

// loadWorkers is how many requests of one kind are in flight at once.
const loadWorkers = 4

// each sends n requests made by next, a few at a time, and checks their
// statuses.
func (f *fixture) each(n int, next func() request) {
	f.t.Helper()
	requests := make(chan request, n)
	for range n {
		requests <- next()
	}
	close(requests)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range loadWorkers {
		wg.Go(func() {
			for r := range requests {
				errs <- f.send(r)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) send(r request) error {
	req, err := http.NewRequest(http.MethodGet, f.caddy.URL()+r.path, nil)
	if err != nil {
		return err
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %v", r.path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != r.status {
		return fmt.Errorf("GET %s: status %d, want %d", r.path, resp.StatusCode, r.status)
	}
	return nil
}

func randomHex(bytes int) string {
	b := make([]byte, bytes)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
