package clerkm2m_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	_ "github.com/caddy-clerk/clerk-m2m"
	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// The gateway's port (testGlobals' http_port), and its URL.
const (
	gatewayPort = ":9080"
	gatewayURL  = "http://localhost" + gatewayPort
)

// e2e is one running Caddy with clerk_m2m in front of an echo upstream,
// verifying against a fake Clerk.
type e2e struct {
	t        *testing.T
	tester   *caddytest.Tester
	clerk    *backendtest.Server
	gateway  *backendtest.Machine // the machine the gateway stands for
	caller   *backendtest.Machine // a machine allowed to call it
	logFile  string
	secrets  []string // must never appear in a log
	accessed string
}

// echoUpstream answers with the X-Clerk-* headers it received, and the
// Authorization and Cookie headers if any, as JSON.
func echoUpstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen := map[string]string{}
		for name, values := range r.Header {
			if strings.HasPrefix(name, "X-Clerk-") || name == "Authorization" || name == "Cookie" {
				seen[name] = strings.Join(values, "|")
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(seen)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// testGlobals are the global options every test configuration starts
// with: caddytest's admin endpoint and ports, and extra options.
func testGlobals(extra string) string {
	// persist_config off: tests must not replace the autosave.json that a
	// developer's own `caddy run --resume` loads.
	return "{\n\tadmin localhost:2999\n\tpersist_config off\n\thttp_port 9080\n\thttps_port 9443\n\tgrace_period 1ns\n\tskip_install_trust\n" +
		extra + "}\n"
}

// newTester is caddytest's tester with a client that resends requests
// whose connection Caddy dropped unanswered: right after a config load,
// Caddy's hand-over of the listening socket from the old servers to the new
// ones resets a few fresh connections, whatever the handlers (as in
// caddyserver/caddy#4184; about 1 in 100 in a test of back-to-back loads).
func newTester(t testing.TB) *caddytest.Tester {
	tester := caddytest.NewTester(t)
	tester.Client.Transport = &resendDropped{base: tester.Client.Transport}
	return tester
}

// resendDropped resends, up to three times, a request without a body whose
// connection ended before any answer, and counts the resends.
type resendDropped struct {
	base    http.RoundTripper
	resends atomic.Int64
}

func (r *resendDropped) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		resp, err := r.base.RoundTrip(req)
		if err == nil || attempt > 3 || req.Body != nil && req.Body != http.NoBody ||
			!errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			return resp, err
		}
		r.resends.Add(1)
	}
}

// resends is how many requests tester's client has resent so far.
func resends(tester *caddytest.Tester) int64 {
	return tester.Client.Transport.(*resendDropped).resends.Load()
}

// loadConfig loads a Caddyfile into the test Caddy and waits out the switch
// from the previous configuration: Caddy's /load returns while the old
// servers still shut down in the background (caddyhttp's App.stop), and a
// connection they accept meanwhile is served by the old configuration or
// cut. Once they have let go of the gateway's port, only the new one
// answers; idle connections to the old servers are dropped too.
func loadConfig(t testing.TB, tester *caddytest.Tester, caddyfile string) {
	t.Helper()
	tester.InitServer(caddyfile, "caddyfile")
	require.Eventually(t, func() bool { return caddy.ListenerUsage("tcp", gatewayPort) <= 1 }, 5*time.Second,
		time.Millisecond, "the previous configuration kept listening on %s", gatewayPort)
	tester.Client.CloseIdleConnections()
}

// Log options for testGlobals: everything to the file {{LOG}}, or errors
// only (a load run).
const (
	debugLog = "\tlog {\n\t\toutput file {{LOG}}\n\t\tlevel DEBUG\n\t}\n"
	errorLog = "\tlog {\n\t\tlevel ERROR\n\t}\n"
)

var e2eCaddyfile = testGlobals(debugLog) + `
(identity) {
	header_up X-Clerk-Subject {http.auth.user.id}
	header_up X-Clerk-Token-Type {http.auth.user.token_type}
	header_up X-Clerk-Token-Format {http.auth.user.token_format}
	header_up X-Clerk-Token-Id {http.auth.user.token_id}
	header_up X-Clerk-Scopes {http.auth.user.scopes}
	header_up X-Clerk-Claims {http.auth.user.claims}
	header_up X-Clerk-Role {http.auth.user.claims.role}
	header_up X-Clerk-Level {http.auth.user.claims.tier.level}
	header_up X-Clerk-Expires-At {http.auth.user.expires_at}
}

http://localhost:9080 {
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

// clearEnv empties the environment defaults for one test, so that a
// developer's own Clerk keys never leak into it.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, name := range []string{"CLERK_SECRET_KEY", "CLERK_MACHINE_SECRET_KEY", "CLERK_JWT_KEY", "CLERK_API_URL", "CLERK_PUBLISHABLE_KEY"} {
		t.Setenv(name, "")
	}
}

func startE2E(t *testing.T) *e2e {
	t.Helper()
	clearEnv(t)
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	env := &e2e{
		t:       t,
		clerk:   clerk,
		gateway: clerk.NewMachine("gateway"),
		caller:  clerk.NewMachine("caller"),
		logFile: filepath.Join(t.TempDir(), "caddy.log"),
	}
	env.secrets = []string{clerk.SecretKey(), env.gateway.SecretKey, env.caller.SecretKey}
	keyFile := filepath.Join(t.TempDir(), "clerk-jwt.pem")
	require.NoError(t, os.WriteFile(keyFile, []byte(clerk.PublicKeyPEM()), 0o600))

	config := strings.NewReplacer(
		"{{LOG}}", env.logFile,
		"{{SECRET}}", clerk.SecretKey(),
		"{{GATEWAY_KEY}}", env.gateway.SecretKey,
		"{{GATEWAY_ID}}", env.gateway.ID,
		"{{CLERK}}", clerk.URL,
		"{{UPSTREAM}}", strings.TrimPrefix(echoUpstream(t).URL, "http://"),
		"{{JWT_KEY_FILE}}", keyFile,
	).Replace(e2eCaddyfile)
	env.tester = newTester(t)
	loadConfig(t, env.tester, config)
	return env
}

// request sends a GET to path with the given Authorization header values.
func (e *e2e) request(path string, authorization ...string) (*http.Response, map[string]string) {
	e.t.Helper()
	return e.send(path, func(req *http.Request) {
		for _, value := range authorization {
			req.Header.Add("Authorization", value)
		}
	})
}

// send sends a GET to path, prepared by prepare, and returns the answer and
// the X-Clerk-* headers the upstream saw (for a 200).
func (e *e2e) send(path string, prepare func(*http.Request)) (*http.Response, map[string]string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, gatewayURL+path, nil)
	require.NoError(e.t, err)
	prepare(req)
	resp, err := e.tester.Client.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	seen := map[string]string{}
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(e.t, json.NewDecoder(resp.Body).Decode(&seen))
	}
	return resp, seen
}

func (e *e2e) bearer(path, token string) (*http.Response, map[string]string) {
	e.t.Helper()
	e.secrets = append(e.secrets, token)
	return e.request(path, "Bearer "+token)
}

// requireRefused asserts a refusal with the given status and reason.
func requireRefused(t *testing.T, resp *http.Response, status int, reason string) {
	t.Helper()
	require.Equal(t, status, resp.StatusCode)
	assert.Equal(t, reason, resp.Header.Get("X-Clerk-Error"))
	if status == http.StatusUnauthorized {
		challenge := resp.Header.Get("WWW-Authenticate")
		assert.True(t, strings.HasPrefix(challenge, `Bearer realm="clerk"`), "challenge %q", challenge)
		if reason != "token_missing" {
			assert.Contains(t, challenge, `error="invalid_token"`)
		}
	}
}

func TestEndToEnd(t *testing.T) {
	e := startE2E(t)
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
			start := time.Now()
			resp, _ := e.bearer("/slow/x", token)
			requireRefused(t, resp, http.StatusServiceUnavailable, "clerk_unavailable")
			assert.Less(t, time.Since(start), 2*time.Second, "answered within the 300ms budget")
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

// lastRequest returns the last request the fake received on route.
func lastRequest(t *testing.T, clerk *backendtest.Server, route string) backendtest.Request {
	t.Helper()
	requests := clerk.Requests()
	for i := len(requests) - 1; i >= 0; i-- {
		if strings.HasSuffix(requests[i].Path, route) {
			return requests[i]
		}
	}
	t.Fatalf("no request to %s", route)
	return backendtest.Request{}
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

func readLog(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(data)
}

// assertNoSecretsLogged checks that the log holds no piece of size
// characters of any token or secret the test used.
func (e *e2e) assertNoSecretsLogged(size int) {
	e.t.Helper()
	logs := readLog(e.t, e.logFile)
	require.Contains(e.t, logs, "credential refused", "the DEBUG log was captured")
	for _, secret := range e.secrets {
		for _, fragment := range secretFragments(secret, size) {
			if strings.Contains(logs, fragment) {
				e.t.Errorf("a %d-character piece of a token or secret was logged: %q", size, fragment)
				return
			}
		}
	}
}

// secretFragments returns every piece of size characters of the part of a
// secret that is hard to guess: for a JWT the payload and signature (its
// header is the same for every token of an instance), for a prefixed
// credential what follows the prefix.
func secretFragments(secret string, size int) []string {
	if parts := strings.Split(secret, "."); len(parts) == 3 {
		secret = parts[1] + "." + parts[2]
	} else if _, rest, ok := strings.Cut(secret, "_"); ok {
		secret = rest
		if _, rest, ok := strings.Cut(secret, "_"); ok && strings.HasPrefix(secret, "test_") || strings.HasPrefix(secret, "live_") {
			secret = rest
		}
	}
	var fragments []string
	for i := 0; i+size <= len(secret); i++ {
		fragments = append(fragments, secret[i:i+size])
	}
	return fragments
}

// TestJWTKeyMeansNoJWKS: with jwt_key, the signing keys are never fetched,
// even when a secret key is also set (for opaque tokens), as in Clerk's SDK.
func TestJWTKeyMeansNoJWKS(t *testing.T) {
	clearEnv(t)
	clerk := backendtest.New()
	defer clerk.Close()
	gateway, caller := clerk.NewMachine("gateway"), clerk.NewMachine("caller")
	keyFile := filepath.Join(t.TempDir(), "clerk-jwt.pem")
	require.NoError(t, os.WriteFile(keyFile, []byte(clerk.PublicKeyPEM()), 0o600))
	e := &e2e{t: t, clerk: clerk, gateway: gateway, caller: caller, tester: newTester(t)}
	loadConfig(t, e.tester, testGlobals("")+`
http://localhost:9080 {
	clerk_m2m {
		jwt_key `+keyFile+`
		secret_key `+clerk.SecretKey()+`
		api_url `+clerk.URL+`
	}
	respond "through"
}
`)
	granted := backendtest.TokenOptions{Scopes: []string{gateway.ID}}
	assert.Equal(t, http.StatusOK, e.rawStatus("/", "Bearer "+clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: granted})))
	opaque, _ := clerk.CreateM2MToken(caller, granted)
	assert.Equal(t, http.StatusOK, e.rawStatus("/", "Bearer "+opaque), "the secret key still verifies opaque tokens")
	time.Sleep(100 * time.Millisecond) // time enough for a fetch at start to show
	assert.Zero(t, clerk.Calls("/v1/jwks"), "the JWKS was fetched although jwt_key is set")
}
