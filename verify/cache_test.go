package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/internal/testclock"
)

// TestOpaqueCacheKeepsAVerdictForTheTTLNeverBeyondTheToken: Clerk is
// asked once in CacheTTL about a credential, and again as soon as the
// credential expires, if that comes first.
func TestOpaqueCacheKeepsAVerdictForTheTTLNeverBeyondTheToken(t *testing.T) {
	c := testclock.New(testNow)
	clerk := &fakeClerk{}
	v := opaqueVerifier(t, clerk, 30*time.Second, PoolOptions{now: c.Now})
	for range 50 {
		id, err := v.Verify(context.Background(), "mt_one")
		require.NoError(t, err)
		assert.Equal(t, "mt_one", id.TokenID)
	}
	assert.Equal(t, int32(1), clerk.calls.Load(), "50 sequential verifications within the TTL make one call")

	clerk.expiry = testNow.Add(10 * time.Second)
	_, err := v.Verify(context.Background(), "mt_short")
	require.NoError(t, err)
	c.Advance(10 * time.Second)
	clerk.expiry = testNow // Clerk now reports the tokens expired
	_, err = v.Verify(context.Background(), "mt_short")
	requireReason(t, err, ReasonExpired)
	assert.Equal(t, int32(3), clerk.calls.Load(), "asked again once the token expired")

	_, err = v.Verify(context.Background(), "mt_one")
	require.NoError(t, err)
	c.Advance(20 * time.Second)
	_, err = v.Verify(context.Background(), "mt_one")
	requireReason(t, err, ReasonExpired)
	assert.Equal(t, int32(4), clerk.calls.Load(), "asked again after the TTL")
}

// TestConcurrentRequestsMakeOneCall: the requests presenting a credential
// while Clerk is asked about it share that one call, whether the cache is
// on or off; with it off, nothing is kept, and a later request asks again.
func TestConcurrentRequestsMakeOneCall(t *testing.T) {
	for _, ttl := range []time.Duration{30 * time.Second, 0} {
		t.Run("cache_ttl "+ttl.String(), func(t *testing.T) {
			clerk := &fakeClerk{gate: make(chan struct{})}
			v := opaqueVerifier(t, clerk, ttl, PoolOptions{})
			results := make([]chan error, 100)
			for i := range results {
				results[i] = verifyInBackground(context.Background(), v, "", "mt_burst")
			}
			waitFor(t, func() bool { return v.waiting("mt_burst") == len(results) })
			close(clerk.gate)
			for _, result := range results {
				require.NoError(t, receive(t, result, "an answer"))
			}
			assert.Equal(t, int32(1), clerk.calls.Load())

			_, err := v.Verify(context.Background(), "mt_burst")
			require.NoError(t, err)
			if ttl == 0 {
				assert.Equal(t, int32(2), clerk.calls.Load(), "cache_ttl 0: every request after asks Clerk")
				assert.Zero(t, v.pool.cache.len())
			} else {
				assert.Equal(t, int32(1), clerk.calls.Load(), "the cache answers after")
			}
		})
	}
}

// TestOpaqueCacheRemembersRefusalsBrieflyAndTroubleNever: Clerk's "no" is
// remembered for a second, sparing Clerk a client that retries a dead
// token; trouble reaching Clerk is not remembered at all.
func TestOpaqueCacheRemembersRefusalsBrieflyAndTroubleNever(t *testing.T) {
	c := testclock.New(testNow)
	clerk := &fakeClerk{err: &backend.Error{Status: 404}}
	v := opaqueVerifier(t, clerk, 30*time.Second, PoolOptions{now: c.Now})
	for range 3 {
		_, err := v.Verify(context.Background(), "mt_unknown")
		requireReason(t, err, ReasonInvalid)
	}
	assert.Equal(t, int32(1), clerk.calls.Load())

	c.Advance(negativeTTL)
	clerk.err = errors.New("outage")
	for range 3 {
		_, err := v.Verify(context.Background(), "mt_unknown")
		requireReason(t, err, ReasonUnavailable)
	}
	assert.Equal(t, int32(4), clerk.calls.Load(), "a refusal is not remembered beyond a second, nor an outage at all")

	clerk.err = nil // the token now exists (minted a moment ago, say)
	_, err := v.Verify(context.Background(), "mt_unknown")
	assert.NoError(t, err, "recovers as soon as Clerk answers")
}

// TestARepeatedRefusalIsRememberedTwiceAsLong: each time Clerk refuses a
// credential again, asked once its last refusal stopped answering, the
// refusal is remembered twice as long, up to maxRefusalMemory: a client
// presenting a dead token every second for two hours costs 13 calls to
// Clerk, not 7,200; one that comes back after a refusal is forgotten
// starts over at a second; and a token Clerk learns meanwhile is accepted
// once the refusal it had stops answering.
func TestARepeatedRefusalIsRememberedTwiceAsLong(t *testing.T) {
	expiration := testNow.Add(-time.Minute).UnixMilli()
	for name, clerk := range map[string]*fakeClerk{
		"not found": {err: &backend.Error{Status: 404}},
		"revoked":   {m2m: &backend.M2MToken{Object: "machine_to_machine_token", ID: "mt_id", Subject: "mch_caller", Revoked: true}},
		"expired":   {m2m: &backend.M2MToken{Object: "machine_to_machine_token", ID: "mt_id", Subject: "mch_caller", Expiration: &expiration}},
	} {
		t.Run(name, func(t *testing.T) {
			c := testclock.New(testNow)
			v := opaqueVerifier(t, clerk, 30*time.Second, PoolOptions{now: c.Now})
			var askedAt []time.Duration
			for elapsed := time.Duration(0); elapsed < 2*time.Hour; elapsed += time.Second {
				before := clerk.calls.Load()
				_, err := v.Verify(context.Background(), "mt_dead")
				require.Error(t, err)
				if clerk.calls.Load() > before {
					askedAt = append(askedAt, elapsed)
				}
				c.Advance(time.Second)
			}
			want := []time.Duration{0}
			for wait := negativeTTL; len(want) < 13; wait = min(2*wait, maxRefusalMemory) {
				want = append(want, want[len(want)-1]+wait)
			}
			assert.Equal(t, want, askedAt, "when Clerk was asked")

			c.Advance(2 * maxRefusalMemory) // its last refusal is forgotten
			_, err := v.Verify(context.Background(), "mt_dead")
			require.Error(t, err)
			clerk.err, clerk.m2m, clerk.expiry = nil, nil, c.Now().Add(time.Hour) // and the token is one Clerk learns now
			c.Advance(negativeTTL - time.Millisecond)
			_, err = v.Verify(context.Background(), "mt_dead")
			require.Error(t, err, "the refusal still answers")
			c.Advance(time.Millisecond)
			_, err = v.Verify(context.Background(), "mt_dead")
			require.NoError(t, err, "refused for a second only, as the first time")
		})
	}
}

// TestCacheIsBoundedInBytes: verdicts on opaque tokens and on JWTs alike
// fill the cache up to its bound in bytes, the oldest giving way; a verdict
// larger than half the bound (what each kind has to itself) is not kept.
func TestCacheIsBoundedInBytes(t *testing.T) {
	private, _ := signingKeys(t)
	for format, credential := range map[Format]func(int) string{
		Opaque: func(i int) string { return fmt.Sprintf("mt_%02d", i) },
		JWT: func(i int) string {
			return sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"jti": fmt.Sprintf("mt_%02d", i)}))
		},
	} {
		t.Run(string(format), func(t *testing.T) {
			clerk, keys := &fakeClerk{}, keysFor(private, "")
			verifier := func(maxBytes int64) *Verifier {
				pool, err := NewPool(PoolOptions{CacheMaxBytes: maxBytes})
				require.NoError(t, err)
				return newVerifier(t, Options{MachineSecretKey: testMachineKey, clerk: clerk, keys: keys, CacheTTL: new(time.Minute), Pool: pool})
			}
			verify := func(v *Verifier, i int) { keep(t, v, credential(i)) }
			probe := verifier(0)
			verify(probe, 0)
			oneEntry := probe.pool.cache.held()

			v := verifier(10 * oneEntry)
			for i := range 25 {
				verify(v, i)
			}
			assert.Equal(t, 10, v.pool.cache.len())
			assert.Equal(t, 10*oneEntry, v.pool.cache.held())
			asked := func() int32 { return clerk.calls.Load() + keys.calls.Load() }
			before := asked()
			verify(v, 24)
			assert.Equal(t, before, asked(), "the newest entries are kept")
			_, err := v.Verify(context.Background(), credential(0))
			require.NoError(t, err)
			assert.Equal(t, before+1, asked(), "the oldest were dropped")
		})
	}
	t.Run("an entry larger than half the bound", func(t *testing.T) {
		cache := newVerdictCache(2*entryOverhead, fixedClock)
		cache.put(entryFor(0), testNow)
		assert.Zero(t, cache.len())
		assert.Zero(t, cache.held())
	})
}

// TestEachKindOfVerdictKeepsHalfTheBound: verdicts Clerk was asked for
// (opaque successes) and the others (JWTs, refusals) may each fill the
// cache alone; once the other kind comes, either is pushed down to half
// the bound, and no further, however many of the other come after.
func TestEachKindOfVerdictKeepsHalfTheBound(t *testing.T) {
	entry := func(format Format, i int) *cacheEntry {
		return &cacheEntry{key: cacheKey{token: fmt.Sprintf("mt_%04d", i)}, identity: &Identity{Format: format, Subject: "mch_xxxxxxxx"},
			until: testNow.Add(time.Hour)}
	}
	size := entrySize(entry(Opaque, 0))
	require.Equal(t, size, entrySize(entry(JWT, 0)), "the two kinds' entries weigh alike here")
	for _, first := range []Format{Opaque, JWT} {
		t.Run("filled with "+string(first), func(t *testing.T) {
			second := map[Format]Format{Opaque: JWT, JWT: Opaque}[first]
			cache := newVerdictCache(10*size, fixedClock)
			count := func(format Format, from, to int) (kept int) {
				for i := from; i < to; i++ {
					if cache.getKey(entry(format, i).key, testNow) != nil {
						kept++
					}
				}
				return kept
			}
			for i := range 8 {
				cache.put(entry(first, i), testNow)
			}
			assert.Equal(t, 8, count(first, 0, 8), "alone, a kind uses the room the other leaves")
			for i := 100; i < 1100; i++ {
				cache.put(entry(second, i), testNow)
			}
			assert.Equal(t, 5, count(first, 0, 8), "pushed down to half, no further")
			assert.Equal(t, 5, count(second, 100, 1100))
			assert.Equal(t, 10*size, cache.held())
		})
	}
}

// TestAJWTUsedOnceIsNotKept: JWTs used once take no place in the cache,
// and push no verdict in use out of it, however many come; a JWT used
// twice amid them is kept from its second use.
func TestAJWTUsedOnceIsNotKept(t *testing.T) {
	private, _ := signingKeys(t)
	token := func(jti string) string {
		return sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"jti": jti}))
	}
	keys := keysFor(private, "")
	pool, err := NewPool(PoolOptions{CacheMaxBytes: 32 << 10}) // some ten JWT verdicts
	require.NoError(t, err)
	v := newVerifier(t, Options{keys: keys, Pool: pool})
	inUse, again := token("mt_in_use"), token("mt_again")
	keep(t, v, inUse)
	for i := range 100 {
		if i == 50 {
			keep(t, v, again)
		}
		_, err := v.Verify(context.Background(), token(fmt.Sprintf("mt_%03d", i)))
		require.NoError(t, err)
	}
	assert.Equal(t, 2, pool.cache.len(), "none of those used once kept")
	asked := keys.calls.Load()
	for _, credential := range []string{inUse, again} {
		_, err := v.Verify(context.Background(), credential)
		require.NoError(t, err)
	}
	assert.Equal(t, asked, keys.calls.Load(), "both still kept")
}

// TestAFleetThatFitsTheCacheIsKept: JWTs used in turn, as a fleet's
// callers use theirs, are all kept from their second use, however they
// fall in the doorkeeper's bits, when their verdicts fit the cache: for
// every bound from 1 MiB to 16 GiB, the doorkeeper takes in more than
// twice the keys of the verdicts on M2M JWTs the cache holds before it
// forgets them, in less than 1/128 of the bound.
func TestAFleetThatFitsTheCacheIsKept(t *testing.T) {
	private, _ := signingKeys(t)
	pool, err := NewPool(PoolOptions{CacheMaxBytes: 1 << 20})
	require.NoError(t, err)
	v := newVerifier(t, Options{keys: keysFor(private, ""), Pool: pool})
	fleet := make([]string, 300)
	for i := range fleet {
		fleet[i] = sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"jti": fmt.Sprintf("mt_%03d", i)}))
	}
	for range 2 {
		for _, credential := range fleet {
			_, err := v.Verify(context.Background(), credential)
			require.NoError(t, err)
		}
	}
	require.Equal(t, len(fleet), pool.cache.len(), "all kept from their second use")
	perVerdict := pool.cache.held() / int64(len(fleet))
	require.Less(t, int64(len(fleet)), pool.cache.seen.limit, "the fleet took in fewer keys than the limit")

	for bound := int64(1 << 20); bound <= 16<<30; bound *= 4 {
		d := newDoorkeeper(bound)
		assert.Greater(t, d.limit, 2*bound/perVerdict, "%d bytes", bound)
		assert.LessOrEqual(t, 8*int64(len(d.words)), bound/128, "%d bytes: it takes less than its share of the bound", bound)
	}
}

// TestJWTsCannotEvictOpaqueVerdicts: an insider cycling through many large
// JWTs of the instance (which verify, and which a policy may refuse after)
// fills the cache with their verdicts; the opaque tokens verified before
// are still answered from the cache, without a call to Clerk.
func TestJWTsCannotEvictOpaqueVerdicts(t *testing.T) {
	private, _ := signingKeys(t)
	clerk, keys := &fakeClerk{}, keysFor(private, "")
	pool, err := NewPool(PoolOptions{CacheMaxBytes: 1 << 20})
	require.NoError(t, err)
	v := newVerifier(t, Options{MachineSecretKey: testMachineKey, clerk: clerk, keys: keys, CacheTTL: new(time.Minute), Pool: pool,
		RequireScopes: []string{"mch_this_gateway"}})
	warm := make([]string, 50)
	for i := range warm {
		warm[i] = fmt.Sprintf("mt_warm_%02d", i)
		_, err := v.Verify(context.Background(), warm[i])
		requireReason(t, err, ReasonInsufficientScope)
	}
	pad := strings.Repeat("x", 10<<10)
	for i := range 100 { // some 5 MiB of verdicts
		jwt := sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"jti": fmt.Sprintf("mt_%03d", i), "pad": pad}))
		_, err := v.Verify(context.Background(), jwt)
		requireReason(t, err, ReasonInsufficientScope)
	}
	require.Equal(t, int32(100), keys.calls.Load(), "every JWT was verified, none answered from the cache")
	for _, token := range warm {
		_, err := v.Verify(context.Background(), token)
		requireReason(t, err, ReasonInsufficientScope)
	}
	assert.Equal(t, int32(len(warm)), clerk.calls.Load(), "the opaque tokens are answered from the cache")
}

// entryFor is a cache entry for the credential numbered i, valid for an
// hour.
func entryFor(i byte) *cacheEntry {
	return &cacheEntry{key: cacheKey{token: fmt.Sprintf("mt_%03d", i)}, identity: &Identity{}, until: testNow.Add(time.Hour)}
}

func TestExpiredVerdictsAreReclaimed(t *testing.T) {
	c := testclock.New(testNow)
	cache := newVerdictCache(defaultCacheMaxBytes, c.Now)
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
	cache.put(entry(7, time.Second), c.Now())
	c.Advance(time.Second)
	cache.put(entry(8, time.Hour), c.Now())
	assert.Equal(t, 4, cache.len(), "adding one drops the expired ones at the front")
	cache.put(entry(6, time.Hour), c.Now())
	assert.Equal(t, 4, cache.len(), "a verdict renewed replaces the expired one")
	cache.sweep()
	assert.Equal(t, 3, cache.len(), "a sweep drops the others")
	assert.Equal(t, 3*entrySize(entryFor(0)), cache.held())

	cache.close()
	assert.Zero(t, cache.len())
	assert.Zero(t, cache.held())
	cache.put(entry(9, time.Hour), c.Now())
	assert.Zero(t, cache.len(), "a closed cache keeps nothing")
}

// TestCacheLookupsAreReported: a credential verified is looked up in the
// cache of its format, and answered from it after, a JWT with no key
// lookup nor signature check.
func TestCacheLookupsAreReported(t *testing.T) {
	private, _ := signingKeys(t)
	var lookups []string
	keys := keysFor(private, "")
	v := newVerifier(t, Options{MachineSecretKey: testMachineKey, clerk: &fakeClerk{}, keys: keys, CacheTTL: new(time.Minute),
		OnCacheLookup: func(cache string, hit bool) { lookups = append(lookups, fmt.Sprintf("%s %v", cache, hit)) }})
	token := sign(t, private, m2mHeader(), m2mPayload())
	var kept *Identity
	for _, credential := range []string{token, token, token, token, "mt_abc", "mt_abc"} {
		id, err := v.Verify(context.Background(), credential)
		require.NoError(t, err)
		if credential == token && kept != nil {
			assert.Same(t, kept, id)
		}
		if len(lookups) == 2 {
			kept = id
		}
	}
	assert.Equal(t, []string{"jwt false", "jwt false", "jwt true", "jwt true", "opaque false", "opaque true"}, lookups,
		"a JWT is kept from its second use")
	assert.Equal(t, int32(2), keys.calls.Load(), "no key lookup, no signature check on a hit")
}

func TestJWTCacheRechecksTimesOnEveryHit(t *testing.T) {
	private, _ := signingKeys(t)
	c := testclock.New(testNow)
	v := newVerifier(t, Options{keys: keysFor(private, ""), now: c.Now})
	now := testNow.Unix()
	token := sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"exp": now + 60}))
	_, err := v.Verify(context.Background(), token)
	require.NoError(t, err)

	c.Advance(64 * time.Second)
	_, err = v.Verify(context.Background(), token)
	require.NoError(t, err, "within the skew after exp")
	c.Advance(time.Second)
	_, err = v.Verify(context.Background(), token)
	requireReason(t, err, ReasonExpired)

	early := sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"nbf": testNow.Unix() + 3, "exp": now + 3600}))
	c.Set(testNow)
	_, err = v.Verify(context.Background(), early)
	require.NoError(t, err, "nbf within the skew")
	c.Set(testNow.Add(-3 * time.Second)) // a clock that stepped back
	_, err = v.Verify(context.Background(), early)
	requireReason(t, err, ReasonInvalid)
}

func TestVerdictCacheGivesUsedEntriesASecondChance(t *testing.T) {
	c := newVerdictCache(3*entrySize(entryFor(0)), fixedClock)
	for i := range byte(3) {
		c.put(entryFor(i), testNow)
	}
	require.NotNil(t, c.getKey(entryFor(0).key, testNow)) // the oldest is in use
	c.put(entryFor(3), testNow)
	assert.NotNil(t, c.getKey(entryFor(0).key, testNow), "kept: it was used")
	assert.Nil(t, c.getKey(entryFor(1).key, testNow), "evicted: the oldest unused")
	assert.Equal(t, 3, c.len())
}

// TestVerdictCacheKeysByTheWholeCredential: a verdict answers for the very
// credential it was given on, not for one that shares all but its last
// character, and the cache keeps a copy of the credential of its own, not
// the string it came in (a Cookie header, say, that would stay alive with
// it).
func TestVerdictCacheKeysByTheWholeCredential(t *testing.T) {
	c := newVerdictCache(1<<20, fixedClock)
	cookie := "theme=dark; __session=mt_0123456789abcdef; lang=en"
	credential := cookie[len("theme=dark; __session=") : len(cookie)-len("; lang=en")]
	entry := &cacheEntry{key: cacheKey{token: credential}, identity: &Identity{}, until: testNow.Add(time.Hour)}
	c.put(entry, testNow)

	require.NotNil(t, c.getKey(cacheKey{token: "mt_0123456789abcdef"}, testNow))
	assert.Nil(t, c.getKey(cacheKey{token: "mt_0123456789abcdeg"}, testNow))
	assert.Nil(t, c.getKey(cacheKey{token: "mt_0123456789abcde"}, testNow))
	assert.NotSame(t, unsafe.StringData(credential), unsafe.StringData(entry.key.token), "the cache holds a copy")
	assert.Equal(t, credential, entry.key.token)
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
					claimsJSON: string(claims)}
				require.Equal(t, claims == nil, id.Claims() == nil, "the claims decode")
				require.Equal(t, claims == nil, id.ClaimsJSON() == "{}")
				cache.put(&cacheEntry{key: cacheKey{token: id.TokenID}, identity: id, until: testNow.Add(time.Hour)}, testNow)
			}
			held := heapInUse() - before
			t.Logf("held %d bytes an entry, counted %d", held/entries, cache.held()/entries)
			assert.LessOrEqual(t, held, cache.held(), "the estimate is not below what the entries hold")
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
