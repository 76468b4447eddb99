package integration

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
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
	handle /slow/* {
		clerk_m2m {
			machine_secret_key {{GATEWAY_KEY}}
			api_url {{CLERK}}
			timeout 300ms
		}
		respond "through"
	}
	handle /granted-only/* {
		clerk_m2m {
			secret_key {{SECRET}}
			api_url {{CLERK}}
			require_scopes {{GATEWAY_ID}}
		}
		respond "through"
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
			"one fetch for the two handlers with the same secret key, before any request")
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

		before := clerk.Calls("/m2m_tokens/verify")
		for range 5 {
			resp, _ := e.bearer("/machine/invoices", token)
			require.Equal(t, http.StatusOK, resp.StatusCode)
		}
		assert.Equal(t, before, clerk.Calls("/m2m_tokens/verify"), "the verification is cached")
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

	t.Run("M2M JWTs", func(t *testing.T) {
		for name, opts := range map[string]backendtest.JWTOptions{
			"with the M2M category":  {TokenOptions: grantedToGateway},
			"without a category":     {TokenOptions: grantedToGateway, OmitCategory: true},
			"with custom claims too": {TokenOptions: backendtest.TokenOptions{Scopes: []string{e.gateway.ID}, Claims: map[string]any{"role": "etl"}}},
		} {
			t.Run(name, func(t *testing.T) {
				resp, seen := e.bearer("/machine/x", clerk.MintM2MJWT(e.caller, opts))
				require.Equal(t, http.StatusOK, resp.StatusCode)
				assert.Equal(t, e.caller.ID, seen["X-Clerk-Subject"])
				assert.Equal(t, "jwt", seen["X-Clerk-Token-Format"])
				assert.True(t, strings.HasPrefix(seen["X-Clerk-Token-Id"], "mt_"))
				assert.Equal(t, e.gateway.ID, seen["X-Clerk-Scopes"])
			})
		}
		assert.Equal(t, 1, clerk.Calls("/v1/jwks"), "verifying JWTs fetches nothing more")
	})

	t.Run("M2M JWTs that are not valid", func(t *testing.T) {
		fetches := clerk.Calls("/v1/jwks")
		good := clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: grantedToGateway})
		parts := strings.Split(good, ".")
		for name, tc := range map[string]struct{ token, reason string }{
			"session category":  {clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{Category: "cl_B7d4PD111AAA"}), "token_invalid"},
			"template category": {clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{Category: "cl_B7d4PD222AAA"}), "token_invalid"},
			"expired":           {clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{TTL: -time.Minute}}), "token_expired"},
			"not yet valid": {clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{
				Payload: map[string]any{"nbf": time.Now().Add(time.Hour).Unix()}}), "token_invalid"},
			"no exp":                          {clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{NoExpiry: true}}), "token_invalid"},
			"tampered":                        {parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mch_forged","exp":9999999999}`)) + "." + parts[2], "token_invalid"},
			"alg none":                        {clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{Header: map[string]any{"alg": "none"}}), "token_invalid"},
			"HS256 keyed with the public key": {hmacWithPublicKey(t, clerk, e.caller.ID), "token_invalid"},
		} {
			t.Run(name, func(t *testing.T) {
				resp, _ := e.bearer("/machine/x", tc.token)
				requireRefused(t, resp, http.StatusUnauthorized, tc.reason)
			})
		}
		assert.Equal(t, fetches, clerk.Calls("/v1/jwks"), "none of these fetches keys")

		resp, _ := e.bearer("/machine/x", clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{Header: map[string]any{"kid": "ins_unknown"}}))
		requireRefused(t, resp, http.StatusUnauthorized, "token_invalid")
	})

	t.Run("jwt_key verifies with no call to Clerk", func(t *testing.T) {
		clerk.ResetCalls()
		token := clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: grantedToGateway})
		resp, seen := e.bearer("/networkless/x", token)
		require.Equal(t, http.StatusOK, resp.StatusCode, "networkless verification")
		assert.Equal(t, e.caller.ID, seen["X-Clerk-Subject"])
		resp, _ = e.bearer("/networkless/x", "mt_0123456789abcdef0123456789abcdef")
		requireRefused(t, resp, http.StatusUnauthorized, "token_type_not_accepted")
		assert.Empty(t, clerk.Requests(), "not a single request to Clerk")
	})

	t.Run("a key rotated in after start", func(t *testing.T) {
		clerk.RotateKey(false)
		resp, seen := e.bearer("/machine/x", clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: grantedToGateway}))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, e.caller.ID, seen["X-Clerk-Subject"])
	})

	t.Run("other credential types make no call to Clerk", func(t *testing.T) {
		clerk.ResetCalls()
		for _, token := range []string{
			"ak_LCWGdaM8mv8K4PC/57IICZQXAeWfCgF30DZaFXHoGn9=",
			"oat_8XOIucKvqHVr5tYP123456789abcdefghij",
		} {
			resp, _ := e.bearer("/machine/x", token)
			requireRefused(t, resp, http.StatusUnauthorized, "token_type_not_accepted")
		}
		assert.Empty(t, clerk.Requests())
	})

	t.Run("malformed Authorization headers", func(t *testing.T) {
		for name, values := range map[string][]string{
			"basic scheme":   {"Basic dXNlcjpwYXNz"},
			"no token":       {"Bearer"},
			"two headers":    {"Bearer mt_a", "Bearer mt_b"},
			"several tokens": {"Bearer mt_a mt_b"},
		} {
			t.Run(name, func(t *testing.T) {
				resp, _ := e.request("/machine/x", values...)
				requireRefused(t, resp, http.StatusUnauthorized, "token_invalid")
			})
		}
	})

	t.Run("Clerk failing", func(t *testing.T) {
		for name, tc := range map[string]struct {
			fault      backendtest.Fault
			reason     string
			retryAfter string
		}{
			"5xx":          {backendtest.Fault{Path: "/m2m_tokens/verify", Status: 500}, "clerk_unavailable", "5"},
			"garbage":      {backendtest.Fault{Path: "/m2m_tokens/verify", Garbage: true}, "clerk_unavailable", "5"},
			"rate limited": {backendtest.Fault{Path: "/m2m_tokens/verify", Status: 429, RetryAfter: "7"}, "clerk_rate_limited", "7"},
		} {
			t.Run(name, func(t *testing.T) {
				clerk.SetFault(tc.fault)
				defer clerk.ClearFaults()
				token, _ := clerk.CreateM2MToken(e.caller, grantedToGateway)
				resp, _ := e.bearer("/machine/x", token)
				requireRefused(t, resp, http.StatusServiceUnavailable, tc.reason)
				assert.Equal(t, tc.retryAfter, resp.Header.Get("Retry-After"))
			})
		}
		t.Run("hanging past the timeout", func(t *testing.T) {
			clerk.SetFault(backendtest.Fault{Path: "/m2m_tokens/verify", Hang: true})
			defer clerk.ClearFaults()
			token, _ := clerk.CreateM2MToken(e.caller, grantedToGateway)
			// Clerk never answers: an answer at all (before the client
			// gives up) shows the gateway kept its 300ms budget.
			resp, _ := e.bearer("/slow/x", token)
			requireRefused(t, resp, http.StatusServiceUnavailable, "clerk_unavailable")
		})
		t.Run("recovers", func(t *testing.T) {
			token, _ := clerk.CreateM2MToken(e.caller, grantedToGateway)
			resp, _ := e.bearer("/machine/x", token)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
		})
	})

	t.Run("require_scopes <this machine> refuses JWTs not granted to it", func(t *testing.T) {
		outsider := clerk.NewMachine("outsider")
		granted := clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: grantedToGateway})
		resp, _ := e.bearer("/granted-only/x", granted)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		elsewhere := clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{Scopes: []string{outsider.ID}}})
		resp, _ = e.bearer("/granted-only/x", elsewhere)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
		lookalike := clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{Scopes: []string{e.gateway.ID + "x"}}})
		resp, _ = e.bearer("/granted-only/x", lookalike)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
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
		var entry map[string]any
		require.Eventually(t, func() bool {
			for _, line := range strings.Split(readLog(t, e.logFile), "\n") {
				if strings.Contains(line, `"uri":"/machine/logged"`) && strings.Contains(line, `"msg":"handled request"`) {
					return json.Unmarshal([]byte(line), &entry) == nil
				}
			}
			return false
		}, 5*time.Second, 50*time.Millisecond)
		assert.Equal(t, e.caller.ID, entry["user_id"])
		assert.Equal(t, "m2m_token", entry["token_type"])
		assert.Equal(t, id, entry["token_id"])
		assert.NotContains(t, fmt.Sprint(entry), token[3:])
	})

	t.Run("no token or secret in the logs", func(t *testing.T) {
		e.assertNoSecretsLogged(8)
	})
}

// hmacWithPublicKey forges the classic algorithm-confusion token: HS256 with
// the server's public key as the HMAC secret.
func hmacWithPublicKey(t *testing.T, clerk *backendtest.Server, subject string) string {
	t.Helper()
	header, _ := json.Marshal(map[string]any{"alg": "HS256", "typ": "JWT", "kid": clerk.KeyID()})
	payload, _ := json.Marshal(map[string]any{"sub": subject, "exp": time.Now().Add(time.Hour).Unix()})
	signed := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	mac := hmac.New(sha256.New, []byte(clerk.PublicKeyPEM()))
	mac.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// TestJWTKeyMeansNoJWKS: with jwt_key, the signing keys are never fetched,
// even when a secret key is also set (for opaque tokens), as in Clerk's SDK.
func TestJWTKeyMeansNoJWKS(t *testing.T) {
	e := newEnv(t)
	keyFile := filepath.Join(t.TempDir(), "clerk-jwt.pem")
	require.NoError(t, os.WriteFile(keyFile, []byte(e.clerk.PublicKeyPEM()), 0o600))
	e.load(globals("") + `
http://{{GATEWAY}} {
	clerk_m2m {
		jwt_key ` + keyFile + `
		secret_key {{SECRET}}
		api_url {{CLERK}}
	}
	respond "through"
}
`)
	clerk, caller := e.clerk, e.caller
	granted := backendtest.TokenOptions{Scopes: []string{e.gateway.ID}}
	assert.Equal(t, http.StatusOK, e.rawStatus("/", "Bearer "+clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: granted})))
	opaque, _ := clerk.CreateM2MToken(caller, granted)
	assert.Equal(t, http.StatusOK, e.rawStatus("/", "Bearer "+opaque), "the secret key still verifies opaque tokens")
	time.Sleep(100 * time.Millisecond) // time enough for a fetch at start to show
	assert.Zero(t, clerk.Calls("/v1/jwks"), "the JWKS was fetched although jwt_key is set")
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
