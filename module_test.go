package clerkm2m

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
	"github.com/caddy-clerk/clerk-m2m/verify"
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

func TestProvisionDefaultsFromTheEnvironment(t *testing.T) {
	testenv.ClearClerk(t)
	t.Setenv("CLERK_SECRET_KEY", "sk_test_from_env")
	t.Setenv("CLERK_MACHINE_SECRET_KEY", " ak_from_env\n")
	t.Setenv("CLERK_API_URL", "https://clerk-proxy.example.com/")
	h := &Handler{}
	require.NoError(t, provision(t, h))
	assert.Equal(t, "sk_test_from_env", h.secretKey)
	assert.Equal(t, "ak_from_env", h.machineSecretKey, "surrounding blanks are trimmed")
	assert.Equal(t, "https://clerk-proxy.example.com/", h.apiURL)
	assert.Equal(t, []verify.TokenType{verify.M2MToken}, h.accept)
	assert.Equal(t, caddy.Duration(5*time.Second), h.Timeout)
	assert.Equal(t, caddy.Duration(5*time.Second), *h.ClockSkew)
	assert.Equal(t, caddy.Duration(30*time.Second), *h.CacheTTL)
}

func TestProvisionExpandsPlaceholders(t *testing.T) {
	testenv.ClearClerk(t)
	t.Setenv("MY_CLERK_KEY", "sk_live_placeholder")
	keyFile := filepath.Join(t.TempDir(), "machine-key")
	require.NoError(t, os.WriteFile(keyFile, []byte("ak_from_file\n"), 0o600))
	t.Setenv("MY_TYPES", "m2m_token")
	t.Setenv("MY_AUDIENCES", "https://a.example.com,https://b.example.com")
	h := &Handler{SecretKey: "{env.MY_CLERK_KEY}", MachineSecretKey: "{file." + keyFile + "}", Accept: []string{"{env.MY_TYPES}"},
		Audience: []string{"{env.MY_AUDIENCES}"}}
	require.NoError(t, provision(t, h))
	assert.Equal(t, "sk_live_placeholder", h.secretKey)
	assert.Equal(t, "ak_from_file", h.machineSecretKey)
	assert.Equal(t, []string{"https://a.example.com", "https://b.example.com"}, h.audience)
	assert.Equal(t, "https://api.clerk.com", h.apiURL)
}

func TestProvisionReadsTheJWTKey(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	keyFile := filepath.Join(t.TempDir(), "jwt.pem")
	require.NoError(t, os.WriteFile(keyFile, []byte(clerk.PublicKeyPEM()), 0o600))
	for name, value := range map[string]string{"PEM text": clerk.PublicKeyPEM(), "file path": keyFile} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, provision(t, &Handler{JWTKey: value}))
		})
	}
}

func TestProvisionAndValidateMakeNoNetworkCall(t *testing.T) {
	testenv.ClearClerk(t)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls.Add(1) }))
	defer srv.Close()
	h := &Handler{SecretKey: "sk_test_x", MachineSecretKey: "ak_x", APIURL: srv.URL}
	require.NoError(t, provision(t, h))
	time.Sleep(50 * time.Millisecond)
	assert.Zero(t, calls.Load())
}

func TestValidationErrors(t *testing.T) {
	testenv.ClearClerk(t)
	for name, tc := range map[string]struct {
		handler Handler
		want    string
	}{
		"no key at all": {Handler{}, "set machine_secret_key (or CLERK_MACHINE_SECRET_KEY) or secret_key (or CLERK_SECRET_KEY)"},
		"unknown type":  {Handler{SecretKey: "sk_test_x", Accept: []string{"machine_token"}}, `unknown token type "machine_token"`},
		"api keys without the secret key": {Handler{MachineSecretKey: "ak_x", Accept: []string{"m2m_token", "api_key"}},
			"accepting api_key needs secret_key (or CLERK_SECRET_KEY)"},
		"oauth without the secret key": {Handler{JWTKey: testPEM, Accept: []string{"oauth_token"}},
			"accepting oauth_token needs secret_key"},
		"any without the secret key": {Handler{MachineSecretKey: "ak_x", Accept: []string{"any"}}, "needs secret_key"},
		"sessions without keys": {Handler{MachineSecretKey: "ak_x", Accept: []string{"session_token"}},
			"accepting session_token needs secret_key (or CLERK_SECRET_KEY) to fetch the signing keys, or jwt_key"},
		"authorized parties without sessions": {Handler{SecretKey: "sk_test_x", AuthorizedParties: []string{"https://app.example.com"}},
			"authorized_parties applies to session tokens"},
		"issuer without sessions": {Handler{SecretKey: "sk_test_x", Accept: []string{"m2m_token"}, Issuer: []string{"https://clerk.example.com"}},
			"issuer applies to session tokens"},
		"audience of API keys": {Handler{SecretKey: "sk_test_x", Accept: []string{"api_key"}, Audience: []string{"https://api.example.com"}},
			"audience applies to OAuth tokens, session tokens and M2M JWTs, not to API keys"},
		"empty accept":              {Handler{SecretKey: "sk_test_x", Accept: []string{" "}}, "no token type"},
		"machine key as secret key": {Handler{SecretKey: "ak_123"}, "set it as machine_secret_key"},
		"secret key as machine key": {Handler{MachineSecretKey: "sk_live_123"}, "set it as secret_key"},
		"publishable key as secret": {Handler{SecretKey: "pk_test_123"}, "secret_key must be an instance secret key starting with sk_"},
		"not a key":                 {Handler{MachineSecretKey: "hunter2"}, "machine_secret_key must be a machine secret key starting with ak_"},
		"bad JWT key":               {Handler{JWTKey: "not a key"}, "jwt_key:"},
		"bad API URL":               {Handler{SecretKey: "sk_test_x", APIURL: "api.clerk.com"}, "api_url:"},
		"key from a missing file": {Handler{SecretKey: "{file./nonexistent/clerk_secret_key}"},
			`secret_key is set to "{file./nonexistent/clerk_secret_key}", which is empty`},
		"key from an unset variable": {Handler{MachineSecretKey: "{env.CLERK_M2M_TEST_UNSET}"},
			"machine_secret_key is set to"},
		"unknown placeholder": {Handler{SecretKey: "{vault.clerk}"}, "secret_key:"},
		"negative timeout":    {Handler{SecretKey: "sk_test_x", Timeout: caddy.Duration(-time.Second)}, "timeout must be positive"},
		"negative clock skew": {Handler{SecretKey: "sk_test_x", ClockSkew: durationPtr(-time.Second)}, "clock_skew must not be negative"},
		"negative cache ttl":  {Handler{SecretKey: "sk_test_x", CacheTTL: durationPtr(-time.Second)}, "cache_ttl must not be negative"},
		"negative calls":      {Handler{SecretKey: "sk_test_x", MaxClerkCalls: -1}, "max_clerk_calls must be positive"},
		"negative cache size": {Handler{SecretKey: "sk_test_x", CacheMaxBytes: -1}, "cache_max_bytes must be positive"},
		"shared cache without a cache": {Handler{SecretKey: "sk_test_x", SharedCache: true, CacheTTL: durationPtr(0)},
			"shared_cache shares what cache_ttl keeps, and cache_ttl is 0"},
		"shared cache without opaque credentials": {Handler{JWTKey: testPEM, SharedCache: true},
			"shared_cache shares verdicts on opaque credentials, which need secret_key or machine_secret_key"},
	} {
		t.Run(name, func(t *testing.T) {
			h := tc.handler
			err := provision(t, &h)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestEveryTypeSaysWhichKeysVerifyIt: a credential type verify knows and
// this table does not would be refused at load; a row for each.
func TestEveryTypeSaysWhichKeysVerifyIt(t *testing.T) {
	all, err := verify.ParseTokenTypes([]string{"any"})
	require.NoError(t, err)
	for _, tokenType := range all {
		assert.Contains(t, keysToVerify, tokenType)
	}
	assert.Len(t, keysToVerify, len(all))
}

// testPEM is a valid RSA public key, for configurations that need one.
var testPEM = func() string {
	clerk := backendtest.New()
	defer clerk.Close()
	return clerk.PublicKeyPEM()
}()

// TestCaddyValidateRefusesBadConfigs runs what `caddy validate` runs (adapt,
// load, provision, validate, without starting) on whole Caddyfiles.
func TestCaddyValidateRefusesBadConfigs(t *testing.T) {
	testenv.ClearClerk(t)
	for name, tc := range map[string]struct{ block, want string }{
		"good":                 {"secret_key sk_test_x", ""},
		"unknown subdirective": {"secret_keys sk_test_x", `unknown subdirective "secret_keys"`},
		"no key":               {"accept m2m_token", "accepting m2m_token needs a key"},
		"swapped keys":         {"secret_key ak_1\n machine_secret_key sk_test_1", "set it as machine_secret_key"},
		"unknown type":         {"secret_key sk_test_x\n accept m2m", `unknown token type "m2m"`},
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
