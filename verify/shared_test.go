package verify

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/internal/testclock"
)

// namedBackend is a Backend with a fingerprint: the Clerk API and keys it
// stands for.
type namedBackend struct {
	*slowBackend
	name string
}

func (n namedBackend) Fingerprint() string { return n.name }

// TestVerdictsAnswerOnlyForVerifiersSetUpAlike: Verifiers that share one
// cache answer from each other's verdicts only when they would give the
// same verdict: the same accepted types, keys, Backend, clock skew, cache
// TTL, authorized parties, audience and issuer. The policy applies after
// the cache, whatever answered.
func TestVerdictsAnswerOnlyForVerifiersSetUpAlike(t *testing.T) {
	c := testclock.New(testNow)
	private, other := signingKeys(t)
	jwt := sign(t, private, m2mHeader(), m2mPayload())
	clerk := &slowBackend{expiry: testNow.Add(time.Hour)}
	base := func(shared *Shared) Options {
		keys, err := PEMKey(publicPEM(t, private)) // parsed anew, as by each configuration
		require.NoError(t, err)
		return Options{Accept: []TokenType{M2MToken}, Backend: namedBackend{clerk, "instance"}, Keys: keys,
			CacheTTL: time.Minute, ClockSkew: 5 * time.Second, now: c.Now, Shared: shared}
	}
	otherKey, err := PEMKey(publicPEM(t, other))
	require.NoError(t, err)
	for name, tc := range map[string]struct {
		change func(*Options)
		shares bool
	}{
		"set up alike":                  {func(*Options) {}, true},
		"with a policy of its own":      {func(o *Options) { o.RequireScopes = []string{"mch_1xxxxx"} }, true},
		"lists in another order":        {func(o *Options) { o.Accept = []TokenType{APIKey, M2MToken} }, false},
		"accepting other types":         {func(o *Options) { o.Accept = []TokenType{M2MToken, APIKey} }, false},
		"another Backend":               {func(o *Options) { o.Backend = namedBackend{clerk, "another machine key"} }, false},
		"a Backend without fingerprint": {func(o *Options) { o.Backend = clerk }, false},
		"another key":                   {func(o *Options) { o.Keys = otherKey }, false},
		"another clock skew":            {func(o *Options) { o.ClockSkew = 0 }, false},
		"another cache TTL":             {func(o *Options) { o.CacheTTL = time.Second }, false},
		"an audience":                   {func(o *Options) { o.Audience = []string{"mch_1xxxxx"} }, false},
		"authorized parties":            {func(o *Options) { o.AuthorizedParties = []string{"https://app.example.com"} }, false},
		"an issuer":                     {func(o *Options) { o.Issuer = []string{"https://clerk.example.com"} }, false},
	} {
		t.Run(name, func(t *testing.T) {
			opaque := "mt_" + strings.ReplaceAll(name, " ", "_")
			shared := NewShared(SharedOptions{now: c.Now})
			first := New(base(shared))
			for _, credential := range []string{opaque, jwt} {
				_, err := first.Verify(context.Background(), credential)
				require.NoError(t, err)
			}
			opts := base(shared)
			tc.change(&opts)
			var hits []bool
			opts.OnCacheLookup = func(_ string, hit bool) { hits = append(hits, hit) }
			second := New(opts)
			for _, credential := range []string{opaque, jwt} {
				_, _ = second.Verify(context.Background(), credential)
			}
			assert.Equal(t, []bool{tc.shares, tc.shares}, hits, "answered from the first one's verdicts")
		})
	}
	t.Run("the policy still applies to a shared verdict", func(t *testing.T) {
		shared := NewShared(SharedOptions{now: c.Now})
		_, err := New(base(shared)).Verify(context.Background(), jwt)
		require.NoError(t, err)
		strict := base(shared)
		strict.RequireScopes = []string{"mch_not_granted"}
		_, err = New(strict).Verify(context.Background(), jwt)
		requireReason(t, err, ReasonInsufficientScope)
	})
}

func TestExpiredVerdictsAreReclaimed(t *testing.T) {
	c := testclock.New(testNow)
	cache := newVerdictCache(DefaultCacheMaxBytes, c.Now)
	defer cache.close()
	entry := func(i byte, life time.Duration) *cacheEntry {
		e := entryFor(i)
		e.until = c.Now().Add(life)
		return e
	}
	for i := range byte(5) {
		cache.put(entry(i, time.Second), c.Now())
	}
	cache.put(entry(5, time.Hour), c.Now())
	cache.put(entry(6, time.Second), c.Now()) // behind a live one
	c.Advance(time.Second)
	cache.put(entry(7, time.Hour), c.Now())
	assert.Equal(t, 3, cache.len(), "adding one drops the expired ones at the front")
	cache.sweep()
	assert.Equal(t, 2, cache.len(), "a sweep drops the others")
	assert.Equal(t, 2*entrySize(entryFor(0)), cache.bytes)

	cache.close()
	assert.Zero(t, cache.len())
	cache.put(entry(8, time.Hour), c.Now())
	assert.Zero(t, cache.len(), "a closed cache keeps nothing")
}

func TestASweepComesBackOnlyWhileEntriesAreHeld(t *testing.T) {
	c := testclock.New(testNow)
	cache := newVerdictCache(DefaultCacheMaxBytes, c.Now)
	defer cache.close()
	assert.Nil(t, cache.sweeper, "an empty cache has no sweep")
	e := entryFor(1)
	e.until = testNow.Add(time.Second)
	cache.put(e, testNow)
	assert.NotNil(t, cache.sweeper, "one is armed with the first entry")
	c.Advance(time.Second)
	cache.sweep()
	assert.Zero(t, cache.len())
	assert.Nil(t, cache.sweeper, "and none is left once the cache is empty")
}

// TestEntrySizeCoversWhatEntriesHold fills a cache with identities whose
// claims take the shapes that cost the most once decoded (numbers, members,
// nesting) or rendered (<, >, &), decodes and renders them as placeholders
// would, and checks that the memory they hold is within what the cache
// counted.
func TestEntrySizeCoversWhatEntriesHold(t *testing.T) {
	const size = 4 << 10
	repeat := func(open, item, sep, close string) []byte {
		n := (size - len(open) - len(close)) / (len(item) + len(sep))
		return []byte(open + strings.Repeat(item+sep, n-1) + item + close)
	}
	members := func() []byte {
		var b bytes.Buffer
		b.WriteString("{")
		for i := 0; b.Len() < size; i++ {
			fmt.Fprintf(&b, `"m%d":0,`, i)
		}
		b.Truncate(b.Len() - 1)
		b.WriteString("}")
		return b.Bytes()
	}
	for name, claims := range map[string][]byte{
		"none":                  nil,
		"a JWT's":               []byte(`{"aud":["mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk"],"iss":"https://clerk.example.com","scopes":"mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk","sub":"mch_2vYVtestTESTtestTESTtestTEST","jti":"mt_2xKa9Bgv7NxMRDFyQw8LpZ3cTmU1vHjE","iat":1795784000,"nbf":1795783990,"exp":1795787600}`),
		"one long string":       repeat(`{"s":"`, "x", "", `"}`),
		"numbers":               repeat(`{"n":[`, "0", ",", `]}`),
		"members":               members(),
		"nested lists":          []byte(`{"a":` + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}`),
		"characters to escape":  repeat(`{"h":"`, "<", "", `"}`),
		"empty objects in list": repeat(`{"o":[`, "{}", ",", `]}`),
	} {
		t.Run(name, func(t *testing.T) {
			cache := newVerdictCache(1<<40, fixedClock)
			defer cache.close()
			const entries = 64
			before := heapInUse()
			for i := range entries {
				id := &Identity{Subject: "mch_caller", TokenID: fmt.Sprintf("mt_%d", i), Scopes: []string{"mch_a", "mch_b"},
					claimsJSON: bytes.Clone(claims)}
				require.Equal(t, claims == nil, id.Claims() == nil, "the claims decode")
				require.Equal(t, claims == nil, id.ClaimsJSON() == "{}")
				cache.put(&cacheEntry{key: cacheKey{token: id.TokenID}, identity: id, until: testNow.Add(time.Hour)}, testNow)
			}
			held := heapInUse() - before
			t.Logf("held %d bytes an entry, counted %d", held/entries, cache.bytes/entries)
			assert.LessOrEqual(t, held, cache.bytes, "the estimate is not below what the entries hold")
			assert.Equal(t, entries, cache.len())
		})
	}
}

// heapInUse is the memory of the live objects, after a collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	return int64(stats.HeapAlloc)
}
