package integration

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

var concurrencyCaddyfile = globals("") + `
http://{{GATEWAY}} {
	handle /machine/* {
		clerk_m2m {
			secret_key {{SECRET}}
			machine_secret_key {{GATEWAY_KEY}}
			api_url {{CLERK}}
		}
		respond "through"
	}
}
`

func TestClerkIsCalledOncePerOpaqueToken(t *testing.T) {
	e := start(t, concurrencyCaddyfile)
	granted := backendtest.TokenOptions{Scopes: []string{e.gateway.ID}, TTL: time.Hour}

	// A slow Clerk makes the 100 requests really overlap.
	e.clerk.SetFault(backendtest.Fault{Path: "/m2m_tokens/verify", Delay: 200 * time.Millisecond})
	token, _ := e.clerk.CreateM2MToken(e.caller, granted)
	statuses := e.burst("/machine/x", func(int) string { return token }, 100)
	assert.Equal(t, map[int]int{http.StatusOK: 100}, statuses)
	assert.Equal(t, 1, e.clerk.Calls("/m2m_tokens/verify"), "100 concurrent requests, one call")
	e.clerk.ClearFaults()

	second, _ := e.clerk.CreateM2MToken(e.caller, granted)
	for range 50 {
		resp, _ := e.bearer("/machine/x", second)
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	assert.Equal(t, 2, e.clerk.Calls("/m2m_tokens/verify"), "50 sequential requests within the TTL, one call")
}

func TestKeyRotationAndMadeUpKids(t *testing.T) {
	e := start(t, concurrencyCaddyfile)
	require.Eventually(t, func() bool { return e.clerk.Calls("/v1/jwks") == 1 }, 5*time.Second, 10*time.Millisecond)
	granted := backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{Scopes: []string{e.gateway.ID}, TTL: time.Hour}}

	e.clerk.RotateKey(false)
	e.clerk.SetFault(backendtest.Fault{Path: "/v1/jwks", Delay: 100 * time.Millisecond})
	rotated := make([]string, 100)
	for i := range rotated {
		rotated[i] = e.clerk.MintM2MJWT(e.caller, granted)
	}
	statuses := e.burst("/machine/x", func(i int) string { return rotated[i] }, 100)
	assert.Equal(t, map[int]int{http.StatusOK: 100}, statuses, "every token of the new key verifies")
	fetches := e.clerk.Calls("/v1/jwks") - 1
	assert.LessOrEqual(t, fetches, 2, "100 concurrent requests with a rotated key")
	e.clerk.ClearFaults()

	before := e.clerk.Calls("/v1/jwks")
	statuses = e.burst("/machine/x", func(i int) string {
		return e.clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{Header: map[string]any{"kid": fmt.Sprintf("ins_madeup%d", i)}})
	}, 200)
	assert.Equal(t, map[int]int{http.StatusUnauthorized: 200}, statuses)
	assert.LessOrEqual(t, e.clerk.Calls("/v1/jwks")-before, 3, "200 made-up kids cost a bounded handful of fetches")
	t.Logf("JWKS fetches: %d for the rotation, %d for 200 made-up kids", fetches, e.clerk.Calls("/v1/jwks")-before)
}
