package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	_ "github.com/caddy-clerk/clerk-m2m"
	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/readme"
)

var gatewayCaddyfile = globals(debugLog) + `
(identity) {
	header_up X-Clerk-Subject {http.auth.user.id}
	header_up X-Clerk-Token-Type {http.auth.user.token_type}
	header_up X-Clerk-Token-Format {http.auth.user.token_format}
	header_up X-Clerk-Token-Id {http.auth.user.token_id}
	header_up X-Clerk-Scopes {http.auth.user.scopes}
	header_up X-Clerk-Claims {http.auth.user.claims}
	header_up X-Clerk-Role {http.auth.user.claims.role}
	header_up X-Clerk-Level {http.auth.user.claims.tier.level}
	header_up X-Clerk-Absent {http.auth.user.claims.absent}
	header_up X-Clerk-Expires-At {http.auth.user.expires_at}
}

http://{{GATEWAY}} {
	log {
		output file {{LOG}}
	}
	handle /machine/* {
		clerk_m2m {
			secret_key {{SECRET}}
			machine_secret_key {{GATEWAY_KEY}}
			api_url {{CLERK}}
		}
		reverse_proxy {{UPSTREAM}} {
			import identity
		}
	}
	handle /networkless/* {
		clerk_m2m {
			jwt_key {{JWT_KEY_FILE}}
			api_url {{CLERK}}
		}
		reverse_proxy {{UPSTREAM}} {
			import identity
		}
	}
	handle /wrong-key/* {
		clerk_m2m {
			machine_secret_key ak_00000000000000000000000000000000
			api_url {{CLERK}}
		}
		respond "through"
	}
	handle_errors {
		header X-Clerk-Error {http.auth.clerk_m2m.error}
		respond "refused" {http.error.status_code}
	}
}
`

func startGateway(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	keyFile := filepath.Join(t.TempDir(), "clerk-jwt.pem")
	require.NoError(t, os.WriteFile(keyFile, []byte(e.clerk.PublicKeyPEM()), 0o600))
	e.load(strings.ReplaceAll(gatewayCaddyfile, "{{JWT_KEY_FILE}}", keyFile))
	return e
}

func TestEndToEnd(t *testing.T) {
	e := startGateway(t)
	clerk := e.clerk
	grantedToGateway := backendtest.TokenOptions{Scopes: []string{e.gateway.ID}}

	t.Run("signing keys are fetched when the config starts", func(t *testing.T) {
		require.Eventually(t, func() bool { return clerk.Calls("/v1/jwks") == 1 }, 5*time.Second, 10*time.Millisecond,
			"one fetch, before any request")
		assert.Equal(t, "Bearer "+clerk.SecretKey(), lastRequest(t, clerk, "/v1/jwks").Header.Get("Authorization"))
	})

	t.Run("no token", func(t *testing.T) {
		resp, _ := e.request("/machine/x")
		requireRefused(t, resp, http.StatusUnauthorized, "token_missing")
		assert.Equal(t, `Bearer realm="clerk"`, resp.Header.Get("WWW-Authenticate"))
		assert.Zero(t, clerk.Calls("/m2m_tokens/verify"))
	})

	t.Run("valid opaque token reaches the upstream with its identity", func(t *testing.T) {
		token, id := clerk.CreateM2MToken(e.caller, backendtest.TokenOptions{
			Scopes: []string{e.gateway.ID},
			Claims: map[string]any{"role": "billing", "tier": map[string]any{"level": 3}},
			TTL:    time.Hour,
		})
		resp, seen := e.bearer("/machine/invoices", token)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, e.caller.ID, seen["X-Clerk-Subject"])
		assert.Equal(t, "m2m_token", seen["X-Clerk-Token-Type"])
		assert.Equal(t, "opaque", seen["X-Clerk-Token-Format"])
		assert.Equal(t, id, seen["X-Clerk-Token-Id"])
		assert.Equal(t, e.gateway.ID, seen["X-Clerk-Scopes"])
		assert.JSONEq(t, `{"role":"billing","tier":{"level":3}}`, seen["X-Clerk-Claims"])
		assert.Equal(t, "billing", seen["X-Clerk-Role"])
		assert.Equal(t, "3", seen["X-Clerk-Level"])
		absent, sent := seen["X-Clerk-Absent"]
		assert.True(t, sent, "header_up sets the header")
		assert.Empty(t, absent, "a claim the token does not carry is empty, not the placeholder's text")
		expiresAt, err := strconv.ParseInt(seen["X-Clerk-Expires-At"], 10, 64)
		require.NoError(t, err)
		assert.InDelta(t, time.Now().Add(time.Hour).Unix(), expiresAt, 5)

		verify := lastRequest(t, clerk, "/m2m_tokens/verify")
		assert.Equal(t, "Bearer "+e.gateway.SecretKey, verify.Header.Get("Authorization"), "the machine key is preferred")
		assert.Equal(t, "2026-05-12", verify.Header.Get("Clerk-API-Version"))
		assert.True(t, strings.HasPrefix(verify.Header.Get("User-Agent"), "caddy-clerk-m2m/"))
	})

	t.Run("opaque tokens that are not valid here", func(t *testing.T) {
		outsider := clerk.NewMachine("outsider")
		revoked, revokedID := clerk.CreateM2MToken(e.caller, grantedToGateway)
		clerk.RevokeM2MToken(revokedID)
		expired, _ := clerk.CreateM2MToken(e.caller, backendtest.TokenOptions{Scopes: []string{e.gateway.ID}, TTL: -time.Minute})
		elsewhere, _ := clerk.CreateM2MToken(e.caller, backendtest.TokenOptions{Scopes: []string{outsider.ID}})
		for name, tc := range map[string]struct{ token, reason string }{
			"unknown":                      {"mt_0123456789abcdef0123456789abcdef", "token_invalid"},
			"revoked (200 with a flag)":    {revoked, "token_invalid"},
			"expired (200 with a flag)":    {expired, "token_expired"},
			"granted to another machine":   {elsewhere, "token_invalid"},
			"garbage after the mt_ prefix": {"mt_!!", "token_invalid"},
		} {
			t.Run(name, func(t *testing.T) {
				resp, _ := e.bearer("/machine/x", tc.token)
				requireRefused(t, resp, http.StatusUnauthorized, tc.reason)
			})
		}
	})

	t.Run("jwt_key verifies with no call to Clerk", func(t *testing.T) {
		clerk.ResetCalls()
		token := clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: grantedToGateway})
		resp, seen := e.bearer("/networkless/x", token)
		require.Equal(t, http.StatusOK, resp.StatusCode, "networkless verification")
		assert.Equal(t, e.caller.ID, seen["X-Clerk-Subject"])
		assert.Empty(t, clerk.Requests(), "not a single request to Clerk")
	})

	t.Run("a key Clerk rejects is a server error", func(t *testing.T) {
		token, _ := clerk.CreateM2MToken(e.caller, grantedToGateway)
		resp, _ := e.bearer("/wrong-key/x", token)
		requireRefused(t, resp, http.StatusInternalServerError, "misconfigured")
	})

	t.Run("access log names the caller and the token, never the token itself", func(t *testing.T) {
		token, id := clerk.CreateM2MToken(e.caller, grantedToGateway)
		resp, _ := e.bearer("/machine/logged", token)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		entry := accessLogEntry(t, e.logFile, "/machine/logged")
		assert.Equal(t, e.caller.ID, entry["user_id"])
		assert.Equal(t, "m2m_token", entry["token_type"])
		assert.Equal(t, id, entry["token_id"])
		assert.NotContains(t, entry, "clerk_m2m_error")
		assert.NotContains(t, fmt.Sprint(entry), token[3:])
	})

	t.Run("access log says why a request was refused", func(t *testing.T) {
		expired := clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: grantedToGateway,
			Payload: map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}})
		resp, _ := e.bearer("/machine/refused", expired)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		entry := accessLogEntry(t, e.logFile, "/machine/refused")
		assert.Equal(t, "token_expired", entry["clerk_m2m_error"])
		assert.Equal(t, "m2m_token", entry["token_type"])
		assert.NotContains(t, fmt.Sprint(entry), expired[10:30])
	})

	t.Run("no token or secret in the logs", func(t *testing.T) {
		e.assertNoSecretsLogged(8)
	})
}

// TestDataStaysInTheTestsStorage: what the gateway keeps (here a verdict
// shared_cache writes) lands in the test process's own folder, never in
// the data directory of the developer running the tests.
func TestDataStaysInTheTestsStorage(t *testing.T) {
	e := newEnv(t)
	e.load(gatewayWith("shared_cache"))
	resp, _ := e.bearer("/", e.fresh())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	verdicts := filepath.Join(storageDir, "clerk_m2m", "verdicts")
	require.Eventually(t, func() bool {
		scopes, _ := os.ReadDir(verdicts)
		return len(scopes) > 0
	}, 30*time.Second, 10*time.Millisecond, "the shared verdict in %s", verdicts)
}

// TestTheREADMEsLoggerShowsRefusals: the global options the README gives
// to see why requests are refused, as they are (but their output, a file
// here), log each refusal with its reason; Caddy's default logs do not.
func TestTheREADMEsLoggerShowsRefusals(t *testing.T) {
	e := newEnv(t)
	blocks, err := readme.Read("../README.md")
	require.NoError(t, err)
	var snippet string
	for _, block := range blocks {
		if block.Lang == "caddyfile" && strings.Contains(block.Text, "include http.handlers.clerk_m2m") {
			snippet = block.Text
		}
	}
	require.NotEmpty(t, snippet, "the README's logger")
	options := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(snippet), "{\n"), "}")
	options = strings.Replace(options, "include", "output file {{LOG}}\n\t\tinclude", 1)
	e.load(globals(options) + `
http://{{GATEWAY}} {
	clerk_m2m {
		machine_secret_key {{GATEWAY_KEY}}
		api_url {{CLERK}}
	}
	respond "through"
}
`)
	resp, _ := e.bearer("/", "mt_0123456789abcdef0123456789abcdef")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Eventually(t, func() bool {
		logs := readLog(t, e.logFile)
		return strings.Contains(logs, `"logger":"http.handlers.clerk_m2m"`) && strings.Contains(logs, `"msg":"credential refused"`) &&
			strings.Contains(logs, `"reason":"token_invalid"`)
	}, 10*time.Second, 10*time.Millisecond, "the refusal and its reason, in the log the README's options make")
}
