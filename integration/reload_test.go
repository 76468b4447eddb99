package integration

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

var reloadCaddyfile = strings.Replace(globals(""), "grace_period 1ns", "grace_period 5s", 1) + `
http://{{GATEWAY}} {
	clerk_m2m {
		secret_key {{SECRET}}
		machine_secret_key {{GATEWAY_KEY}}
		api_url {{CLERK}}
	}
	header X-Generation {{GENERATION}}
	respond "through"
}
`

// TestReloadsKeepKeysWarmAndLeakNothing reloads the configuration 20 times,
// back to back, while requests keep coming, and checks that no
// request fails, that the signing keys are not fetched again, and that no
// goroutine is left behind.
func TestReloadsKeepKeysWarmAndLeakNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("20 reloads under traffic")
	}
	e := newEnv(t)
	clerk, gateway, caller := e.clerk, e.gateway, e.caller
	config := func(generation int) string {
		return strings.ReplaceAll(reloadCaddyfile, "{{GENERATION}}", fmt.Sprint(generation))
	}
	e.load(config(0))

	granted := backendtest.TokenOptions{Scopes: []string{gateway.ID}, TTL: time.Hour}
	jwt := clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: granted})
	opaque, _ := clerk.CreateM2MToken(caller, granted)
	get := func(token string) (int, error) {
		req, _ := http.NewRequest(http.MethodGet, gatewayURL("/"), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := e.client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for _, token := range []string{jwt, opaque} {
		status, err := get(token)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status)
	}
	require.Equal(t, 1, clerk.Calls("/v1/jwks"))
	baseline := e.settledGoroutines()

	// Caddy swaps listening sockets on a reload, so a connection may be
	// reset before a request is answered (plain Caddy does the same); the
	// test's client sends such a request again, as any client would. What
	// must never happen is an answer other than 200.
	resetsBefore := resends(e.client)
	var sent, failed atomic.Int32
	stop := make(chan struct{})
	var traffic sync.WaitGroup
	for _, token := range []string{jwt, opaque} {
		traffic.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				status, err := get(token)
				if err != nil || status != http.StatusOK {
					failed.Add(1)
					t.Logf("request failed during reloads: status %d, error %v", status, err)
				}
			}
		})
	}
	for generation := 1; generation <= 20; generation++ {
		e.reload(config(generation)) // back to back, as an operator might
	}
	close(stop)
	traffic.Wait()

	t.Logf("%d requests during 20 reloads, %d connection resets retried", sent.Load(), resends(e.client)-resetsBefore)
	assert.Zero(t, failed.Load(), "of %d requests sent during the reloads", sent.Load())
	assert.Positive(t, sent.Load())
	assert.Equal(t, 1, clerk.Calls("/v1/jwks"), "the keys stayed warm across 20 reloads")
	after := e.settledGoroutines()
	assert.LessOrEqual(t, after, baseline+2, "goroutines before the reloads: %d, after: %d", baseline, after)

	// Unloading the last configuration that uses the instance stops its
	// refresher and closes its connections to Clerk.
	withoutModule := config(21)
	start := strings.Index(withoutModule, "\tclerk_m2m {")
	end := strings.Index(withoutModule, "\theader X-Generation")
	e.load(withoutModule[:start] + withoutModule[end:])
	unloaded := e.settledGoroutines()
	assert.Less(t, unloaded, after, "goroutines with clerk_m2m: %d, without: %d", after, unloaded)
	t.Logf("goroutines: %d before the reloads, %d after, %d once clerk_m2m is unloaded", baseline, after, unloaded)
}

// TestVerdictsSurviveAReload: the verdicts live with the Clerk instance,
// not the configuration, so a reload whose handler verifies alike answers
// from them (a policy of its own is no part of a verdict); one that
// verifies otherwise does not; and one with other bounds has a cache of
// its own, as large as it says (the cache's bound in bytes is verify's:
// cache_test.go).
func TestVerdictsSurviveAReload(t *testing.T) {
	e := newEnv(t)
	const verify = "/m2m_tokens/verify"
	token := e.fresh()
	for _, tc := range []struct {
		extra string
		calls int // after two requests
	}{
		{"", 1},
		{"require_scopes {{GATEWAY_ID}}", 1}, // the same verdict, another policy
		{"cache_ttl 10s", 2},                 // another verdict: Clerk is asked again
		{"cache_max_bytes 1", 4},             // another cache, which holds no verdict
	} {
		e.load(gatewayWith(tc.extra))
		for range 2 {
			resp, _ := e.bearer("/", token)
			require.Equal(t, http.StatusOK, resp.StatusCode, tc.extra)
		}
		assert.Equal(t, tc.calls, e.clerk.Calls(verify), "calls to Clerk after loading %q", tc.extra)
	}
}
