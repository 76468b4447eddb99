package integration

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

var metricsSite = `
http://{{GATEWAY}} {
	clerk_m2m {
		secret_key {{SECRET}}
		machine_secret_key {{GATEWAY_KEY}}
		api_url {{CLERK}}
	}
	respond "through"
}
`

// TestMetricsOnTheAdminEndpoint: after one accepted, one rejected and one
// token-less request, the admin endpoint serves caddy_clerk_m2m_* series,
// and no label holds a subject, a token or a path. Caddy's metrics global
// option is not needed: the admin endpoint serves whatever is registered on
// the configuration's registry (the option adds Caddy's own HTTP metrics).
func TestMetricsOnTheAdminEndpoint(t *testing.T) {
	for name, options := range map[string]string{"without the metrics option": "", "with it": "\tmetrics\n"} {
		t.Run(name, func(t *testing.T) { checkMetricsServed(t, globals(options)+metricsSite) })
	}
}

func checkMetricsServed(t *testing.T, caddyfile string) {
	e := start(t, caddyfile)
	clerk, gateway, caller := e.clerk, e.gateway, e.caller
	require.Eventually(t, func() bool { return clerk.Calls("/v1/jwks") == 1 }, 5*time.Second, 10*time.Millisecond)

	token, _ := clerk.CreateM2MToken(caller, backendtest.TokenOptions{Scopes: []string{gateway.ID}})
	forged := "mt_0123456789abcdef0123456789abcdef"
	before, _ := scrapeClerkMetrics(t)
	resp, _ := e.bearer("/accepted", token)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, _ = e.bearer("/rejected", forged)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = e.request("/anonymous")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	after, exposition := scrapeClerkMetrics(t)

	// The collectors are the process's, shared with other tests: compare
	// with the scrape before the three requests.
	for series, want := range map[string]float64{
		`caddy_clerk_m2m_verifications_total{outcome="verified",token_format="opaque",token_type="m2m_token"}`:      1,
		`caddy_clerk_m2m_verifications_total{outcome="token_invalid",token_format="opaque",token_type="m2m_token"}`: 1,
		`caddy_clerk_m2m_verifications_total{outcome="token_missing",token_format="unknown",token_type="unknown"}`:  1,
		`caddy_clerk_m2m_clerk_requests_total{endpoint="/m2m_tokens/verify",result="ok"}`:                           1,
		`caddy_clerk_m2m_clerk_requests_total{endpoint="/m2m_tokens/verify",result="client_error"}`:                 1,
		`caddy_clerk_m2m_clerk_request_duration_seconds_count{endpoint="/m2m_tokens/verify"}`:                       2,
		`caddy_clerk_m2m_cache_lookups_total{cache="opaque",result="miss"}`:                                         2,
	} {
		assert.Equal(t, want, after[series]-before[series], series)
	}
	assert.Positive(t, after[`caddy_clerk_m2m_jwks_fetches_total{outcome="success"}`])
	assert.Contains(t, exposition, `caddy_clerk_m2m_jwks_age_seconds{api_url="`+clerk.URL+`"}`)
	for _, secret := range []string{caller.ID, gateway.ID, token, forged, clerk.SecretKey(), gateway.SecretKey, "/accepted", "/rejected", "/anonymous"} {
		assert.NotContains(t, exposition, secret, "a label holds a subject, a token or a path")
	}
}

// scrapeClerkMetrics reads the admin /metrics endpoint and returns the
// caddy_clerk_m2m_* series with their values, and their exposition text.
func scrapeClerkMetrics(t *testing.T) (map[string]float64, string) {
	t.Helper()
	resp, err := http.Get(adminURL("/metrics"))
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	values := map[string]float64{}
	var lines []string
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "caddy_clerk_m2m_") {
			continue
		}
		lines = append(lines, line)
		cut := strings.LastIndexByte(line, ' ')
		value, err := strconv.ParseFloat(line[cut+1:], 64)
		require.NoError(t, err)
		values[line[:cut]] = value
	}
	return values, strings.Join(lines, "\n")
}
