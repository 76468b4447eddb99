package verify

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// TestNewRefusesOptionsThatCannotWork: New refuses a type that no key
// given verifies, a check that no type accepted reads, a Store that
// cannot work, a negative duration and a key given in the place of
// another, naming the options as the handler names them and what to set,
// and never repeating a key.
func TestNewRefusesOptionsThatCannotWork(t *testing.T) {
	private, _ := signingKeys(t)
	jwtKey, negative := publicPEM(t, private), -time.Second
	for name, tc := range map[string]struct {
		opts Options
		want []string // in the message
	}{
		"M2M tokens without a key": {Options{}, []string{"accepting m2m_token needs machine_secret_key",
			"or secret_key (or CLERK_SECRET_KEY)", "or jwt_key", "or publishable_key"}},
		"API keys with a machine key": {Options{Accept: []TokenType{APIKey}, MachineSecretKey: testMachineKey},
			[]string{"accepting api_key needs secret_key", "not with a machine secret key"}},
		"OAuth tokens with a JWT key": {Options{Accept: []TokenType{OAuthToken}, JWTKey: jwtKey}, []string{"accepting oauth_token needs secret_key"}},
		"session tokens with a machine key": {Options{Accept: []TokenType{SessionToken}, MachineSecretKey: testMachineKey},
			[]string{"accepting session_token needs secret_key (or CLERK_SECRET_KEY), or jwt_key", "or publishable_key"}},
		"an unknown type": {Options{Accept: []TokenType{"machine_token"}, MachineSecretKey: testMachineKey}, []string{`unknown token type "machine_token"`}},
		"an audience for API keys": {Options{Accept: []TokenType{APIKey}, SecretKey: testSecretKey, Audience: []string{"x"}},
			[]string{"audience applies to " + typeNames(kindsReading(optAudience)) + " only"}},
		"authorized parties without sessions": {Options{JWTKey: jwtKey, AuthorizedParties: []string{"x"}},
			[]string{"authorized_parties applies to session_token only"}},
		"an issuer without sessions": {Options{JWTKey: jwtKey, Issuer: []string{"x"}}, []string{"issuer applies to session_token only"}},
		"a store without a secret key": {Options{JWTKey: jwtKey, Store: newMemStore()},
			[]string{"shared_cache", "need secret_key or machine_secret_key"}},
		"a store with cache_ttl 0": {Options{MachineSecretKey: testMachineKey, Store: newMemStore(), CacheTTL: new(time.Duration(0))},
			[]string{"shared_cache", "cache_ttl is 0"}},
		"a negative clock_skew": {Options{JWTKey: jwtKey, ClockSkew: &negative}, []string{"clock_skew must not be negative"}},
		"a negative cache_ttl":  {Options{JWTKey: jwtKey, CacheTTL: &negative}, []string{"cache_ttl must not be negative"}},
		"a clock_skew of a day": {Options{JWTKey: jwtKey, ClockSkew: new(24 * time.Hour)},
			[]string{"clock_skew 24h0m0s is over its most, 5m0s", "tokens that expired that long ago"}},
		"a cache_ttl of 416 days": {Options{JWTKey: jwtKey, CacheTTL: new(10000 * time.Hour)},
			[]string{"cache_ttl 10000h0m0s is over its most, 1h0m0s", "revoked in Clerk keeps passing"}},
		"pk_ as secret_key":            {Options{SecretKey: "pk_test_Zm9v"}, []string{"secret_key must be", "set it as publishable_key"}},
		"ak_ as secret_key":            {Options{SecretKey: "ak_Zm9v"}, []string{"secret_key must be", "set it as machine_secret_key"}},
		"sk_ as machine_secret_key":    {Options{MachineSecretKey: "sk_test_Zm9v"}, []string{"machine_secret_key must be", "set it as secret_key"}},
		"a publishable key that isn't": {Options{PublishableKey: "pk_test_Zm9v"}, []string{"publishable_key: invalid publishable key"}},
		"a JWT key that isn't":         {Options{JWTKey: "Zm9v"}, []string{"jwt_key: "}},
		"an API URL that isn't":        {Options{MachineSecretKey: testMachineKey, APIURL: "ftp://clerk.example.com"}, []string{"api_url: "}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(tc.opts)
			require.Error(t, err)
			for _, part := range tc.want {
				assert.ErrorContains(t, err, part)
			}
			assert.NotContains(t, err.Error(), "Zm9v", "a key is never repeated")
		})
	}
	for name, tc := range map[string]struct {
		opts PoolOptions
		want string
	}{
		"a timeout of 0": {PoolOptions{Timeout: new(time.Duration(0))},
			"timeout 0 would give Clerk no time to answer: set a duration, or leave timeout out for 5s"},
		"a timeout of a day":      {PoolOptions{Timeout: new(24 * time.Hour)}, "timeout 24h0m0s is over its most, 1h0m0s"},
		"a negative timeout":      {PoolOptions{Timeout: &negative}, "timeout must not be negative"},
		"a negative max stale":    {PoolOptions{KeysMaxStale: &negative}, "jwks_max_stale must not be negative"},
		"a max stale of a week":   {PoolOptions{KeysMaxStale: new(7 * 24 * time.Hour)}, "jwks_max_stale 168h0m0s is over its most, 24h0m0s"},
		"negative calls":          {PoolOptions{MaxClerkCalls: -1}, "max_clerk_calls must not be negative"},
		"calls past Clerk's":      {PoolOptions{MaxClerkCalls: 100000}, "max_clerk_calls 100000 is over its most, 1000"},
		"negative bytes of cache": {PoolOptions{CacheMaxBytes: -1}, "cache_max_bytes must not be negative"},
	} {
		_, err := NewPool(tc.opts)
		assert.ErrorContains(t, err, tc.want, name)
	}
	_, err := NewPool(PoolOptions{KeysMaxStale: new(time.Duration(0)), Timeout: new(time.Hour), MaxClerkCalls: 1000, MaxClerkRate: 100000})
	assert.NoError(t, err, "0: never past their refresh; the ceiling itself; a rate past Clerk's is a caution (Setup.Cautions)")
	_, err = New(Options{JWTKey: jwtKey, ClockSkew: new(5 * time.Minute), CacheTTL: new(time.Hour)})
	assert.NoError(t, err, "the ceilings themselves")
}

// TestSessionsNeedNameEveryKeyThatServes: what New says to set for session
// tokens names every key that would do, the secret key included.
func TestSessionsNeedNameEveryKeyThatServes(t *testing.T) {
	_, err := New(Options{Accept: []TokenType{SessionToken}, MachineSecretKey: testMachineKey})
	assert.ErrorContains(t, err, "secret_key (or CLERK_SECRET_KEY)")
}

// TestSetup: what a Verifier verifies with, by the keys given (jwt_key
// before the secret key's JWKS, and that before the publishable key's),
// with the defaults applied.
func TestSetup(t *testing.T) {
	private, _ := signingKeys(t)
	jwtKey := publicPEM(t, private)
	publishable := "pk_test_" + base64.RawStdEncoding.EncodeToString([]byte("clerk.example.com$"))
	for name, tc := range map[string]struct {
		opts             Options
		opaque, jwtsWith string
	}{
		"a machine key":         {Options{MachineSecretKey: testMachineKey}, "machine_secret_key", "none"},
		"a secret key":          {Options{SecretKey: testSecretKey}, "secret_key", "jwks"},
		"both secret keys":      {Options{SecretKey: testSecretKey, MachineSecretKey: testMachineKey}, "machine_secret_key", "jwks"},
		"a JWT key":             {Options{JWTKey: jwtKey}, "none", "jwt_key"},
		"a JWT key, a secret":   {Options{SecretKey: testSecretKey, JWTKey: jwtKey}, "secret_key", "jwt_key"},
		"a publishable key":     {Options{PublishableKey: publishable}, "none", "frontend_api_jwks"},
		"a publishable, secret": {Options{SecretKey: testSecretKey, PublishableKey: publishable}, "secret_key", "jwks"},
		"all of them":           {Options{SecretKey: testSecretKey, JWTKey: jwtKey, PublishableKey: publishable}, "secret_key", "jwt_key"},
	} {
		setup := newVerifier(t, tc.opts).Setup()
		assert.Equal(t, tc.opaque, setup.OpaqueWith, name)
		assert.Equal(t, tc.jwtsWith, setup.JWTsWith, name)
	}
	setup := newVerifier(t, Options{MachineSecretKey: testMachineKey}).Setup()
	assert.Equal(t, Setup{Accept: []TokenType{M2MToken}, OpaqueWith: "machine_secret_key", JWTsWith: "none", APIURL: backend.DefaultURL,
		ClockSkew: 5 * time.Second, CacheTTL: 30 * time.Second, Timeout: 5 * time.Second, KeysMaxStale: time.Hour,
		MaxClerkCalls: 64, MaxClerkRate: 20, CacheMaxBytes: 64 << 20}, setup, "the defaults")
}

// TestCautions: settings that load but cost what a reader might not mean
// are said, once each; the defaults cost nothing.
func TestCautions(t *testing.T) {
	assert.Empty(t, Setup{CacheTTL: defaultCacheTTL, MaxClerkRate: defaultMaxClerkRate}.Cautions())
	assert.Empty(t, Setup{CacheTTL: cautiousCacheTTL, MaxClerkRate: clerkProductionRate}.Cautions())
	cautions := Setup{CacheTTL: 10 * time.Minute, MaxClerkRate: 1000}.Cautions()
	require.Len(t, cautions, 2)
	assert.Contains(t, cautions[0], "cache_ttl is 10m0s: an opaque credential revoked in Clerk keeps passing")
	assert.Contains(t, cautions[1], "max_clerk_rate is 1000 a second, more than the 100 Clerk takes")
}
