package clerkm2m

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCaddyfileAdapt checks testdata/caddyfile/*.caddyfiletest: a Caddyfile,
// a line of dashes, and the JSON it must adapt to.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile/*.caddyfiletest")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			require.NoError(t, err)
			input, expected, found := strings.Cut(string(data), "----------\n")
			require.True(t, found, "no ---------- separator")
			if !caddytest.CompareAdapt(t, file, input, "caddyfile", strings.TrimRight(expected, "\n")) {
				t.Fail()
			}
		})
	}
}

func parse(t *testing.T, input string) (*Handler, error) {
	t.Helper()
	h := new(Handler)
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	return h, err
}

func TestUnmarshalCaddyfile(t *testing.T) {
	h, err := parse(t, `clerk_m2m {
		secret_key sk_test_abc
		machine_secret_key ak_abc
		jwt_key "-----BEGIN PUBLIC KEY-----"
		api_url https://clerk.example.com
		accept m2m_token api_key
		require_scopes mch_gateway read:invoices
		allowed_subjects mch_billing org_acme
		authorized_parties https://app.example.com
		audience https://api.example.com mch_gateway
		issuer https://clerk.example.com
		protected_resource https://mcp.example.com/mcp {
			authorization_servers https://clerk.example.com
			scopes_supported email profile
			resource_name "Example tools"
			resource_documentation https://docs.example.com/mcp
		}
		optional
		strip_authorization
		timeout 2s
		clock_skew 0
		cache_ttl 1m
		jwks_max_stale 24h
		max_clerk_calls 16
		max_clerk_rate 5
		cache_max_bytes 8MiB
	}`)
	require.NoError(t, err)
	assert.Equal(t, "sk_test_abc", h.SecretKey)
	assert.Equal(t, "ak_abc", h.MachineSecretKey)
	assert.Equal(t, "-----BEGIN PUBLIC KEY-----", h.JWTKey)
	assert.Equal(t, "https://clerk.example.com", h.APIURL)
	assert.Equal(t, []string{"m2m_token", "api_key"}, h.Accept)
	assert.Equal(t, []string{"mch_gateway", "read:invoices"}, h.RequireScopes)
	assert.Equal(t, []string{"mch_billing", "org_acme"}, h.AllowedSubjects)
	assert.Equal(t, []string{"https://app.example.com"}, h.AuthorizedParties)
	assert.Equal(t, []string{"https://api.example.com", "mch_gateway"}, h.Audience)
	assert.Equal(t, []string{"https://clerk.example.com"}, h.Issuer)
	assert.Equal(t, &ProtectedResource{Resource: "https://mcp.example.com/mcp", AuthorizationServers: []string{"https://clerk.example.com"},
		ScopesSupported: []string{"email", "profile"}, ResourceName: "Example tools", ResourceDocumentation: "https://docs.example.com/mcp"},
		h.ProtectedResource)
	assert.True(t, h.Optional)
	assert.True(t, h.StripAuthorization)
	assert.Equal(t, new(caddy.Duration(2e9)), h.Timeout)
	require.NotNil(t, h.ClockSkew)
	assert.Zero(t, *h.ClockSkew, "an explicit 0 is kept, not replaced by the default")
	require.NotNil(t, h.CacheTTL)
	assert.Equal(t, caddy.Duration(60e9), *h.CacheTTL)
	assert.Equal(t, new(caddy.Duration(24*time.Hour)), h.JWKSMaxStale)
	assert.Equal(t, 16, h.MaxClerkCalls)
	assert.Equal(t, 5, h.MaxClerkRate)
	assert.Equal(t, int64(8<<20), h.CacheMaxBytes)

	h, err = parse(t, "clerk_m2m {\n protected_resource https://mcp.example.com/mcp\n optional\n}")
	require.NoError(t, err)
	assert.Equal(t, &Handler{ProtectedResource: &ProtectedResource{Resource: "https://mcp.example.com/mcp"}, Optional: true}, h,
		"protected_resource's block may be left out")

	h, err = parse(t, `clerk_m2m`)
	require.NoError(t, err)
	assert.Equal(t, &Handler{}, h, "no block: everything from the environment and defaults")
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for name, tc := range map[string]struct{ input, want string }{
		"unknown subdirective": {"clerk_m2m {\n secret sk_test_abc\n}", `unknown subdirective "secret"`},
		"argument on the line": {"clerk_m2m sk_test_abc", "takes no arguments"},
		"missing argument": {"clerk_m2m {\n secret_key\n}",
			"secret_key needs a value (a {$VARIABLE} that is not set leaves none: set it, or write {env.VARIABLE}"},
		"an empty key":           {"clerk_m2m {\n secret_key \"\"\n}", "secret_key is empty: leave secret_key out for its default, or write secret_key off for no key"},
		"an empty URL":           {"clerk_m2m {\n api_url \"\"\n}", "api_url is empty: leave api_url out for its default"},
		"extra argument":         {"clerk_m2m {\n api_url https://a https://b\n}", "api_url takes one value, not more"},
		"accept without a type":  {"clerk_m2m {\n accept\n}", "accept needs at least one value"},
		"scopes without a scope": {"clerk_m2m {\n require_scopes\n}", "require_scopes needs at least one value"},
		"audience without one":   {"clerk_m2m {\n audience\n}", "audience needs at least one value"},
		"optional with a value":  {"clerk_m2m {\n optional true\n}", "optional takes no value: write optional alone to turn it on"},
		"optional twice":         {"clerk_m2m {\n optional\n optional\n}", "optional given twice"},
		"given twice":            {"clerk_m2m {\n secret_key sk_a\n secret_key sk_b\n}", "secret_key given twice"},
		"bad duration":           {"clerk_m2m {\n timeout soon\n}", "timeout:"},
		"duration with two args": {"clerk_m2m {\n cache_ttl 1s 2s\n}", "cache_ttl takes one value, not more"},
		"no calls at all":        {"clerk_m2m {\n max_clerk_calls 0\n}", `max_clerk_calls: "0" is not a whole number above 0`},
		"calls not a number":     {"clerk_m2m {\n max_clerk_calls many\n}", `max_clerk_calls: "many" is not a whole number above 0`},
		"no rate at all":         {"clerk_m2m {\n max_clerk_rate 0\n}", `max_clerk_rate: "0" is not a whole number above 0`},
		"size not a size":        {"clerk_m2m {\n cache_max_bytes big\n}", `cache_max_bytes: "big" is not a size above 0`},
		"no size at all":         {"clerk_m2m {\n cache_max_bytes 0\n}", `cache_max_bytes: "0" is not a size above 0`},
		"size past int64":        {"clerk_m2m {\n cache_max_bytes 9EiB\n}", `cache_max_bytes: "9EiB" is not a size above 0`},
		"a resource without URI": {"clerk_m2m {\n protected_resource {\n resource_name x\n }\n}", "protected_resource needs a value"},
		"a resource of two URIs": {"clerk_m2m {\n protected_resource https://a https://b\n}", "protected_resource takes one value, not more"},
		"unknown in the resource": {"clerk_m2m {\n protected_resource https://a {\n issuer x\n }\n}",
			`unknown subdirective "issuer" in protected_resource (known: authorization_servers, scopes_supported, resource_name, resource_documentation)`},
		"twice in the resource": {"clerk_m2m {\n protected_resource https://a {\n resource_name x\n resource_name y\n }\n}",
			"resource_name given twice"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parse(t, tc.input)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// FuzzUnmarshalCaddyfile feeds the directives' parsers (clerk_m2m and
// clerk_m2m_token) any block: they may refuse it, but never panic.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"clerk_m2m",
		"clerk_m2m {\n secret_key sk_test_x\n machine_secret_key ak_x\n accept any\n optional\n}",
		"clerk_m2m {\n require_scopes a b c\n allowed_subjects mch_1\n authorized_parties https://a\n timeout 2s\n}",
		"clerk_m2m {\n jwt_key `-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----`\n}",
		"clerk_m2m {\n protected_resource https://mcp.example.com/mcp {\n scopes_supported a b\n }\n}",
		"clerk_m2m {\n cache_ttl\n}", "clerk_m2m x {", "clerk_m2m {\n {\n}\n}", "clerk_m2m {\n timeout -1ns\n}",
		"clerk_m2m_token {\n format jwt\n renew_at 80%\n claims {\n team billing\n }\n}", "clerk_m2m_token {\n claims {\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
		if err != nil || len(tokens) == 0 {
			return
		}
		_ = new(Handler).UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
		_ = new(MintHandler).UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	})
}
