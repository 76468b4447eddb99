package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/internal/testclock"
)

// slowBackend answers every M2M verification after a delay, counting
// calls.
type slowBackend struct {
	m2mOnly
	delay  time.Duration
	err    error
	expiry time.Time
	calls  atomic.Int32
}

func (s *slowBackend) VerifyM2MToken(ctx context.Context, token string) (*backend.M2MToken, error) {
	s.calls.Add(1)
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, &backend.Error{Err: ctx.Err()}
	}
	if s.err != nil {
		return nil, s.err
	}
	expiration := s.expiry.UnixMilli()
	return &backend.M2MToken{Object: "machine_to_machine_token", ID: "mt_" + token[3:], Subject: "mch_caller", Expiration: &expiration}, nil
}

// cachingVerifier verifies M2M tokens with b, remembering verdicts for
// ttl in a cache of maxBytes (0: the default).
func cachingVerifier(b Backend, c *testclock.Clock, ttl time.Duration, maxBytes int64) *Verifier {
	return New(Options{Accept: []TokenType{M2MToken}, Backend: b, now: c.Now, CacheTTL: ttl, Timeout: time.Second,
		Shared: NewShared(SharedOptions{CacheMaxBytes: maxBytes, now: c.Now})})
}

// len is how many entries the cache holds.
func (c *verdictCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

func TestOpaqueCacheReusesAVerification(t *testing.T) {
	c := testclock.New(testNow)
	b := &slowBackend{expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, 30*time.Second, 0)
	for range 50 {
		id, err := v.Verify(context.Background(), "mt_one")
		require.NoError(t, err)
		assert.Equal(t, "mt_one", id.TokenID)
	}
	assert.Equal(t, int32(1), b.calls.Load(), "50 sequential verifications within the TTL make one call")

	c.Advance(30 * time.Second)
	_, err := v.Verify(context.Background(), "mt_one")
	require.NoError(t, err)
	assert.Equal(t, int32(2), b.calls.Load(), "after the TTL Clerk is asked again")
}

func TestOpaqueCacheNeverOutlivesTheToken(t *testing.T) {
	c := testclock.New(testNow)
	b := &slowBackend{expiry: testNow.Add(10 * time.Second)}
	v := cachingVerifier(b, c, time.Minute, 0)
	_, err := v.Verify(context.Background(), "mt_short")
	require.NoError(t, err)
	c.Advance(10 * time.Second)
	b.expiry = testNow // Clerk now reports the token expired
	_, err = v.Verify(context.Background(), "mt_short")
	requireReason(t, err, ReasonExpired)
	assert.Equal(t, int32(2), b.calls.Load())
}

func TestOpaqueCacheOffStillSharesConcurrentCalls(t *testing.T) {
	c := testclock.New(testNow)
	b := &slowBackend{delay: 50 * time.Millisecond, expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, 0, 0)
	_, err := v.Verify(context.Background(), "mt_x")
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), "mt_x")
	require.NoError(t, err)
	assert.Equal(t, int32(2), b.calls.Load(), "cache_ttl 0: every request asks Clerk")
	assert.Zero(t, v.shared.cache.len())

	concurrently(100, func() {
		_, err := v.Verify(context.Background(), "mt_y")
		assert.NoError(t, err)
	})
	assert.Equal(t, int32(3), b.calls.Load())
}

func TestOpaqueCacheConcurrentFirstUseMakesOneCall(t *testing.T) {
	c := testclock.New(testNow)
	b := &slowBackend{delay: 50 * time.Millisecond, expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, 30*time.Second, 0)
	concurrently(100, func() {
		_, err := v.Verify(context.Background(), "mt_burst")
		assert.NoError(t, err)
	})
	assert.Equal(t, int32(1), b.calls.Load())
}

func TestOpaqueCacheRemembersRefusalsForASecond(t *testing.T) {
	c := testclock.New(testNow)
	b := &slowBackend{err: &backend.Error{Status: 404}, expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, 30*time.Second, 0)
	for range 3 {
		_, err := v.Verify(context.Background(), "mt_unknown")
		requireReason(t, err, ReasonInvalid)
	}
	assert.Equal(t, int32(1), b.calls.Load())

	c.Advance(negativeTTL)
	b.err = nil // the token now exists (minted a moment ago, say)
	_, err := v.Verify(context.Background(), "mt_unknown")
	require.NoError(t, err, "a refusal is not remembered beyond a second")
	assert.Equal(t, int32(2), b.calls.Load())
}

func TestOpaqueCacheDoesNotKeepTrouble(t *testing.T) {
	c := testclock.New(testNow)
	b := &slowBackend{err: errors.New("outage"), expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, 30*time.Second, 0)
	for range 3 {
		_, err := v.Verify(context.Background(), "mt_x")
		requireReason(t, err, ReasonUnavailable)
	}
	assert.Equal(t, int32(3), b.calls.Load())
	b.err = nil
	_, err := v.Verify(context.Background(), "mt_x")
	assert.NoError(t, err, "recovers as soon as Clerk answers")
}

func TestOpaqueCacheIsBoundedInBytes(t *testing.T) {
	c := testclock.New(testNow)
	b := &slowBackend{expiry: testNow.Add(time.Hour)}
	probe := cachingVerifier(b, c, time.Minute, 0)
	_, err := probe.Verify(context.Background(), "mt_00")
	require.NoError(t, err)
	oneEntry := probe.shared.cache.bytes

	v := cachingVerifier(b, c, time.Minute, 10*oneEntry)
	for i := range 25 {
		_, err := v.Verify(context.Background(), fmt.Sprintf("mt_%02d", i))
		require.NoError(t, err)
	}
	assert.Equal(t, 10, v.shared.cache.len())
	assert.Equal(t, 10*oneEntry, v.shared.cache.bytes)
	calls := b.calls.Load()
	_, err = v.Verify(context.Background(), "mt_24")
	require.NoError(t, err)
	assert.Equal(t, calls, b.calls.Load(), "the newest entries are kept")
	_, err = v.Verify(context.Background(), "mt_00")
	require.NoError(t, err)
	assert.Equal(t, calls+1, b.calls.Load(), "the oldest were dropped")
}

func TestAnEntryLargerThanTheBoundIsNotKept(t *testing.T) {
	c := testclock.New(testNow)
	v := cachingVerifier(&slowBackend{expiry: testNow.Add(time.Hour)}, c, time.Minute, entryOverhead)
	_, err := v.Verify(context.Background(), "mt_x")
	require.NoError(t, err)
	assert.Zero(t, v.shared.cache.len())
	assert.Zero(t, v.shared.cache.bytes)
}

func TestOpaqueCacheDropsExpiredEntries(t *testing.T) {
	c := testclock.New(testNow)
	b := &slowBackend{expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, time.Second, 0)
	for i := range 5 {
		_, err := v.Verify(context.Background(), fmt.Sprintf("mt_%d", i))
		require.NoError(t, err)
	}
	c.Advance(2 * time.Second)
	for i := range 5 {
		_, err := v.Verify(context.Background(), fmt.Sprintf("mt_%d", i))
		require.NoError(t, err)
	}
	assert.Equal(t, 5, v.shared.cache.len(), "a refreshed entry replaces the expired one")
}

func TestJWTCacheSkipsTheWorkOnRepeats(t *testing.T) {
	private, _ := signingKeys(t)
	c := testclock.New(testNow)
	keys := &countingKeys{signing: rsaKey(private, "RS256")}
	v := New(Options{Accept: []TokenType{M2MToken}, Keys: keys, ClockSkew: 5 * time.Second, now: c.Now})
	token := sign(t, private, m2mHeader(), m2mPayload())
	first, err := v.Verify(context.Background(), token)
	require.NoError(t, err)
	for range 10 {
		again, err := v.Verify(context.Background(), token)
		require.NoError(t, err)
		assert.Same(t, first, again)
	}
	assert.Equal(t, int32(1), keys.calls.Load(), "no key lookup, no signature check on a hit")
}

func TestJWTCacheRechecksTimesOnEveryHit(t *testing.T) {
	private, _ := signingKeys(t)
	c := testclock.New(testNow)
	v := New(Options{Accept: []TokenType{M2MToken}, Keys: &countingKeys{signing: rsaKey(private, "")}, ClockSkew: 5 * time.Second, now: c.Now})
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

func TestJWTCacheForgetsTokensOfARotatedOutKey(t *testing.T) {
	a, b := signingKeys(t)
	r, f, c := newRemote(t, jwkJSON(&a.PublicKey, testKid, "RS256"))
	v := New(Options{Accept: []TokenType{M2MToken}, Keys: r, ClockSkew: 5 * time.Second, now: c.Now})
	token := sign(t, a, m2mHeader(), m2mPayload())
	_, err := v.Verify(context.Background(), token)
	require.NoError(t, err)

	f.set([]json.RawMessage{jwkJSON(&b.PublicKey, "ins_new", "RS256")}, nil)
	_, err = r.key(context.Background(), "ins_new") // the rotation is picked up
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), token)
	requireReason(t, err, ReasonInvalid)
}

func TestJWTCacheSurvivesARefreshThatKeepsTheKey(t *testing.T) {
	a, b := signingKeys(t)
	r, f, c := newRemote(t, jwkJSON(&a.PublicKey, testKid, "RS256"))
	var hits []bool
	v := New(Options{Accept: []TokenType{M2MToken}, Keys: r, ClockSkew: 5 * time.Second, now: c.Now,
		OnCacheLookup: func(_ string, hit bool) { hits = append(hits, hit) }})
	token := sign(t, a, m2mHeader(), m2mPayload())
	_, err := v.Verify(context.Background(), token)
	require.NoError(t, err)

	require.NoError(t, r.refresh(context.Background(), false)) // the same key again
	_, err = v.Verify(context.Background(), token)
	require.NoError(t, err)
	assert.Equal(t, []bool{false, true}, hits, "a refresh that brings back the same key keeps the cache")

	f.set([]json.RawMessage{jwkJSON(&b.PublicKey, testKid, "RS256")}, nil) // the same kid, another key
	require.NoError(t, r.refresh(context.Background(), false))
	_, err = v.Verify(context.Background(), token)
	requireReason(t, err, ReasonInvalid)
}

func TestJWTCacheIsBoundedInBytes(t *testing.T) {
	private, _ := signingKeys(t)
	jwt := func(i int) string {
		return sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"jti": fmt.Sprintf("mt_%02d", i)}))
	}
	keys := &countingKeys{signing: rsaKey(private, "")}
	probe := New(Options{Accept: []TokenType{M2MToken}, Keys: keys, now: fixedClock})
	_, err := probe.Verify(context.Background(), jwt(0))
	require.NoError(t, err)
	oneEntry := probe.shared.cache.bytes

	v := New(Options{Accept: []TokenType{M2MToken}, Keys: keys, now: fixedClock, Shared: NewShared(SharedOptions{CacheMaxBytes: 5 * oneEntry})})
	for i := range 12 {
		_, err := v.Verify(context.Background(), jwt(i))
		require.NoError(t, err)
	}
	assert.Equal(t, 5, v.shared.cache.len())
}

// entryFor is a cache entry for the credential numbered i, valid for an
// hour.
func entryFor(i byte) *cacheEntry {
	return &cacheEntry{key: cacheKey{token: fmt.Sprintf("mt_%03d", i)}, identity: &Identity{}, until: testNow.Add(time.Hour)}
}

func TestVerdictCacheGivesUsedEntriesASecondChance(t *testing.T) {
	c := newVerdictCache(3*entrySize(entryFor(0)), fixedClock)
	for i := range byte(3) {
		c.put(entryFor(i), testNow)
	}
	require.NotNil(t, c.get(entryFor(0).key, testNow)) // the oldest is in use
	c.put(entryFor(3), testNow)
	assert.NotNil(t, c.get(entryFor(0).key, testNow), "kept: it was used")
	assert.Nil(t, c.get(entryFor(1).key, testNow), "evicted: the oldest unused")
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

	require.NotNil(t, c.get(cacheKey{token: "mt_0123456789abcdef"}, testNow))
	assert.Nil(t, c.get(cacheKey{token: "mt_0123456789abcdeg"}, testNow))
	assert.Nil(t, c.get(cacheKey{token: "mt_0123456789abcde"}, testNow))
	assert.NotSame(t, unsafe.StringData(credential), unsafe.StringData(entry.key.token), "the cache holds a copy")
	assert.Equal(t, credential, entry.key.token)
}

func TestCacheLookupsAreReported(t *testing.T) {
	private, _ := signingKeys(t)
	var lookups []string
	v := New(Options{Accept: []TokenType{M2MToken}, Keys: &countingKeys{signing: rsaKey(private, "")}, Backend: &fakeBackend{answer: m2mAnswer(nil)},
		now: fixedClock, CacheTTL: time.Minute, OnCacheLookup: func(cache string, hit bool) {
			lookups = append(lookups, fmt.Sprintf("%s %v", cache, hit))
		}})
	token := sign(t, private, m2mHeader(), m2mPayload())
	for _, credential := range []string{token, token, "mt_abc", "mt_abc"} {
		_, err := v.Verify(context.Background(), credential)
		require.NoError(t, err)
	}
	assert.Equal(t, []string{"jwt false", "jwt true", "opaque false", "opaque true"}, lookups)
}

func TestFormatOf(t *testing.T) {
	for token, want := range map[string]Format{"mt_x": Opaque, "oat_x": Opaque, "ak_x": Opaque, "a.b.c": JWT, "garbage": "", "": ""} {
		assert.Equal(t, want, formatOf(token, prefixedKind(token)), token)
	}
}
