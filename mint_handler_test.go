package clerkm2m

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	logobserver "go.uber.org/zap/zaptest/observer"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
)

func TestTokenCaddyfile(t *testing.T) {
	h := new(MintHandler)
	require.NoError(t, h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`clerk_m2m_token {
		machine_secret_key {env.A_KEY}
		api_url https://clerk.example.com
		format jwt
		ttl 15m
		min_remaining_ttl 5m
		renew_at 80%
		header X-Service-Token
		timeout 2s
		claims {
			team billing
			region {env.REGION}
		}
		disable_metrics
	}`)))
	assert.Equal(t, &MintHandler{MachineSecretKey: "{env.A_KEY}", APIURL: "https://clerk.example.com", Format: "jwt",
		TTL: new(caddy.Duration(15 * time.Minute)), MinRemainingTTL: caddy.Duration(5 * time.Minute), RenewAt: 0.8, Header: "X-Service-Token", Timeout: new(caddy.Duration(2 * time.Second)),
		Claims: map[string]string{"team": "billing", "region": "{env.REGION}"}, DisableMetrics: true}, h)

	h = new(MintHandler)
	require.NoError(t, h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("clerk_m2m_token {\n renew_at 0.25\n}")))
	assert.Equal(t, 0.25, h.RenewAt)

	for name, tc := range map[string]struct{ input, want string }{
		"unknown":         {"clerk_m2m_token {\n token_ttl 1h\n}", `unknown subdirective "token_ttl"`},
		"argument":        {"clerk_m2m_token ak_x", "takes no arguments"},
		"bad share":       {"clerk_m2m_token {\n renew_at half\n}", "neither a fraction"},
		"zero share":      {"clerk_m2m_token {\n renew_at 0\n}", "not a share of the lifetime above 0"},
		"share over 100%": {"clerk_m2m_token {\n renew_at 120%\n}", "not a share of the lifetime above 0"},
		"NaN share":       {"clerk_m2m_token {\n renew_at NaN\n}", "not a share of the lifetime above 0"},
		"empty claims":    {"clerk_m2m_token {\n claims {\n }\n}", "names no claim"},
		"claim twice":     {"clerk_m2m_token {\n claims {\n a 1\n a 2\n }\n}", "claim a given twice"},
		"claim no value":  {"clerk_m2m_token {\n claims {\n a\n }\n}", "a needs a value"},
		"given twice":     {"clerk_m2m_token {\n format jwt\n format opaque\n}", "format given twice"},
		"claims argument": {"clerk_m2m_token {\n claims x {\n a 1\n }\n}", "wrong argument count"},
	} {
		t.Run(name, func(t *testing.T) {
			err := new(MintHandler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestTokenValidation(t *testing.T) {
	testenv.ClearClerk(t)
	t.Setenv("CLERK_M2M_TEST_REGION", "eu")
	h := &MintHandler{MachineSecretKey: "ak_x", Claims: map[string]string{"region": "{env.CLERK_M2M_TEST_REGION}"}}
	require.NoError(t, provision(t, h))
	assert.Equal(t, "opaque", h.Format)
	assert.Equal(t, caddy.Duration(time.Hour), *h.TTL)
	assert.Equal(t, 0.5, h.RenewAt)
	assert.Equal(t, "Authorization", h.Header)
	assert.Equal(t, map[string]any{"region": "eu"}, h.claims)

	for name, tc := range map[string]struct {
		handler MintHandler
		want    string
	}{
		"no key":       {MintHandler{}, "set machine_secret_key (or CLERK_MACHINE_SECRET_KEY)"},
		"instance key": {MintHandler{MachineSecretKey: "sk_live_x"}, "Clerk mints M2M tokens only for a machine"},
		"not a key":    {MintHandler{MachineSecretKey: "hunter2"}, "starting with ak_"},
		"format":       {MintHandler{MachineSecretKey: "ak_x", Format: "paseto"}, "format must be opaque or jwt"},
		"ttl":          {MintHandler{MachineSecretKey: "ak_x", TTL: new(caddy.Duration(29 * time.Second))}, "ttl must be at least 30s, not 29s"},
		"ttl 0":        {MintHandler{MachineSecretKey: "ak_x", TTL: new(caddy.Duration(0))}, "ttl must be at least 30s, not 0s"},
		"ttl of ten years": {MintHandler{MachineSecretKey: "ak_x", TTL: new(caddy.Duration(87600 * time.Hour))},
			"ttl must be at most 24h0m0s, not 87600h0m0s: a token that leaks works until it expires"},
		"timeout 0": {MintHandler{MachineSecretKey: "ak_x", Timeout: new(caddy.Duration(0))},
			"timeout 0 would give Clerk no time to mint: set a duration, or leave timeout out for 5s"},
		"min_remaining_ttl below a second": {MintHandler{MachineSecretKey: "ak_x", MinRemainingTTL: caddy.Duration(time.Millisecond)},
			"min_remaining_ttl must be at least 1s and less than ttl"},
		"min_remaining_ttl as long as ttl": {MintHandler{MachineSecretKey: "ak_x", MinRemainingTTL: caddy.Duration(time.Hour)},
			"min_remaining_ttl must be at least 1s and less than ttl (1h0m0s)"},
		"min_remaining_ttl of JWTs": {MintHandler{MachineSecretKey: "ak_x", Format: "jwt", MinRemainingTTL: caddy.Duration(time.Minute)},
			"min_remaining_ttl applies to opaque tokens"},
		"renew_at over 100%": {MintHandler{MachineSecretKey: "ak_x", RenewAt: 1.5}, "renew_at must be a share"},
		"header":             {MintHandler{MachineSecretKey: "ak_x", Header: "X Token"}, "not a valid header name"},
		"key from nowhere":   {MintHandler{MachineSecretKey: "{file./nonexistent}"}, "which is empty"},
		"api url":            {MintHandler{MachineSecretKey: "ak_x", APIURL: "clerk.example.com"}, "api_url:"},
	} {
		t.Run(name, func(t *testing.T) {
			h := tc.handler
			err := provision(t, &h)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestMinRemainingTTLSharesALiveToken: with min_remaining_ttl, a second
// token source of the machine (another sidecar, or this one restarted) is
// handed the first one's token by Clerk instead of a new mint.
func TestMinRemainingTTLSharesALiveToken(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	key := clerk.NewMachine("a").SecretKey
	token := func(timeout time.Duration, minRemaining time.Duration) string {
		// Another timeout makes another token source, as another sidecar has.
		h := &MintHandler{MachineSecretKey: key, APIURL: clerk.URL, Timeout: new(caddy.Duration(timeout)),
			MinRemainingTTL: caddy.Duration(minRemaining)}
		require.NoError(t, provision(t, h))
		token, err := h.source.Token(t.Context())
		require.NoError(t, err)
		return token
	}
	first := token(time.Second, 10*time.Minute)
	assert.Equal(t, first, token(2*time.Second, 10*time.Minute), "Clerk handed back the live token")
	assert.NotEqual(t, first, token(3*time.Second, 0), "without min_remaining_ttl, a new token")
	var bodies []string
	for _, r := range clerk.Requests() {
		bodies = append(bodies, string(r.Body))
	}
	assert.Equal(t, []string{
		`{"token_format":"opaque","seconds_until_expiration":3600,"min_remaining_ttl_seconds":600}`,
		`{"token_format":"opaque","seconds_until_expiration":3600,"min_remaining_ttl_seconds":600}`,
		`{"token_format":"opaque","seconds_until_expiration":3600}`,
	}, bodies)
}

// TestMinRemainingTTLDeclinesATokenThatOutlivesTTL: a live token of the
// machine minted elsewhere that never expires, or lives longer than this
// sidecar's ttl, is not forwarded: a new one is minted at once, and the
// cost is logged.
func TestMinRemainingTTLDeclinesATokenThatOutlivesTTL(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	for name, elsewhere := range map[string]backendtest.TokenOptions{
		"never expiring": {NoExpiry: true},
		"an hour long":   {TTL: time.Hour},
	} {
		t.Run(name, func(t *testing.T) {
			machine := clerk.NewMachine(name)
			foreign, _ := clerk.CreateM2MToken(machine, elsewhere)
			clerk.ResetCalls()
			h := &MintHandler{MachineSecretKey: machine.SecretKey, APIURL: clerk.URL, TTL: new(caddy.Duration(2 * time.Minute)),
				MinRemainingTTL: caddy.Duration(time.Minute)}
			require.NoError(t, provision(t, h))
			core, warnings := logobserver.New(zap.WarnLevel)
			h.source.logger.Store(zap.New(core))

			token, err := h.source.Token(t.Context())
			require.NoError(t, err)
			assert.NotEqual(t, foreign, token, "the token minted elsewhere is not forwarded")
			var bodies []string
			for _, r := range clerk.Requests() {
				bodies = append(bodies, string(r.Body))
			}
			assert.Equal(t, []string{
				`{"token_format":"opaque","seconds_until_expiration":120,"min_remaining_ttl_seconds":60}`,
				`{"token_format":"opaque","seconds_until_expiration":120}`,
			}, bodies, "declined, then a new token minted in the same attempt")
			require.Equal(t, 1, warnings.Len())
			assert.Contains(t, warnings.All()[0].Message, "one more billed mint each time")
		})
	}
}

func TestMintsAreCounted(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	h := &MintHandler{MachineSecretKey: clerk.NewMachine("a").SecretKey, APIURL: clerk.URL, Format: "jwt"}
	require.NoError(t, provision(t, h))
	before := testutil.ToFloat64(metrics.mints.WithLabelValues("jwt", "success"))
	_, err := h.source.Token(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1.0, testutil.ToFloat64(metrics.mints.WithLabelValues("jwt", "success"))-before)

	quiet := &MintHandler{MachineSecretKey: clerk.NewMachine("b").SecretKey, APIURL: clerk.URL, Format: "jwt", DisableMetrics: true}
	require.NoError(t, provision(t, quiet))
	calls := testutil.ToFloat64(metrics.clerkRequests.WithLabelValues("/m2m_tokens", "ok"))
	_, err = quiet.source.Token(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1.0, testutil.ToFloat64(metrics.mints.WithLabelValues("jwt", "success"))-before, "disable_metrics counts no mint")
	assert.Equal(t, calls, testutil.ToFloat64(metrics.clerkRequests.WithLabelValues("/m2m_tokens", "ok")), "nor its call to Clerk")
}

// TestTokenHandlersShareASourceWhateverTheirMetrics: disable_metrics does
// not make a handler mint its own token; the shared source's mints are
// counted while a counted handler holds it.
func TestTokenHandlersShareASourceWhateverTheirMetrics(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	key := clerk.NewMachine("a").SecretKey
	counted := &MintHandler{MachineSecretKey: key, APIURL: clerk.URL, Format: "jwt"}
	require.NoError(t, provision(t, counted))
	quiet := &MintHandler{MachineSecretKey: key, APIURL: clerk.URL, Format: "jwt", DisableMetrics: true}
	require.NoError(t, provision(t, quiet))
	mints := func() float64 { return testutil.ToFloat64(metrics.mints.WithLabelValues("jwt", "success")) }
	before := mints()

	fromQuiet, err := quiet.source.Token(t.Context())
	require.NoError(t, err)
	fromCounted, err := counted.source.Token(t.Context())
	require.NoError(t, err)
	assert.Equal(t, fromCounted, fromQuiet, "one token for both")
	assert.Equal(t, 1, clerk.Calls("/m2m_tokens"))
	assert.Equal(t, 1.0, mints()-before, "the mint the quiet handler's request made is counted")
}

func TestPublishableKeys(t *testing.T) {
	testenv.ClearClerk(t)
	valid := "pk_live_" + base64.RawStdEncoding.EncodeToString([]byte("clerk.example.com$"))
	h := &Handler{PublishableKey: valid}
	require.NoError(t, provision(t, h), "a publishable key alone can verify M2M JWTs")
	assert.Equal(t, "frontend_api_jwks", h.verifier.Setup().JWTsWith)

	t.Setenv("CLERK_PUBLISHABLE_KEY", valid)
	require.NoError(t, provision(t, &Handler{Accept: []string{"session_token"}}), "from the environment too")

	for name, key := range map[string]string{
		"secret key":   "sk_live_x",
		"garbage":      "pk_test_%%%",
		"a path in it": "pk_test_" + base64.RawStdEncoding.EncodeToString([]byte("evil.example.com/x$")),
	} {
		err := provision(t, &Handler{PublishableKey: key})
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "publishable_key: invalid publishable key")
	}
}

// TestTheMachineMintedAsIsSaid: clerk_m2m_token says, once, which machine
// its tokens are minted as: the machine of its key, whose authority the
// requests it forwards carry.
func TestTheMachineMintedAsIsSaid(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	caller := clerk.NewMachine("caller")
	h := &MintHandler{MachineSecretKey: caller.SecretKey, APIURL: clerk.URL}
	require.NoError(t, provision(t, h))
	core, logs := logobserver.New(zap.InfoLevel)
	h.source.logger.Store(zap.New(core))
	for range 2 {
		req := asCaddyWould(httptest.NewRequest(http.MethodGet, "/", nil), caddy.NewReplacer())
		require.NoError(t, h.ServeHTTP(httptest.NewRecorder(), req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })))
	}
	said := logs.FilterMessageSnippet("clerk_m2m_token mints M2M tokens as machine " + caller.ID)
	assert.Equal(t, 1, said.Len(), "said once: %v", logs.All())
}
