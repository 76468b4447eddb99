package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// memStore is a VerdictStore in memory. get, when set, replaces Get; put,
// when set, runs before each Put.
type memStore struct {
	mu      sync.Mutex
	entries map[string][]byte
	expiry  map[string]time.Time
	gets    atomic.Int32
	get     func(ctx context.Context, key string) ([]byte, error)
	put     func(ctx context.Context)
}

func newMemStore() *memStore {
	return &memStore{entries: make(map[string][]byte), expiry: make(map[string]time.Time)}
}

func (m *memStore) Get(ctx context.Context, key string) ([]byte, error) {
	m.gets.Add(1)
	if m.get != nil {
		return m.get(ctx, key)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if data, ok := m.entries[key]; ok {
		return bytes.Clone(data), nil
	}
	return nil, fs.ErrNotExist
}

func (m *memStore) Put(ctx context.Context, key string, value []byte, expiry time.Time) error {
	if m.put != nil {
		m.put(ctx)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries[key], m.expiry[key] = bytes.Clone(value), expiry
	return nil
}

func (m *memStore) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// only returns the one entry held, and its key.
func (m *memStore) only(t *testing.T) (string, []byte) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	require.Len(t, m.entries, 1)
	for key, value := range m.entries {
		return key, value
	}
	return "", nil
}

// errorLog records what a SharedCache reports.
type errorLog struct {
	mu   sync.Mutex
	errs map[string][]error
}

func (l *errorLog) record(op string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.errs == nil {
		l.errs = make(map[string][]error)
	}
	l.errs[op] = append(l.errs[op], err)
}

func (l *errorLog) of(op string) []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs[op]...)
}

// fleet is the fake Clerk and gateways in several processes sharing one
// store: each gateway has a Shared of its own, as a process has.
type fleet struct {
	t      *testing.T
	clerk  *backendtest.Server
	store  *memStore
	errors *errorLog
	cache  *SharedCache
}

func newFleet(t *testing.T) *fleet {
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	f := &fleet{t: t, clerk: clerk, store: newMemStore(), errors: &errorLog{}}
	f.cache = NewSharedCache(f.store, SharedCacheOptions{OnError: f.errors.record})
	return f
}

// gateway is one process's Verifier of M2M tokens with machineKey (the
// instance secret key when empty), sharing through cache.
func (f *fleet) gateway(machineKey string, cache *SharedCache, lookups *[]bool) *Verifier {
	f.t.Helper()
	opts := backend.Options{URL: f.clerk.URL, MachineSecretKey: machineKey}
	secret := machineKey
	if machineKey == "" {
		opts.SecretKey, secret = f.clerk.SecretKey(), f.clerk.SecretKey()
	}
	client, err := backend.New(opts)
	require.NoError(f.t, err)
	var mu sync.Mutex
	return New(Options{Accept: []TokenType{M2MToken}, Backend: client, CacheTTL: time.Minute,
		Shared: NewShared(SharedOptions{}), SharedCache: cache, SharedCacheSecret: []byte(secret),
		OnCacheLookup: func(name string, hit bool) {
			if name == "shared" && lookups != nil {
				mu.Lock()
				*lookups = append(*lookups, hit)
				mu.Unlock()
			}
		}})
}

// sharedToken returns a token a first gateway verified and shared.
func (f *fleet) sharedToken() string {
	f.t.Helper()
	token, _ := f.clerk.CreateM2MToken(f.clerk.NewMachine("caller"), backendtest.TokenOptions{})
	_, err := f.gateway("", f.cache, nil).Verify(context.Background(), token)
	require.NoError(f.t, err)
	f.waitForEntries(1)
	return token
}

func (f *fleet) waitForEntries(n int) {
	f.t.Helper()
	require.Eventually(f.t, func() bool { return f.store.len() == n }, 5*time.Second, time.Millisecond)
}

const verifyPath = "/m2m_tokens/verify"

func TestSharedCacheAnswersTheOtherProcesses(t *testing.T) {
	f := newFleet(t)
	caller := f.clerk.NewMachine("caller")
	token, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{Scopes: []string{"mch_service"}, TTL: 10 * time.Minute,
		Claims: map[string]any{"tier": "gold"}})
	var firstLookups, otherLookups []bool
	first := f.gateway("", f.cache, &firstLookups)
	verified, err := first.Verify(context.Background(), token)
	require.NoError(t, err)
	assert.Equal(t, []bool{false}, firstLookups, "the first process looks in the shared cache, finds nothing")
	f.waitForEntries(1)

	for i := range 2 {
		other := f.gateway("", f.cache, &otherLookups)
		for range 3 {
			identity, err := other.Verify(context.Background(), token)
			require.NoError(t, err)
			assert.Equal(t, verified.Subject, identity.Subject)
			assert.Equal(t, verified.TokenID, identity.TokenID)
			assert.Equal(t, verified.Scopes, identity.Scopes)
			assert.Equal(t, verified.ClaimsJSON(), identity.ClaimsJSON())
			assert.True(t, verified.ExpiresAt.Equal(identity.ExpiresAt))
			assert.Equal(t, Opaque, identity.Format)
		}
		assert.Len(t, otherLookups, i+1, "later requests are answered from the process's memory")
	}
	assert.Equal(t, []bool{true, true}, otherLookups)
	assert.Equal(t, 1, f.clerk.Calls(verifyPath), "one call to Clerk for the whole fleet")
	assert.Empty(t, f.errors.of(SharedCacheRead))
}

func TestSharedCacheHoldsNoTokenNorSecret(t *testing.T) {
	f := newFleet(t)
	caller, service := f.clerk.NewMachine("caller"), f.clerk.NewMachine("service")
	f.clerk.GrantScopes(caller, service.ID)
	token, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{Scopes: []string{service.ID}})
	_, err := f.gateway(service.SecretKey, f.cache, nil).Verify(context.Background(), token)
	require.NoError(t, err)
	f.waitForEntries(1)
	key, entry := f.store.only(t)
	for _, secret := range []string{token, service.SecretKey, f.clerk.SecretKey()} {
		sum := sha256.Sum256([]byte(secret))
		for _, piece := range []string{secret[len(secret)-12:], hex.EncodeToString(sum[:])[:12]} {
			assert.NotContains(t, key, piece)
			assert.NotContains(t, string(entry), piece)
		}
	}
}

func TestSharedCacheSharesNoRefusal(t *testing.T) {
	f := newFleet(t)
	caller := f.clerk.NewMachine("caller")
	token, id := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{})
	f.clerk.RevokeM2MToken(id)
	for range 2 {
		_, err := f.gateway("", f.cache, nil).Verify(context.Background(), token)
		requireReason(t, err, ReasonInvalid)
	}
	assert.Equal(t, 2, f.clerk.Calls(verifyPath), "each process asks Clerk, which refuses again")
	assert.Zero(t, f.store.len())
}

func TestSharedCacheNeverCrossesMachineKeys(t *testing.T) {
	f := newFleet(t)
	machineA, machineB := f.clerk.NewMachine("a"), f.clerk.NewMachine("b")
	caller := f.clerk.NewMachine("caller")
	f.clerk.GrantScopes(caller, machineA.ID)
	token, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{Scopes: []string{machineA.ID}})

	_, err := f.gateway(machineA.SecretKey, f.cache, nil).Verify(context.Background(), token)
	require.NoError(t, err)
	f.waitForEntries(1)
	keyA, _ := f.store.only(t)

	var lookups []bool
	_, err = f.gateway(machineB.SecretKey, f.cache, &lookups).Verify(context.Background(), token)
	requireReason(t, err, ReasonInvalid) // Clerk: not granted to machine B
	assert.Equal(t, []bool{false}, lookups)
	assert.Equal(t, 2, f.clerk.Calls(verifyPath))

	b := f.gateway(machineB.SecretKey, f.cache, nil)
	name, _ := b.sharedKeys.name(token)
	assert.NotEqual(t, keyA, name)
	assert.NotEqual(t, keyA[:64], name[:64], "another scope")
	assert.NotEqual(t, keyA[65:], name[65:], "another MAC of the token")

	// A's entry copied under B's name still fails B's check.
	f.store.mu.Lock()
	f.store.entries[name] = f.store.entries[keyA]
	f.store.mu.Unlock()
	_, err = b.Verify(context.Background(), token)
	requireReason(t, err, ReasonInvalid)
	assert.Len(t, f.errors.of(SharedCacheRead), 1)
	assert.ErrorIs(t, f.errors.of(SharedCacheRead)[0], ErrSharedEntryRejected)
}

func TestSharedEntriesAreAuthenticated(t *testing.T) {
	now := time.Now()
	keys := newSharedKeys([]byte("sk_test_secret"), []byte("scope"))
	_, tokenMAC := keys.name("mt_token")
	identity := &Identity{Subject: "mch_caller", TokenType: M2MToken, Format: Opaque, TokenID: "mt_id", Scopes: []string{"mch_a"},
		ExpiresAt: now.Add(time.Hour).Truncate(time.Millisecond), claimsJSON: []byte(`{"tier":"gold"}`)}
	entry, ok := keys.seal(tokenMAC, identity, now.Add(time.Minute))
	require.True(t, ok)

	opened, expiry, err := keys.open(tokenMAC, entry, M2MToken)
	require.NoError(t, err)
	assert.Equal(t, now.Add(time.Minute).UnixMilli(), expiry.UnixMilli())
	assert.Equal(t, identity.Subject, opened.Subject)
	assert.Equal(t, identity.Scopes, opened.Scopes)
	assert.True(t, identity.ExpiresAt.Equal(opened.ExpiresAt))
	assert.Equal(t, `{"tier":"gold"}`, opened.ClaimsJSON())
	declared, err := SharedEntryExpiry(entry)
	require.NoError(t, err)
	assert.Equal(t, expiry, declared, "the expiry is readable without the keys")

	header, body, _ := bytes.Cut(entry, []byte("\n"))
	fields := bytes.Split(header, []byte(" "))
	rejoin := func(f [][]byte, body []byte) []byte {
		return append(append(bytes.Join(f, []byte(" ")), '\n'), body...)
	}
	withField := func(i int, value string) []byte {
		changed := append([][]byte(nil), fields...)
		changed[i] = []byte(value)
		return rejoin(changed, body)
	}
	_, otherTokenMAC := keys.name("mt_other")
	otherKeys := newSharedKeys([]byte("sk_test_other"), []byte("scope"))
	forged, _ := otherKeys.seal(tokenMAC, identity, now.Add(time.Minute))
	for name, bad := range map[string]struct {
		entry    []byte
		tokenMAC []byte
		keys     *sharedKeys
		typ      TokenType
	}{
		"another subject":             {rejoin(fields, bytes.Replace(body, []byte("mch_caller"), []byte("mch_mallet"), 1)), tokenMAC, keys, M2MToken},
		"a later expiry":              {withField(2, "99999999999999"), tokenMAC, keys, M2MToken},
		"a wrong MAC":                 {withField(3, hex.EncodeToString(make([]byte, 32))), tokenMAC, keys, M2MToken},
		"no MAC":                      {withField(3, ""), tokenMAC, keys, M2MToken},
		"another version":             {withField(1, "2"), tokenMAC, keys, M2MToken},
		"no header":                   {body, tokenMAC, keys, M2MToken},
		"sealed without the secret":   {forged, tokenMAC, keys, M2MToken},
		"read for another token":      {entry, otherTokenMAC, keys, M2MToken},
		"read for another scope":      {entry, tokenMAC, newSharedKeys([]byte("sk_test_secret"), []byte("other scope")), M2MToken},
		"read as another type":        {entry, tokenMAC, keys, APIKey},
		"larger than the bound":       {append(bytes.Clone(entry), bytes.Repeat([]byte(" "), MaxSharedEntryBytes)...), tokenMAC, keys, M2MToken},
		"empty":                       {nil, tokenMAC, keys, M2MToken},
		"a body with an unknown name": {rejoin(fields, []byte(`{"subject":"x","token_type":"m2m_token","scopes":[],"admin":true}`)), tokenMAC, keys, M2MToken},
	} {
		_, _, err := bad.keys.open(bad.tokenMAC, bad.entry, bad.typ)
		assert.Error(t, err, name)
	}

	huge := &Identity{Subject: "mch_caller", TokenType: M2MToken, Scopes: []string{},
		claimsJSON: []byte(`{"big":"` + string(bytes.Repeat([]byte("x"), MaxSharedEntryBytes)) + `"}`)}
	_, ok = keys.seal(tokenMAC, huge, now.Add(time.Minute))
	assert.False(t, ok, "a verdict too large to share is not sealed")
}

func TestSharedVerdictNeverOutlivesItsSource(t *testing.T) {
	f := newFleet(t)
	caller := f.clerk.NewMachine("caller")
	token, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{TTL: 20 * time.Second})
	start := time.Now()
	identity, err := f.gateway("", f.cache, nil).Verify(context.Background(), token)
	require.NoError(t, err)
	f.waitForEntries(1)
	key, entry := f.store.only(t)
	expiry, err := SharedEntryExpiry(entry)
	require.NoError(t, err)
	assert.Equal(t, identity.ExpiresAt.UnixMilli(), expiry.UnixMilli(), "the token expires before cache_ttl")
	assert.Equal(t, expiry, f.store.expiry[key])

	long, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{TTL: time.Hour})
	_, err = f.gateway("", f.cache, nil).Verify(context.Background(), long)
	require.NoError(t, err)
	f.waitForEntries(2)
	f.store.mu.Lock()
	for _, value := range f.store.entries {
		expiry, _ := SharedEntryExpiry(value)
		assert.False(t, expiry.After(time.Now().Add(time.Minute)), "never beyond cache_ttl")
		assert.True(t, expiry.After(start))
	}
	f.store.mu.Unlock()

	// A reader a minute later finds it expired, and asks Clerk.
	later := f.gateway("", f.cache, nil)
	later.opts.now = func() time.Time { return time.Now().Add(time.Minute + time.Second) }
	var lookups []bool
	later.opts.OnCacheLookup = func(name string, hit bool) {
		if name == "shared" {
			lookups = append(lookups, hit)
		}
	}
	_, _ = later.Verify(context.Background(), long)
	assert.Equal(t, []bool{false}, lookups)
	assert.Equal(t, 3, f.clerk.Calls(verifyPath))
}

func TestSharedCacheReaderKeepsItsOwnTTL(t *testing.T) {
	f := newFleet(t)
	token := f.sharedToken()

	short := f.gateway("", f.cache, nil)
	short.opts.CacheTTL = time.Second
	_, err := short.Verify(context.Background(), token)
	require.NoError(t, err)
	entry := short.shared.cache.get(cacheKey{short.scope, token}, time.Now())
	require.NotNil(t, entry)
	assert.False(t, entry.until.After(time.Now().Add(time.Second)), "remembered no longer than its own cache_ttl")
}

func TestSharedCacheTroubleFallsBackToClerk(t *testing.T) {
	hung := make(chan struct{}) // a store that answers only when the test ends
	t.Cleanup(func() { close(hung) })
	for name, get := range map[string]func(ctx context.Context, key string) ([]byte, error){
		"failing": func(context.Context, string) ([]byte, error) { return nil, errors.New("disk on fire") },
		"hanging, deaf to its context": func(context.Context, string) ([]byte, error) {
			<-hung
			return nil, fs.ErrNotExist
		},
		"answering garbage": func(context.Context, string) ([]byte, error) { return []byte("clerk_m2m-verdict 1 x y\n{}"), nil },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFleet(t)
			f.store.get = get
			caller := f.clerk.NewMachine("caller")
			token, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{})
			v := f.gateway("", f.cache, nil)
			identity, err := v.Verify(context.Background(), token)
			require.NoError(t, err)
			assert.Equal(t, caller.ID, identity.Subject)
			forged := "mt_" + hex.EncodeToString(make([]byte, 16))
			_, err = v.Verify(context.Background(), forged)
			requireReason(t, err, ReasonInvalid)
			assert.Equal(t, 2, f.clerk.Calls(verifyPath))
			assert.Len(t, f.errors.of(SharedCacheRead), 2, "each failed lookup reported")
		})
	}
}

func TestSharedCacheLookupOnceForABurstAndWithoutASlot(t *testing.T) {
	f := newFleet(t)
	token := f.sharedToken()
	f.store.gets.Store(0)

	// Every Clerk slot of the other process is taken: a verdict the shared
	// cache holds needs none.
	held := newHeldBackend()
	other := f.gateway("", f.cache, nil)
	other.shared = NewShared(SharedOptions{MaxClerkCalls: 1})
	busy := New(Options{Accept: []TokenType{M2MToken}, Backend: held, Shared: other.shared, now: fixedClock})
	blocked := verifyInBackground(context.Background(), busy, "mt_held")
	require.Eventually(t, func() bool { return held.started.Load() == 1 }, 5*time.Second, time.Millisecond)

	release := make(chan struct{})
	f.store.get = func(ctx context.Context, key string) ([]byte, error) {
		<-release
		f.store.get = nil
		return f.store.Get(ctx, key)
	}
	results := make([]chan error, 8)
	for i := range results {
		results[i] = verifyInBackground(context.Background(), other, token)
	}
	require.Eventually(t, func() bool { return other.waiting(token) == len(results) }, 5*time.Second, time.Millisecond)
	close(release)
	for _, result := range results {
		assert.NoError(t, <-result)
	}
	assert.Equal(t, int32(2), f.store.gets.Load(), "one read for the burst (and the wrapped read)")
	assert.Equal(t, 1, f.clerk.Calls(verifyPath))
	close(held.release)
	assert.NoError(t, <-blocked)
}

func TestSharedCacheWritesAreBounded(t *testing.T) {
	f := newFleet(t)
	release := make(chan struct{})
	f.store.put = func(context.Context) { <-release }
	cache := NewSharedCache(f.store, SharedCacheOptions{MaxWrites: 1, OnError: f.errors.record})
	caller := f.clerk.NewMachine("caller")
	v := f.gateway("", cache, nil)
	for range 3 {
		token, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{})
		_, err := v.Verify(context.Background(), token)
		require.NoError(t, err)
	}
	dropped := f.errors.of(SharedCacheWrite)
	require.Len(t, dropped, 2, "one write in flight, the others dropped")
	assert.ErrorIs(t, dropped[0], ErrSharedWriteDropped)
	close(release)
	f.waitForEntries(1)
}
