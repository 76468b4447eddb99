package integration

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

var faultsCaddyfile = globals(debugLog) + `
http://{{GATEWAY}} {
	clerk_m2m {
		secret_key {{SECRET}}
		machine_secret_key {{GATEWAY_KEY}}
		api_url {{CLERK}}
		timeout 500ms
	}
	respond "through"
	handle_errors {
		header X-Clerk-Error {http.auth.clerk_m2m.error}
		respond "refused" {http.error.status_code}
	}
}
`

// startFaults runs Caddy against a fresh fake Clerk on which prepare has
// been applied first (faults already there when the configuration starts).
func startFaults(t *testing.T, prepare ...func(*backendtest.Server)) *env {
	t.Helper()
	e := newEnv(t, prepare...)
	e.load(faultsCaddyfile)
	return e
}

// fresh mints a new opaque token, which no cache has seen.
func (e *env) fresh() string {
	token, _ := e.clerk.CreateM2MToken(e.caller, backendtest.TokenOptions{Scopes: []string{e.gateway.ID}, TTL: time.Hour})
	return token
}

func (e *env) jwt() string {
	return e.clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{Scopes: []string{e.gateway.ID}}})
}

// TestClerkFaultsAndRecovery: Clerk failing, rate-limiting, hanging or
// trickling its answer is a 503 with Retry-After within the timeout, one
// line in the log for the whole burst, and over as soon as Clerk is back.
// (What each of Clerk's answers means is backend's and verify's:
// client_test.go, TestClerkFailures.)
func TestClerkFaultsAndRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("bursts that wait out Clerk's hangs and slow answers")
	}
	e := startFaults(t)
	const verify = "/m2m_tokens/verify"
	for _, tc := range []struct {
		name       string
		fault      backendtest.Fault
		reason     string
		retryAfter string
	}{
		{"5xx burst", backendtest.Fault{Path: verify, Status: 502}, "clerk_unavailable", "5"},
		{"429 with Retry-After", backendtest.Fault{Path: verify, Status: 429, RetryAfter: "7"}, "clerk_rate_limited", "7"},
		{"hanging connection", backendtest.Fault{Path: verify, Hang: true}, "clerk_unavailable", "5"},
		{"slow-loris body", backendtest.Fault{Path: verify, SlowBody: time.Minute}, "clerk_unavailable", "5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.clerk.SetFault(tc.fault)
			// A hanging Clerk never answers, a slow-loris one sends a byte a
			// minute: an answer at all (before the client gives up) shows
			// the gateway kept its 500ms budget.
			for range 5 { // a burst
				resp, _ := e.bearer("/", e.fresh())
				requireRefused(t, resp, http.StatusServiceUnavailable, tc.reason)
				assert.Equal(t, tc.retryAfter, resp.Header.Get("Retry-After"))
			}
			e.clerk.ClearFaults()
			resp, _ := e.bearer("/", e.fresh())
			assert.Equal(t, http.StatusOK, resp.StatusCode, "recovers without a restart")
		})
	}

	t.Run("Clerk trouble is logged once per burst, not per request", func(t *testing.T) {
		logs := readLog(t, e.logFile)
		assert.Equal(t, 1, strings.Count(logs, "Clerk cannot verify credentials right now"), "20 refused requests, one line")
		assert.GreaterOrEqual(t, strings.Count(logs, `"reason":"clerk_unavailable"`)+strings.Count(logs, `"reason":"clerk_rate_limited"`), 20,
			"each refusal is still at DEBUG")
	})
}

// TestJWKSFaultsAtStart: signing keys that cannot be had when the
// configuration starts (Clerk down, or a set of which no key is usable)
// hold up JWTs only, and the keys arrive once Clerk has them, without a
// restart. Which keys are usable is verify's (jwks_test.go).
func TestJWKSFaultsAtStart(t *testing.T) {
	ec := `{"kty":"EC","crv":"P-256","kid":"ins_ec","use":"sig","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}`
	for name, fault := range map[string]backendtest.Fault{
		"JWKS down":                  {Path: "/v1/jwks", Status: 503},
		"JWKS of unusable keys only": {Path: "/v1/jwks", Body: `{"keys":[` + ec + `]}`},
	} {
		t.Run(name, func(t *testing.T) {
			e := startFaults(t, func(clerk *backendtest.Server) { clerk.SetFault(fault) })
			resp, _ := e.bearer("/", e.jwt())
			requireRefused(t, resp, http.StatusServiceUnavailable, "clerk_unavailable")
			assert.NotEmpty(t, resp.Header.Get("Retry-After"))
			resp, _ = e.bearer("/", e.fresh())
			assert.Equal(t, http.StatusOK, resp.StatusCode, "opaque tokens do not need the keys")

			e.clerk.ClearFaults()
			require.Eventually(t, func() bool { return e.rawStatus("/", "Bearer "+e.jwt()) == http.StatusOK },
				15*time.Second, 200*time.Millisecond, "recovers without a restart")
		})
	}
}

// TestKeyFetchProblemsAreLoggedWhereTheConfigInUseSays: the signing keys
// outlive a reload, and so would the logger they were made with; their
// warnings go to the logs of the configuration in use.
func TestKeyFetchProblemsAreLoggedWhereTheConfigInUseSays(t *testing.T) {
	e := newEnv(t)
	clerk, gateway, caller := e.clerk, e.gateway, e.caller
	config := func(logFile string) string {
		return globals("\tlog {\n\t\toutput file "+logFile+"\n\t\tlevel WARN\n\t}\n") + `
http://{{GATEWAY}} {
	clerk_m2m {
		secret_key {{SECRET}}
		api_url {{CLERK}}
	}
	respond "through"
}
`
	}
	first, second := filepath.Join(t.TempDir(), "first.log"), filepath.Join(t.TempDir(), "second.log")
	e.load(config(first))
	granted := backendtest.TokenOptions{Scopes: []string{gateway.ID}}
	require.Equal(t, http.StatusOK, e.rawStatus("/", "Bearer "+clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: granted})))
	e.load(config(second))

	clerk.SetFault(backendtest.Fault{Path: "/v1/jwks", Status: http.StatusInternalServerError})
	unknownKey := clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: granted, Header: map[string]any{"kid": "ins_rotated"}})
	assert.Equal(t, http.StatusUnauthorized, e.rawStatus("/", "Bearer "+unknownKey), "no such key, and no new set")
	const warning = "fetching Clerk's signing keys failed"
	require.Eventually(t, func() bool { return strings.Contains(readLog(t, second), warning) }, 5*time.Second, 10*time.Millisecond)
	assert.NotContains(t, readLog(t, first), warning)
}
