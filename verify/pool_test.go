package verify

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/testclock"
)

// TestVerdictsAnswerOnlyForVerifiersSetUpAlike: Verifiers that share a
// Pool answer from each other's verdicts only when they would give the
// same verdict: the same accepted types (in any order), keys, Clerk, clock
// skew, cache TTL, authorized parties, audience and issuer. The policy
// applies after the cache, whatever answered.
func TestVerdictsAnswerOnlyForVerifiersSetUpAlike(t *testing.T) {
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	c := testclock.New(testNow)
	clerk.SetClock(c.Now)
	caller, service := clerk.NewMachine("caller"), clerk.NewMachine("service")
	private, other := signingKeys(t)
	jwt := sign(t, private, m2mHeader(), m2mPayload())
	base := func(pool *Pool) Options {
		return Options{Accept: []TokenType{M2MToken, SessionToken}, SecretKey: clerk.SecretKey(), APIURL: clerk.URL,
			JWTKey: publicPEM(t, private), CacheTTL: new(time.Minute), now: c.Now, Pool: pool} // each parses its key anew
	}
	for name, tc := range map[string]struct {
		change func(*Options)
		shares bool
	}{
		"set up alike":               {func(*Options) {}, true},
		"with a policy of its own":   {func(o *Options) { o.RequireScopes = []string{"mch_not_granted"} }, true},
		"lists in another order":     {func(o *Options) { o.Accept = []TokenType{SessionToken, M2MToken} }, true},
		"accepting other types":      {func(o *Options) { o.Accept = append(o.Accept, APIKey) }, false},
		"another machine key":        {func(o *Options) { o.MachineSecretKey = service.SecretKey }, false},
		"a stand-in for Clerk":       {func(o *Options) { o.clerk = &fakeClerk{} }, false},
		"another key":                {func(o *Options) { o.JWTKey = publicPEM(t, other) }, false},
		"another clock skew":         {func(o *Options) { o.ClockSkew = new(time.Duration(0)) }, false},
		"another cache TTL":          {func(o *Options) { o.CacheTTL = new(time.Second) }, false},
		"an audience":                {func(o *Options) { o.Audience = []string{"mch_1xxxxx"} }, false},
		"authorized parties":         {func(o *Options) { o.AuthorizedParties = []string{"https://app.example.com"} }, false},
		"an issuer":                  {func(o *Options) { o.Issuer = []string{"https://clerk.example.com"} }, false},
		"another URL for one server": {func(o *Options) { o.APIURL = strings.Replace(clerk.URL, "127.0.0.1", "localhost", 1) }, false},
	} {
		t.Run(name, func(t *testing.T) {
			opaque, _ := clerk.CreateM2MToken(caller, backendtest.TokenOptions{})
			pool, err := NewPool(PoolOptions{now: c.Now})
			require.NoError(t, err)
			first := newVerifier(t, base(pool))
			for _, credential := range []string{opaque, jwt} {
				keep(t, first, credential)
			}
			opts := base(pool)
			tc.change(&opts)
			var hits []bool
			opts.OnCacheLookup = func(_ string, hit bool) { hits = append(hits, hit) }
			second := newVerifier(t, opts)
			for _, credential := range []string{opaque, jwt} {
				_, err := second.Verify(context.Background(), credential)
				if len(opts.RequireScopes) > 0 {
					requireReason(t, err, ReasonInsufficientScope) // the policy applies to a shared verdict
				}
			}
			assert.Equal(t, []bool{tc.shares, tc.shares}, hits, "answered from the first one's verdicts")
		})
	}
}

// TestPoolRun: while Run runs, the Pool fetches the signing keys of its
// Verifiers at once, whether made before Run or while it runs, so that
// verifying needs no fetch; when its context ends, Run returns, and the
// Pool has forgotten every verdict and remembers none after, while its
// Verifiers still verify.
func TestPoolRun(t *testing.T) {
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	fetched := make(chan string, 8)
	pool, err := NewPool(PoolOptions{OnKeysFetch: func(url string, err error) {
		assert.NoError(t, err)
		fetched <- url
	}})
	require.NoError(t, err)
	before := newVerifier(t, Options{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, Pool: pool, now: time.Now})
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	ran := make(chan struct{})
	go func() {
		pool.Run(ctx)
		close(ran)
	}()
	assert.Equal(t, clerk.URL, receive(t, fetched, "the fetch of the keys of a Verifier made before Run"))
	host := strings.TrimPrefix(clerk.URL, "http://")
	after := newVerifier(t, Options{Accept: []TokenType{SessionToken}, Pool: pool, now: time.Now,
		PublishableKey: "pk_test_" + base64.RawStdEncoding.EncodeToString([]byte(host+"$"))})
	assert.Equal(t, clerk.URL, receive(t, fetched, "the fetch of the keys of a Verifier made while Run runs"))
	waitFor(t, func() bool { // onFetch is told before the set is in use
		pool.mu.Lock()
		defer pool.mu.Unlock()
		for _, source := range pool.sources {
			if source.untilNextRefresh(0) == 0 {
				return false
			}
		}
		return true
	})

	machine := clerk.NewMachine("caller")
	opaque, _ := clerk.CreateM2MToken(machine, backendtest.TokenOptions{})
	for v, credential := range map[*Verifier]string{
		before: clerk.MintM2MJWT(machine, backendtest.JWTOptions{}),
		after:  clerk.MintSessionJWT("user_1", backendtest.SessionOptions{}),
	} {
		keep(t, v, credential)
	}
	_, err = before.Verify(context.Background(), opaque)
	require.NoError(t, err)
	assert.Equal(t, 3, pool.cache.len())
	assert.Equal(t, 1, clerk.Calls("/v1/jwks"), "the keys fetched by Run served")
	assert.Equal(t, 1, clerk.Calls("/.well-known/jwks.json"))

	stop()
	receive(t, ran, "Run's return once its context ended")
	assert.Zero(t, pool.cache.len(), "every verdict forgotten")
	_, err = before.Verify(context.Background(), opaque)
	require.NoError(t, err, "its Verifiers still verify")
	assert.Zero(t, pool.cache.len(), "and the Pool remembers nothing more")
}
