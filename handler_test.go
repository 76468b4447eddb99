package clerkm2m

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/oauthcheck"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
	"github.com/caddy-clerk/clerk-m2m/verify"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	logobserver "go.uber.org/zap/zaptest/observer"
)

// newContext returns a context like the one Caddy provisions a
// configuration's modules with.
func newContext(t testing.TB) caddy.Context {
	t.Helper()
	base, err := caddy.ProvisionContext(&caddy.Config{Admin: &caddy.AdminConfig{Disabled: true}})
	require.NoError(t, err)
	ctx, cancel := caddy.NewContext(base)
	t.Cleanup(cancel)
	return ctx
}

// provisioned is what either handler is to Caddy.
type provisioned interface {
	caddy.Provisioner
	caddy.Validator
	caddy.CleanerUpper
}

// provision provisions and validates h as Caddy would, and cleans it up
// when the test ends.
func provision(t testing.TB, h provisioned) error {
	t.Helper()
	t.Cleanup(func() { _ = h.Cleanup() })
	if err := h.Provision(newContext(t)); err != nil {
		return err
	}
	return h.Validate()
}

// testPEM is a valid RSA public key, for configurations that need one.
var testPEM = func() string {
	clerk := backendtest.New()
	defer clerk.Close()
	return clerk.PublicKeyPEM()
}()

// TestProvisionExpandsTheConfiguration: keys and lists are expanded from
// placeholders, keys not set come from the CLERK_* variables (trimmed),
// jwt_key may be a file, and what is not set is left to verify's
// defaults.
func TestProvisionExpandsTheConfiguration(t *testing.T) {
	testenv.ClearClerk(t)
	t.Setenv("CLERK_SECRET_KEY", "sk_test_from_env")
	t.Setenv("CLERK_MACHINE_SECRET_KEY", " ak_from_env\n")
	t.Setenv("CLERK_API_URL", "https://clerk-proxy.example.com/")
	h := &Handler{}
	require.NoError(t, provision(t, h))
	o := h.settings.verify
	assert.Equal(t, []string{"sk_test_from_env", "ak_from_env", "https://clerk-proxy.example.com/"},
		[]string{o.SecretKey, o.MachineSecretKey, o.APIURL}, "from the environment, blanks trimmed")
	assert.Nil(t, o.Accept, "verify's default")
	assert.Nil(t, o.ClockSkew, "verify's default")

	testenv.ClearClerk(t)
	t.Setenv("MY_CLERK_KEY", "sk_live_placeholder")
	keyFile := filepath.Join(t.TempDir(), "machine-key")
	require.NoError(t, os.WriteFile(keyFile, []byte("ak_from_file\n"), 0o600))
	pemFile := filepath.Join(t.TempDir(), "jwt.pem")
	require.NoError(t, os.WriteFile(pemFile, []byte(testPEM), 0o600))
	t.Setenv("MY_TYPES", "m2m_token")
	t.Setenv("MY_AUDIENCES", "https://a.example.com,https://b.example.com")
	h = &Handler{SecretKey: "{env.MY_CLERK_KEY}", MachineSecretKey: "{file." + keyFile + "}", JWTKey: pemFile,
		Accept: []string{"{env.MY_TYPES}"}, Audience: []string{"{env.MY_AUDIENCES}"}, CacheTTL: new(caddy.Duration(0))}
	require.NoError(t, provision(t, h))
	o = h.settings.verify
	assert.Equal(t, []string{"sk_live_placeholder", "ak_from_file", "https://api.clerk.com", testPEM},
		[]string{o.SecretKey, o.MachineSecretKey, o.APIURL, o.JWTKey})
	assert.Equal(t, []verify.TokenType{verify.M2MToken}, o.Accept)
	assert.Equal(t, []string{"https://a.example.com", "https://b.example.com"}, o.Audience)
	assert.Equal(t, new(time.Duration(0)), o.CacheTTL, "0 is set, not the default")
}

func TestProvisionAndValidateMakeNoNetworkCall(t *testing.T) {
	testenv.ClearClerk(t)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls.Add(1) }))
	defer srv.Close()
	h := &Handler{SecretKey: "sk_test_x", MachineSecretKey: "ak_x", APIURL: srv.URL, Accept: []string{"any"}}
	require.NoError(t, provision(t, h))
	assert.Zero(t, calls.Load(), "nothing runs before the configuration starts")
}

// TestConfigurationErrors: what the root reads (placeholders, lists) is
// refused with the option's name; what verify refuses (its own tests
// hold every case) reaches the operator as it says it.
func TestConfigurationErrors(t *testing.T) {
	testenv.ClearClerk(t)
	for name, tc := range map[string]struct {
		handler Handler
		want    string
	}{
		"unknown type": {Handler{SecretKey: "sk_test_x", Accept: []string{"machine_token"}}, `accept: unknown token type "machine_token"`},
		"empty accept": {Handler{SecretKey: "sk_test_x", Accept: []string{" "}}, "no token type"},
		"key from a missing file": {Handler{SecretKey: "{file./nonexistent/clerk_secret_key}"},
			`secret_key is set to "{file./nonexistent/clerk_secret_key}", which is empty`},
		"key from an unset variable": {Handler{MachineSecretKey: "{env.CLERK_M2M_TEST_UNSET}"}, "machine_secret_key is set to"},
		"unknown placeholder":        {Handler{SecretKey: "{vault.clerk}"}, "secret_key:"},
		"verify's refusal":           {Handler{MachineSecretKey: "ak_x", Accept: []string{"api_key"}}, "accepting api_key needs secret_key"},
		"the pool's refusal":         {Handler{SecretKey: "sk_test_x", MaxClerkCalls: -1}, "max_clerk_calls must not be negative"},
	} {
		t.Run(name, func(t *testing.T) {
			h := tc.handler
			err := provision(t, &h)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestZeroMeansNoneOrIsRefused: a duration written as 0 means none where
// none makes sense, and is refused where it could not work; it never
// quietly becomes the default. Values that weaken a check past reason are
// refused (verify's tests hold each ceiling).
func TestZeroMeansNoneOrIsRefused(t *testing.T) {
	testenv.ClearClerk(t)
	h, err := parse(t, "clerk_m2m {\n secret_key sk_test_x\n clock_skew 0\n cache_ttl 0\n jwks_max_stale 0\n}")
	require.NoError(t, err)
	require.NoError(t, provision(t, h))
	setup := h.verifier.Setup()
	assert.Zero(t, setup.ClockSkew, "clock_skew 0: no leeway")
	assert.Zero(t, setup.CacheTTL, "cache_ttl 0: no cache")
	assert.Zero(t, setup.KeysMaxStale, "jwks_max_stale 0: never past their renewal")

	for block, want := range map[string]string{
		"clerk_m2m {\n secret_key sk_test_x\n timeout 0\n}":              "timeout 0 would give Clerk no time to answer",
		"clerk_m2m {\n secret_key sk_test_x\n clock_skew 24h\n}":         "clock_skew 24h0m0s is over its most, 5m0s",
		"clerk_m2m {\n secret_key sk_test_x\n cache_ttl 10000h\n}":       "cache_ttl 10000h0m0s is over its most, 1h0m0s",
		"clerk_m2m {\n secret_key sk_test_x\n max_clerk_calls 100000\n}": "max_clerk_calls 100000 is over its most, 1000",
		"clerk_m2m_token {\n machine_secret_key ak_x\n ttl 0\n}":         "ttl must be at least 30s, not 0s",
		"clerk_m2m_token {\n machine_secret_key ak_x\n ttl 87600h\n}":    "ttl must be at most 24h0m0s",
		"clerk_m2m_token {\n machine_secret_key ak_x\n timeout 0\n}":     "timeout 0 would give Clerk no time to mint",
	} {
		err := caddyValidate(":8080 {\n " + block + "\n respond ok\n}")
		assert.ErrorContains(t, err, want, block)
	}
	minter := &MintHandler{}
	require.NoError(t, minter.UnmarshalCaddyfile(caddyfile.NewTestDispenser("clerk_m2m_token {\n machine_secret_key ak_x\n min_remaining_ttl 0\n}")))
	require.NoError(t, provision(t, minter))
	assert.Zero(t, minter.tokenOptions().MinRemainingTTLSeconds, "min_remaining_ttl 0: none")
}

// TestKeysCanBeTurnedOff: a key written as off is none, whatever its
// environment variable holds, so that a handler can do without a key the
// host's CLERK_* variables give: a jwt_key-only handler never asks Clerk.
func TestKeysCanBeTurnedOff(t *testing.T) {
	testenv.ClearClerk(t)
	t.Setenv("CLERK_SECRET_KEY", "sk_test_from_env")
	t.Setenv("CLERK_MACHINE_SECRET_KEY", "ak_from_env")
	t.Setenv("CLERK_PUBLISHABLE_KEY", "pk_test_Y2xlcmsuZXhhbXBsZS5jb20k")
	h, err := parse(t, "clerk_m2m {\n jwt_key \""+strings.ReplaceAll(testPEM, "\n", "\\n")+"\"\n secret_key off\n machine_secret_key off\n publishable_key off\n}")
	require.NoError(t, err)
	require.NoError(t, provision(t, h))
	setup := h.verifier.Setup()
	assert.Equal(t, "none", setup.OpaqueWith, "no key verifies opaque tokens: they are refused without a call to Clerk")
	assert.Equal(t, "jwt_key", setup.JWTsWith)
	assert.Empty(t, setup.SessionCookies, "no publishable key")

	_, err = through(t, h, "Bearer mt_0123456789abcdef0123456789abcdef")
	assert.ErrorContains(t, err, string(verify.ReasonTypeNotAccepted))
}

// TestCaddyValidateRefusesBadConfigs runs what `caddy validate` runs (adapt,
// load, provision, validate, without starting) on whole Caddyfiles.
func TestCaddyValidateRefusesBadConfigs(t *testing.T) {
	testenv.ClearClerk(t)
	for name, tc := range map[string]struct{ block, want string }{
		"good":                 {"secret_key sk_test_x", ""},
		"unknown subdirective": {"secret_keys sk_test_x", `unknown subdirective "secret_keys"`},
		"no key":               {"accept m2m_token", "accepting m2m_token needs"},
		"swapped keys":         {"secret_key ak_1\n machine_secret_key sk_test_1", "set it as machine_secret_key"},
		"unknown type":         {"secret_key sk_test_x\n accept m2m", `unknown token type "m2m"`},
		"a key from an unset variable": {"secret_key {$CLERK_M2M_TEST_UNSET}",
			"secret_key needs a value (a {$VARIABLE} that is not set leaves none: set it, or write {env.VARIABLE}"},
		"optional true": {"secret_key sk_test_x\n optional true", "optional takes no value: write optional alone to turn it on"},
		"a publishable key as the secret key": {"secret_key pk_test_Y2xlcmsuZXhhbXBsZS5jb20k",
			"a key starting with pk_ is a publishable key, which is not secret: set it as publishable_key"},
		"a JWT key file that is not there": {"jwt_key /etc/clerk/missing-jwt-key.pem",
			"jwt_key: stat /etc/clerk/missing-jwt-key.pem: no such file or directory: give the PEM text, or the path of a file holding it"},
		"a JWT key that is a folder": {"jwt_key /etc", "jwt_key: /etc is not a regular file"},
	} {
		t.Run(name, func(t *testing.T) {
			err := caddyValidate(":8080 {\n clerk_m2m {\n " + tc.block + "\n }\n respond ok\n}")
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestCaddyValidateNeverEchoesTheAPIURLsCredentials: an api_url with user
// info is refused by either handler, and what `caddy validate` says shows
// no piece of it.
func TestCaddyValidateNeverEchoesTheAPIURLsCredentials(t *testing.T) {
	testenv.ClearClerk(t)
	for _, handler := range []string{"clerk_m2m {\n secret_key sk_test_x", "clerk_m2m_token {\n machine_secret_key ak_x"} {
		for _, url := range []string{"https://clerkuser:pw0rdSECRET@api.clerk.com", "https://clerkuser:pw0rd/SECRET@api.clerk.com"} {
			err := caddyValidate(":8080 {\n " + handler + "\n api_url " + url + "\n }\n respond ok\n}")
			require.Error(t, err, handler)
			assert.Contains(t, err.Error(), "api_url: invalid Backend API URL")
			for _, piece := range []string{"clerkuser", "pw0rd", "SECRET"} {
				assert.NotContains(t, err.Error(), piece, handler)
			}
		}
	}
}

func caddyValidate(caddyfileText string) error {
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
	if err != nil {
		return err
	}
	var cfg caddy.Config
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		return err
	}
	return caddy.Validate(&cfg)
}

// asCaddyWould gives req the context Caddy's server gives every request:
// its replacer, its variables (with the two Caddy always sets), room for
// extra access log fields, and the server (here one without access log).
func asCaddyWould(req *http.Request, repl *caddy.Replacer) *http.Request {
	ctx := context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{
		caddyhttp.TrustedProxyVarKey: false, caddyhttp.ClientIPVarKey: "192.0.2.1"})
	ctx = context.WithValue(ctx, caddyhttp.ExtraLogFieldsCtxKey, new(caddyhttp.ExtraLogFields))
	ctx = context.WithValue(ctx, caddyhttp.ServerCtxKey, new(caddyhttp.Server))
	return req.WithContext(ctx)
}

// through runs one request through h with an earlier handler's identity
// already in the replacer, and returns what the next handler could read.
func through(t *testing.T, h *Handler, authorization string) (map[string]string, error) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	repl := caddy.NewReplacer()
	repl.Set(identityPlaceholderPrefix+"id", "user_from_an_earlier_handler")
	repl.Set(identityPlaceholderPrefix+"role", "admin")
	req = asCaddyWould(req, repl)
	var seen map[string]string
	err := h.ServeHTTP(httptest.NewRecorder(), req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		seen = map[string]string{}
		for _, name := range []string{"id", "role", "token_type", "claims", "claims.job"} {
			seen[name], _ = repl.GetString(identityPlaceholderPrefix + name)
		}
		for _, name := range []string{"id", "token_type", "claims"} {
			_, known := repl.GetString(identityPlaceholderPrefix + name)
			require.True(t, known, "{%s%s} must be known, even when empty", identityPlaceholderPrefix, name)
		}
		return nil
	}))
	return seen, err
}

func TestIdentityReplacesWhateverWasThere(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	gateway := clerk.NewMachine("gateway")
	h := &Handler{MachineSecretKey: gateway.SecretKey, APIURL: clerk.URL, Optional: true}
	require.NoError(t, provision(t, h))

	seen, err := through(t, h, "")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"id": "", "role": "", "token_type": "", "claims": "", "claims.job": ""}, seen,
		"anonymous: no identity, not even an earlier one")

	token, _ := clerk.CreateM2MToken(clerk.NewMachine("caller"), backendtest.TokenOptions{
		Scopes: []string{gateway.ID}, Claims: map[string]any{"job": "sync"}})
	seen, err = through(t, h, "Bearer "+token)
	require.NoError(t, err)
	assert.Equal(t, "m2m_token", seen["token_type"])
	assert.NotEqual(t, "user_from_an_earlier_handler", seen["id"])
	assert.Equal(t, "sync", seen["claims.job"])
	assert.Empty(t, seen["role"], "no placeholder of an earlier identity survives")

	_, err = through(t, h, "Bearer mt_0123456789abcdef0123456789abcdef")
	var handlerErr caddyhttp.HandlerError
	require.ErrorAs(t, err, &handlerErr)
	assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
}

// TestALaterHandlersIdentityIsSeen: with two clerk_m2m handlers on one
// request, the placeholders answer with the identity of the one that ran
// last, also when the first let the request through anonymously.
func TestALaterHandlersIdentityIsSeen(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	machines := &Handler{MachineSecretKey: clerk.NewMachine("gateway").SecretKey, APIURL: clerk.URL, Optional: true}
	require.NoError(t, provision(t, machines))
	users := &Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, Accept: []string{"session_token"},
		AuthorizedParties: []string{"https://app.example.com"}, PublishableKey: backendtest.PublishableKey(false)}
	require.NoError(t, provision(t, users))

	const user = "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr"
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.AddCookie(&http.Cookie{Name: "__session", Value: clerk.MintSessionJWT(user, backendtest.SessionOptions{AuthorizedParty: "https://app.example.com"})})
	req.AddCookie(&http.Cookie{Name: "__client_uat", Value: "1700000000"})
	repl := caddy.NewReplacer()
	req = asCaddyWould(req, repl)
	var seen []string
	read := func() {
		id, _ := repl.GetString(identityPlaceholderPrefix + "id")
		tokenType, _ := repl.GetString(identityPlaceholderPrefix + "token_type")
		seen = append(seen, id+" "+tokenType)
	}
	err := machines.ServeHTTP(httptest.NewRecorder(), req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		read()
		return users.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
			read()
			return nil
		}))
	}))
	require.NoError(t, err)
	assert.Equal(t, []string{" ", user + " session_token"}, seen)
	assert.Empty(t, repl.ReplaceAll("{http.vars."+identityHolderVar+"}", ""), "the holder never renders")
}

// TestCookieSessionsNeedASignedInBrowser: a session token from the
// __session cookie counts only with the __client_uat cookie of a browser
// signed in no later than the token was minted; one from the header needs
// none.
func TestCookieSessionsNeedASignedInBrowser(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	h := &Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, Accept: []string{"session_token"}, PublishableKey: backendtest.PublishableKey(false)}
	require.NoError(t, provision(t, h))
	session := clerk.MintSessionJWT("user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", backendtest.SessionOptions{})
	issued := time.Now().Unix() // at most the token's iat
	for name, tc := range map[string]struct {
		header, cookie string
		reason         string // "" for let through
	}{
		"signed in before the token": {"", fmt.Sprintf("__session=%s; __client_uat=%d", session, issued-60), ""},
		"no __client_uat":            {"", "__session=" + session, "session_outdated"},
		"signed out":                 {"", "__session=" + session + "; __client_uat=0", "session_outdated"},
		"changed after the token":    {"", fmt.Sprintf("__session=%s; __client_uat=%d", session, issued+3600), "session_outdated"},
		"from the header":            {"Bearer " + session, "__client_uat=0", ""},
	} {
		t.Run(name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			req.Header.Set("Cookie", tc.cookie)
			repl := caddy.NewReplacer()
			recorder := httptest.NewRecorder()
			err := h.ServeHTTP(recorder, asCaddyWould(req, repl), caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil }))
			if tc.reason == "" {
				require.NoError(t, err)
				return
			}
			var handlerErr caddyhttp.HandlerError
			require.ErrorAs(t, err, &handlerErr)
			assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
			reason, _ := repl.GetString(verifyErrorPlaceholder)
			assert.Equal(t, tc.reason, reason)
			assert.Contains(t, recorder.Header().Get("WWW-Authenticate"), `error="invalid_token"`)
		})
	}
}

// TestSessionsWithoutAPublishableKeyReadNoCookie: a route that takes
// sessions without publishable_key says, when it loads, that it reads no
// browser cookie; one with the key, or taking no session, says nothing.
func TestSessionsWithoutAPublishableKeyReadNoCookie(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	for name, tc := range map[string]struct {
		h    *Handler
		said bool
	}{
		"sessions, no publishable key": {&Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, Accept: []string{"any"}}, true},
		"sessions and a publishable key": {&Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, Accept: []string{"session_token"},
			PublishableKey: backendtest.PublishableKey(false)}, false},
		"no sessions": {&Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, Accept: []string{"api_key"}}, false},
	} {
		t.Run(name, func(t *testing.T) {
			t.Cleanup(func() { _ = tc.h.Cleanup() })
			require.NoError(t, tc.h.Provision(newContext(t)))
			core, logs := logobserver.New(zap.InfoLevel)
			tc.h.logger = zap.New(core)
			require.NoError(t, tc.h.Validate())
			assert.Equal(t, tc.said, logs.FilterMessageSnippet("no browser cookie is read").Len() == 1)
		})
	}
}

// TestAClientThatLeftIsNoClerkOutage: when the client goes away while Clerk
// is being asked, the request ends with 499, and neither handler reports
// Clerk as failing.
func TestAClientThatLeftIsNoClerkOutage(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	gateway := clerk.NewMachine("gateway")
	token, _ := clerk.CreateM2MToken(clerk.NewMachine("caller"), backendtest.TokenOptions{Scopes: []string{gateway.ID}})
	clerk.SetFault(backendtest.Fault{Hang: true})
	verifier := &Handler{MachineSecretKey: gateway.SecretKey, APIURL: clerk.URL}
	require.NoError(t, provision(t, verifier))
	minter := &MintHandler{MachineSecretKey: clerk.NewMachine("minter").SecretKey, APIURL: clerk.URL}
	require.NoError(t, provision(t, minter))
	core, warnings := logobserver.New(zap.WarnLevel)
	verifier.alerts, minter.alerts = newAlerter(zap.New(core)), newAlerter(zap.New(core))
	unavailable := func() float64 {
		return testutil.ToFloat64(metrics.verifications.WithLabelValues("m2m_token", "opaque", string(verify.ReasonUnavailable)))
	}
	before := unavailable()

	for name, handler := range map[string]caddyhttp.MiddlewareHandler{"clerk_m2m": verifier, "clerk_m2m_token": minter} {
		ctx, leave := context.WithCancel(context.Background())
		req := asCaddyWould(httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil), caddy.NewReplacer())
		req.Header.Set("Authorization", "Bearer "+token)
		time.AfterFunc(50*time.Millisecond, leave)
		err := handler.ServeHTTP(httptest.NewRecorder(), req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
			t.Errorf("%s passed the request on", name)
			return nil
		}))
		var handlerErr caddyhttp.HandlerError
		require.ErrorAs(t, err, &handlerErr, name)
		assert.Equal(t, 499, handlerErr.StatusCode, name)
	}
	assert.Zero(t, warnings.Len(), "no alert about Clerk")
	assert.Equal(t, before, unavailable(), "no clerk_unavailable counted")
}

// A request prepared by caddyhttp.PrepareRequest without a server (as
// `caddy clerk-m2m inspect` prepares one) carries a nil *Server: no access
// log, and no panic.
func TestAccessLogFieldsWithoutAServer(t *testing.T) {
	req := asCaddyWould(httptest.NewRequest(http.MethodGet, "/", nil), caddy.NewReplacer())
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.ServerCtxKey, (*caddyhttp.Server)(nil)))
	assert.NotPanics(t, func() { addAccessLogFields(req, accessLogFields{&verify.Identity{Subject: "mch_x"}}) })
}

const (
	mcpResource    = "https://mcp.example.com/mcp"
	mcpMetadataURL = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
)

// publishableKeyOf is a publishable key whose Frontend API is host.
func publishableKeyOf(host string) string {
	return "pk_live_" + base64.StdEncoding.EncodeToString([]byte(host+"$"))
}

// mcpHandler is a handler of OAuth JWTs, verified with no network call,
// that requires the scope mcp:tools, configured by with.
func mcpHandler(t *testing.T, clerk *backendtest.Server, with func(*Handler)) *Handler {
	t.Helper()
	testenv.ClearClerk(t)
	h := &Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, JWTKey: clerk.PublicKeyPEM(),
		PublishableKey: publishableKeyOf("clerk.example.com"), Accept: []string{"oauth_token"},
		RequireScopes: []string{"mcp:tools"}, ProtectedResource: &ProtectedResource{Resource: mcpResource}}
	if with != nil {
		with(h)
	}
	require.NoError(t, provision(t, h))
	return h
}

// roundTrip sends one request through h, and returns the answer and the
// error h returned (the status of a refusal is the error's).
func roundTrip(h *Handler, req *http.Request) (*httptest.ResponseRecorder, error) {
	w := httptest.NewRecorder()
	err := h.ServeHTTP(w, asCaddyWould(req, caddy.NewReplacer()), caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		w.WriteHeader(http.StatusTeapot) // the upstream
		return nil
	}))
	return w, err
}

// statusOfAnswer is the status the request is answered with.
func statusOfAnswer(w *httptest.ResponseRecorder, err error) int {
	var handlerErr caddyhttp.HandlerError
	if errors.As(err, &handlerErr) {
		return handlerErr.StatusCode
	}
	return w.Code
}

// TestResourceMetadataIsServed: the metadata is served, unauthenticated
// and to any origin, at the path RFC 9728 builds from the resource and at
// the root; it holds RFC 9728's members only, of their types.
func TestResourceMetadataIsServed(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	h := mcpHandler(t, clerk, nil)
	for _, path := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} {
		w, err := roundTrip(h, httptest.NewRequest(http.MethodGet, path, nil))
		require.NoError(t, err, path)
		require.Equal(t, http.StatusOK, w.Code, path)
		assert.Equal(t, "application/json", w.Header().Get("Content-Type"))
		assert.Equal(t, "*", w.Header().Get("Access-Control-Allow-Origin"))
		require.NoError(t, oauthcheck.CheckResourceMetadata(w.Body.Bytes()), path)
		assert.JSONEq(t, `{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://clerk.example.com"],`+
			`"scopes_supported":["mcp:tools"],"bearer_methods_supported":["header"]}`, w.Body.String(), path)
	}

	w, err := roundTrip(h, httptest.NewRequest(http.MethodOptions, "/.well-known/oauth-protected-resource/mcp", nil))
	require.NoError(t, err)
	assert.Equal(t, http.StatusNoContent, w.Code, "a CORS preflight")
	assert.Equal(t, "*", w.Header().Get("Access-Control-Allow-Origin"))
	assert.Contains(t, w.Header().Get("Access-Control-Allow-Methods"), "GET")
	assert.Contains(t, w.Header().Get("Access-Control-Allow-Headers"), "MCP-Protocol-Version")

	w, err = roundTrip(h, httptest.NewRequest(http.MethodHead, "/.well-known/oauth-protected-resource/mcp", nil))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, w.Code)
	assert.Empty(t, w.Body.String())

	w, err = roundTrip(h, httptest.NewRequest(http.MethodPost, "/.well-known/oauth-protected-resource/mcp", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, statusOfAnswer(w, err))
	assert.Equal(t, "GET, HEAD, OPTIONS", w.Header().Get("Allow"))

	for _, path := range []string{"/.well-known/oauth-protected-resource/mcp/", "/.well-known/oauth-protected-resource/other", "/mcp"} {
		w, err := roundTrip(h, httptest.NewRequest(http.MethodGet, path, nil))
		assert.Equal(t, http.StatusUnauthorized, statusOfAnswer(w, err), "%s is gated as any other path", path)
	}
}

// TestResourceMetadataFields: where the metadata is for a resource at the
// origin, and what the configuration may set in it.
func TestResourceMetadataFields(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	for _, tc := range []struct {
		name     string
		resource ProtectedResource
		require  []string
		url      string // where the challenges point
		document string
	}{
		{"at the origin", ProtectedResource{Resource: "https://mcp.example.com"}, nil,
			"https://mcp.example.com/.well-known/oauth-protected-resource",
			`{"resource":"https://mcp.example.com","authorization_servers":["https://clerk.example.com"],"bearer_methods_supported":["header"]}`},
		{"at the origin, with its slash", ProtectedResource{Resource: "https://mcp.example.com/"}, nil,
			"https://mcp.example.com/.well-known/oauth-protected-resource",
			`{"resource":"https://mcp.example.com/","authorization_servers":["https://clerk.example.com"],"bearer_methods_supported":["header"]}`},
		{"everything set", ProtectedResource{Resource: "http://127.0.0.1:8080/tools/mcp", AuthorizationServers: []string{"https://auth.example.com"},
			ScopesSupported: []string{"read", "write"}, ResourceName: "Tools", ResourceDocumentation: "https://docs.example.com/mcp"}, []string{"read"},
			"http://127.0.0.1:8080/.well-known/oauth-protected-resource/tools/mcp",
			`{"resource":"http://127.0.0.1:8080/tools/mcp","authorization_servers":["https://auth.example.com"],"scopes_supported":["read","write"],` +
				`"bearer_methods_supported":["header"],"resource_name":"Tools","resource_documentation":"https://docs.example.com/mcp"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mcpHandler(t, clerk, func(h *Handler) { h.ProtectedResource, h.RequireScopes = &tc.resource, tc.require })
			assert.Equal(t, tc.url, h.settings.resource.url)
			assert.JSONEq(t, tc.document, string(h.settings.resource.document))
			assert.NoError(t, oauthcheck.CheckResourceMetadata(h.settings.resource.document))
			assert.Contains(t, h.settings.verify.Audience, tc.resource.Resource, "the resource is an audience")
		})
	}
}

// TestEveryRefusalPointsAtTheMetadata: every 401 and 403 of a protected
// resource carries a challenge that parses as RFC 9110 auth-params, with
// resource_metadata naming the metadata; and that is all that changes:
// the challenge is the one the same route gives without it, and that
// parameter.
func TestEveryRefusalPointsAtTheMetadata(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	gated := mcpHandler(t, clerk, nil)
	plain := mcpHandler(t, clerk, func(h *Handler) { h.ProtectedResource, h.Audience = nil, []string{mcpResource} })
	oauth := func(audience []string, scopes []string, ttl time.Duration) string {
		return "Bearer " + clerk.MintOAuthJWT(testUserID, backendtest.OAuthJWTOptions{OAuthOptions: backendtest.OAuthOptions{
			Audience: audience, Scopes: scopes, TTL: ttl}})
	}
	for _, tc := range []struct {
		name, authorization string
		status              int
		error               string
	}{
		{"no credential", "", http.StatusUnauthorized, ""},
		{"garbage", "Bearer oat_0123456789abcdef0123456789abcdef.x", http.StatusUnauthorized, "invalid_token"},
		{"for another resource", oauth([]string{"https://other.example.com/mcp"}, []string{"mcp:tools"}, 0), http.StatusUnauthorized, "invalid_token"},
		{"for no resource", oauth(nil, []string{"mcp:tools"}, 0), http.StatusUnauthorized, "invalid_token"},
		{"expired", oauth([]string{mcpResource}, []string{"mcp:tools"}, -time.Hour), http.StatusUnauthorized, "invalid_token"},
		{"a type not accepted", "Bearer " + clerk.MintM2MJWT(clerk.NewMachine("caller"), backendtest.JWTOptions{}), http.StatusUnauthorized, "invalid_token"},
		{"without the scope", oauth([]string{mcpResource}, []string{"email"}, 0), http.StatusForbidden, "insufficient_scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/mcp", nil)
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			w, err := roundTrip(gated, req)
			require.Equal(t, tc.status, statusOfAnswer(w, err))
			gatedChallenge := w.Header().Get("WWW-Authenticate")
			challenge, err := oauthcheck.ParseChallenge(gatedChallenge)
			require.NoError(t, err)
			assert.Equal(t, "Bearer", challenge.Scheme)
			assert.Equal(t, mcpMetadataURL, challenge.Params["resource_metadata"])
			assert.Equal(t, tc.error, challenge.Params["error"])
			if tc.status == http.StatusForbidden {
				assert.Equal(t, "mcp:tools", challenge.Params["scope"])
			}

			w, err = roundTrip(plain, req)
			require.Equal(t, tc.status, statusOfAnswer(w, err))
			assert.Equal(t, w.Header().Get("WWW-Authenticate")+`, resource_metadata="`+mcpMetadataURL+`"`, gatedChallenge,
				"nothing else changes")
		})
	}

	req := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	req.Header.Set("Authorization", oauth([]string{mcpResource}, []string{"mcp:tools"}, 0))
	w, err := roundTrip(gated, req)
	require.NoError(t, err)
	assert.Equal(t, http.StatusTeapot, w.Code, "a token for the resource, with the scope, reaches the upstream")
}

const testUserID = "user_2yVd5dVGkLTrDhvYBqm5kLm0jLA"

// TestProtectedResourceConfigurationErrors: what cannot be a protected
// resource is refused when the configuration loads, saying why.
func TestProtectedResourceConfigurationErrors(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	testenv.ClearClerk(t)
	for name, tc := range map[string]struct {
		change func(*Handler)
		want   string
	}{
		"no URI":                {func(h *Handler) { h.ProtectedResource.Resource = "" }, "needs the resource's URI"},
		"plain http":            {func(h *Handler) { h.ProtectedResource.Resource = "http://mcp.example.com/mcp" }, "not an absolute https URL"},
		"relative":              {func(h *Handler) { h.ProtectedResource.Resource = "/mcp" }, "not an absolute https URL"},
		"a query":               {func(h *Handler) { h.ProtectedResource.Resource = mcpResource + "?tenant=a" }, "no credentials, fragment or query"},
		"a fragment":            {func(h *Handler) { h.ProtectedResource.Resource = mcpResource + "#x" }, "no credentials, fragment or query"},
		"credentials":           {func(h *Handler) { h.ProtectedResource.Resource = "https://u:p@mcp.example.com/mcp" }, "no credentials, fragment or query"},
		"unquotable":            {func(h *Handler) { h.ProtectedResource.Resource = `https://mcp"x.example.com/mcp` }, "cannot be quoted"},
		"no server":             {func(h *Handler) { h.PublishableKey = "" }, "set publishable_key"},
		"a bad publishable key": {func(h *Handler) { h.PublishableKey = "pk_test_bm90IGEga2V5" }, "publishable_key:"},
		"a bad server":          {func(h *Handler) { h.ProtectedResource.AuthorizationServers = []string{"clerk.example.com"} }, "authorization_servers:"},
		"bad documentation":     {func(h *Handler) { h.ProtectedResource.ResourceDocumentation = "ftp://docs.example.com" }, "resource_documentation:"},
		"no OAuth tokens":       {func(h *Handler) { h.Accept = []string{"session_token"} }, "add oauth_token to accept"},
		"an unset variable":     {func(h *Handler) { h.ProtectedResource.Resource = "{env.CLERK_M2M_TEST_UNSET}" }, "protected_resource is set to"},
	} {
		t.Run(name, func(t *testing.T) {
			h := &Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, PublishableKey: publishableKeyOf("clerk.example.com"),
				Accept: []string{"oauth_token"}, ProtectedResource: &ProtectedResource{Resource: mcpResource}}
			tc.change(h)
			err := provision(t, h)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestProtectedResourceMakesNoNetworkCall: the authorization server is
// derived from the publishable key, not fetched; loading asks the Frontend
// API nothing.
func TestProtectedResourceMakesNoNetworkCall(t *testing.T) {
	testenv.ClearClerk(t)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls.Add(1) }))
	defer srv.Close()
	h := &Handler{SecretKey: "sk_test_x", APIURL: srv.URL, PublishableKey: publishableKeyOf(strings.TrimPrefix(srv.URL, "http://")),
		Accept: []string{"oauth_token"}, ProtectedResource: &ProtectedResource{Resource: mcpResource}}
	require.NoError(t, provision(t, h))
	var document struct {
		AuthorizationServers []string `json:"authorization_servers"`
	}
	require.NoError(t, json.Unmarshal(h.settings.resource.document, &document))
	assert.Equal(t, []string{srv.URL}, document.AuthorizationServers, "a loopback Frontend API is plain http")
	assert.Zero(t, calls.Load())
}

// TestClientsAreCaddysClientIPs: the client verify shares the calls to
// Clerk between is the client IP Caddy decided (trusted_proxies and all);
// an IPv6 client is its /64, so that one host's many addresses are one
// client.
func TestClientsAreCaddysClientIPs(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.7":                 "192.0.2.7",
		"2001:db8:1:2:3:4:5:6":      "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff::1": "2001:db8:1:2::/64",
		"::ffff:192.0.2.7":          "::ffff:192.0.2.7",
		"":                          "",
	} {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: ip}))
		assert.Equal(t, want, clientOf(req), ip)
	}
}
