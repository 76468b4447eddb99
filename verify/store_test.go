package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/testclock"
)

// memStore is a Store in memory, which keeps the expiresBy of every Get.
// get, when set, replaces Get; put, when set, runs before each Put.
type memStore struct {
	mu        sync.Mutex
	entries   map[string][]byte
	expiry    map[string]time.Time
	expiresBy []time.Time
	gets      atomic.Int32
	get       func(ctx context.Context, key string) ([]byte, error)
	put       func(ctx context.Context)
}

func newMemStore() *memStore {
	return &memStore{entries: make(map[string][]byte), expiry: make(map[string]time.Time)}
}

func (m *memStore) Get(ctx context.Context, key string, expiresBy time.Time) ([]byte, error) {
	m.gets.Add(1)
	m.mu.Lock()
	m.expiresBy = append(m.expiresBy, expiresBy)
	m.mu.Unlock()
	if m.get != nil {
		return m.get(ctx, key)
	}
	return m.stored(key)
}

func (m *memStore) stored(key string) ([]byte, error) {
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

// bodyOf is the body of an entry, decoded.
func bodyOf(t *testing.T, entry []byte) storedEntry {
	t.Helper()
	_, body, _ := bytes.Cut(entry, []byte("\n"))
	var stored storedEntry
	require.NoError(t, json.Unmarshal(body, &stored))
	return stored
}

// events records, as text, what the Verifiers of a fleet report: the
// failures of the Store ("read: …", "write: …") and the lookups in it
// ("shared true", "shared false").
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(event string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, event)
}

// of lists the events that start with prefix.
func (e *events) of(prefix string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(e.list), func(event string) bool { return !strings.HasPrefix(event, prefix) })
}

// fleet is the fake Clerk and gateways in several processes sharing one
// store, all on one clock: each gateway has a Pool of its own, as a
// process has.
type fleet struct {
	t      *testing.T
	clock  *testclock.Clock
	clerk  *backendtest.Server
	store  *memStore
	events events
}

func newFleet(t *testing.T) *fleet {
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	c := testclock.New(testNow)
	clerk.SetClock(c.Now)
	return &fleet{t: t, clock: c, clerk: clerk, store: newMemStore()}
}

// gateway is one process's Verifier of M2M tokens with machineKey (the
// instance secret key when empty), sharing through the fleet's store;
// changes apply to its Options.
func (f *fleet) gateway(machineKey string, changes ...func(*Options)) *Verifier {
	f.t.Helper()
	opts := Options{APIURL: f.clerk.URL, MachineSecretKey: machineKey, CacheTTL: new(time.Minute), now: f.clock.Now, Store: f.store,
		OnStoreError: func(op string, err error) { f.events.add(op + ": " + err.Error()) },
		OnCacheLookup: func(cache string, hit bool) {
			if cache == "shared" {
				f.events.add(fmt.Sprint("shared ", hit))
			}
		}}
	if machineKey == "" {
		opts.SecretKey = f.clerk.SecretKey()
	}
	for _, change := range changes {
		change(&opts)
	}
	return newVerifier(f.t, opts)
}

// sharedToken returns a token a first gateway verified and shared.
func (f *fleet) sharedToken() string {
	f.t.Helper()
	token, _ := f.clerk.CreateM2MToken(f.clerk.NewMachine("caller"), backendtest.TokenOptions{})
	_, err := f.gateway("").Verify(context.Background(), token)
	require.NoError(f.t, err)
	f.waitForEntries(1)
	return token
}

func (f *fleet) waitForEntries(n int) {
	f.t.Helper()
	waitFor(f.t, func() bool { return f.store.len() == n })
}

const verifyPath = "/m2m_tokens/verify"

func TestStoreAnswersTheOtherProcesses(t *testing.T) {
	f := newFleet(t)
	caller := f.clerk.NewMachine("caller")
	token, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{Scopes: []string{"mch_service"}, TTL: 10 * time.Minute,
		Claims: map[string]any{"tier": "gold"}})
	verified, err := f.gateway("").Verify(context.Background(), token)
	require.NoError(t, err)
	assert.Equal(t, []string{"shared false"}, f.events.of("shared"), "the first process looks in the store, finds nothing")
	f.waitForEntries(1)

	for i := range 2 {
		other := f.gateway("")
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
		assert.Len(t, f.events.of("shared"), i+2, "later requests are answered from the process's memory")
	}
	assert.Equal(t, []string{"shared false", "shared true", "shared true"}, f.events.of("shared"))
	assert.Equal(t, 1, f.clerk.Calls(verifyPath), "one call to Clerk for the whole fleet")
	assert.Empty(t, f.events.of(storeRead))
}

// TestStoreNeverCrossesMachineKeys: gateways verifying with different
// machine keys share nothing, not even by an entry copied under another's
// name; the store holds neither the token nor any key, nor a plain hash of
// them; and Clerk's refusals are not shared.
func TestStoreNeverCrossesMachineKeys(t *testing.T) {
	f := newFleet(t)
	machineA, machineB := f.clerk.NewMachine("a"), f.clerk.NewMachine("b")
	caller := f.clerk.NewMachine("caller")
	f.clerk.GrantScopes(caller, machineA.ID)
	token, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{Scopes: []string{machineA.ID}})

	_, err := f.gateway(machineA.SecretKey).Verify(context.Background(), token)
	require.NoError(t, err)
	f.waitForEntries(1)
	keyA, _ := f.gateway(machineA.SecretKey).shared.name(token)
	entry, err := f.store.stored(keyA)
	require.NoError(t, err)
	for _, secret := range []string{token, machineA.SecretKey, f.clerk.SecretKey()} {
		sum := sha256.Sum256([]byte(secret))
		for _, piece := range []string{secret[len(secret)-12:], hex.EncodeToString(sum[:])[:12]} {
			assert.NotContains(t, keyA, piece)
			assert.NotContains(t, string(entry), piece)
		}
	}

	for range 2 {
		_, err = f.gateway(machineB.SecretKey).Verify(context.Background(), token)
		requireReason(t, err, ReasonInvalid) // Clerk: not granted to machine B
	}
	assert.Equal(t, []string{"shared false", "shared false", "shared false"}, f.events.of("shared"))
	assert.Equal(t, 3, f.clerk.Calls(verifyPath), "each process asks Clerk, which refuses again")
	assert.Equal(t, 1, f.store.len(), "no refusal is shared")

	b := f.gateway(machineB.SecretKey)
	name, _ := b.shared.name(token)
	assert.NotEqual(t, keyA[:64], name[:64], "another scope")
	assert.NotEqual(t, keyA[65:], name[65:], "another MAC of the token")

	// A's entry copied under B's name still fails B's check.
	f.store.mu.Lock()
	f.store.entries[name] = f.store.entries[keyA]
	f.store.mu.Unlock()
	_, err = b.Verify(context.Background(), token)
	requireReason(t, err, ReasonInvalid)
	require.Len(t, f.events.of(storeRead), 1)
	assert.Contains(t, f.events.of(storeRead)[0], "failed its check")
}

// sealedFor is what shared would write for tokenMAC with body: the
// body's MAC, a newline, the body.
func sealedFor(shared *sharedVerdicts, tokenMAC, body []byte) []byte {
	return append(append(hex.AppendEncode(nil, mac(shared.entryKey, tokenMAC, body)), '\n'), body...)
}

// TestStoredEntriesGiveBackWhatWasWrittenOrNothing: what a Store gives
// back is the Identity written, every field of it (a field added to
// Identity is checked here without a word changed), its claims and its
// times; an entry changed, made without the keys, read for another
// credential or type, or not exactly of the form written, is refused; and
// a verdict too large is not written.
func TestStoredEntriesGiveBackWhatWasWrittenOrNothing(t *testing.T) {
	identity := &Identity{Subject: "mch_caller", TokenType: M2MToken, Format: Opaque, TokenID: "mt_id", Scopes: []string{"mch_a", "mch_b"},
		ExpiresAt: testNow.Add(time.Hour + time.Millisecond), IssuedAt: testNow.Add(-time.Minute), ClientID: "client_1",
		SessionID: "sess_1", OrgID: "org_1", Name: "the key", Actor: "user_admin", claimsJSON: `{"n":12345678901234567890,"tier":"gold"}`}
	fields := reflect.ValueOf(identity).Elem()
	for name, i := range identityFields {
		require.False(t, fields.Field(i).IsZero(), "the test sets %s", name)
	}
	store := newMemStore()
	shared := newSharedVerdicts(store, sharedSecret(testSecretKey, testMachineKey), []byte("scope"), nil)
	shared.share("mt_token", identity, testNow, testNow.Add(time.Minute))
	name, tokenMAC := shared.name("mt_token")
	waitFor(t, func() bool { return store.len() == 1 })
	assert.Equal(t, testNow.Add(time.Minute), store.expiry[name])
	read, answered, expiry := shared.recall(context.Background(), time.Second, "mt_token", M2MToken, testNow.Add(time.Minute))
	require.NotNil(t, read)
	assert.Equal(t, testNow, answered.UTC())
	assert.Equal(t, testNow.Add(time.Minute), expiry.UTC())
	readFields := reflect.ValueOf(read).Elem()
	for name, i := range identityFields {
		want, got := fields.Field(i).Interface(), readFields.Field(i).Interface()
		if wantTime, ok := want.(time.Time); ok {
			assert.True(t, wantTime.Equal(got.(time.Time)), "%s: %v, read %v", name, want, got)
			continue
		}
		assert.Equal(t, want, got, name)
	}
	assert.Equal(t, identity.ClaimsJSON(), read.ClaimsJSON())
	assert.Equal(t, `{"n":12345678901234567890,"tier":"gold"}`, read.ClaimsJSON())

	entry, err := store.stored(name)
	require.NoError(t, err)
	sum, body, _ := bytes.Cut(entry, []byte("\n"))
	edited := func(from, to string) []byte { return bytes.Replace(body, []byte(from), []byte(to), 1) }
	withMAC := func(body []byte) []byte { return append(append(bytes.Clone(sum), '\n'), body...) }
	expires := `"expires":` + strconv.FormatInt(expiry.UnixMilli(), 10)
	_, otherTokenMAC := shared.name("mt_other")
	forger := newSharedVerdicts(store, sharedSecret("sk_test_other", testMachineKey), []byte("scope"), nil)
	for name, bad := range map[string]struct {
		entry, tokenMAC []byte
		typ             TokenType
	}{
		"another subject":              {withMAC(edited("mch_caller", "mch_mallet")), tokenMAC, M2MToken},
		"a later expiry":               {withMAC(edited(expires, `"expires":99999999999999`)), tokenMAC, M2MToken},
		"a wrong MAC":                  {append([]byte(hex.EncodeToString(make([]byte, 32))+"\n"), body...), tokenMAC, M2MToken},
		"no MAC":                       {append([]byte("\n"), body...), tokenMAC, M2MToken},
		"no MAC line":                  {body, tokenMAC, M2MToken},
		"empty":                        {nil, tokenMAC, M2MToken},
		"sealed without the secret":    {sealedFor(forger, tokenMAC, body), tokenMAC, M2MToken},
		"read for another token":       {entry, otherTokenMAC, M2MToken},
		"read as another type":         {entry, tokenMAC, APIKey},
		"larger than the bound":        {sealedFor(shared, tokenMAC, append(bytes.Clone(body), bytes.Repeat([]byte(" "), maxEntryBytes)...)), tokenMAC, M2MToken},
		"a body with an unknown name":  {sealedFor(shared, tokenMAC, edited("}", `,"admin":true}`)), tokenMAC, M2MToken},
		"two bodies":                   {sealedFor(shared, tokenMAC, append(bytes.Clone(body), body...)), tokenMAC, M2MToken},
		"no identity":                  {sealedFor(shared, tokenMAC, []byte(`{"answered":1,"expires":2}`)), tokenMAC, M2MToken},
		"an identity of a JWT":         {sealedFor(shared, tokenMAC, edited(`"opaque"`, `"jwt"`)), tokenMAC, M2MToken},
		"an identity without subject":  {sealedFor(shared, tokenMAC, edited(`"mch_caller"`, `""`)), tokenMAC, M2MToken},
		"an identity without scopes":   {sealedFor(shared, tokenMAC, edited(`["mch_a","mch_b"]`, `null`)), tokenMAC, M2MToken},
		"claims that are not a object": {sealedFor(shared, tokenMAC, edited(`{"n":12345678901234567890,"tier":"gold"}`, `["gold"]`)), tokenMAC, M2MToken},
	} {
		_, err := shared.open(bad.tokenMAC, bad.entry, bad.typ)
		assert.Error(t, err, name)
	}

	release := make(chan struct{})
	defer close(release)
	store.put = func(context.Context) { <-release }
	huge := &Identity{Subject: "mch_caller", TokenType: M2MToken, Format: Opaque, Scopes: []string{},
		claimsJSON: `{"big":"` + strings.Repeat("x", maxEntryBytes) + `"}`}
	shared.share("mt_huge", huge, testNow, testNow.Add(time.Minute))
	assert.Empty(t, shared.writes, "a verdict too large to share is not written")
}

// TestAStoredEntryAnswersOnlyForItsScope: Verifiers with the same keys
// but of different scopes (another audience, another clock skew) must not
// read each other's verdicts, even when a Store, which need not be
// trusted, puts one under the other's name.
func TestAStoredEntryAnswersOnlyForItsScope(t *testing.T) {
	store := newMemStore()
	secret := sharedSecret(testSecretKey, "")
	noAudience := newSharedVerdicts(store, secret, []byte("no audience"), nil)
	withAudience := newSharedVerdicts(store, secret, []byte("audience https://api.example.com"), nil)
	noAudience.share("oat_token", &Identity{Subject: "user_1", TokenType: OAuthToken, Format: Opaque, Scopes: []string{}},
		testNow, testNow.Add(time.Minute))
	waitFor(t, func() bool { return store.len() == 1 })
	from, _ := noAudience.name("oat_token")
	to, _ := withAudience.name("oat_token")
	store.entries[to] = store.entries[from]
	identity, _, _ := withAudience.recall(context.Background(), time.Second, "oat_token", OAuthToken, testNow.Add(time.Minute))
	assert.Nil(t, identity, "an entry written under one scope is refused under another")
}

// TestStoredVerdictNeverOutlivesItsSource: an entry is written until the
// credential expires or CacheTTL after Clerk's answer, whichever comes
// first (see TestAStoredVerdictIsKeptNoLongerThanTheReadersTTL for its
// reader).
func TestStoredVerdictNeverOutlivesItsSource(t *testing.T) {
	f := newFleet(t)
	caller := f.clerk.NewMachine("caller")
	token, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{TTL: 20 * time.Second})
	identity, err := f.gateway("").Verify(context.Background(), token)
	require.NoError(t, err)
	f.waitForEntries(1)
	key, _ := f.gateway("").shared.name(token)
	entry, err := f.store.stored(key)
	require.NoError(t, err)
	assert.Equal(t, identity.ExpiresAt.UnixMilli(), bodyOf(t, entry).Expires, "the token expires before cache_ttl")
	assert.Equal(t, identity.ExpiresAt.UnixMilli(), f.store.expiry[key].UnixMilli())

	long, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{TTL: time.Hour})
	_, err = f.gateway("").Verify(context.Background(), long)
	require.NoError(t, err)
	f.waitForEntries(2)
	name, _ := f.gateway("").shared.name(long)
	stored, _ := f.store.stored(name)
	assert.Equal(t, testNow.Add(time.Minute).UnixMilli(), bodyOf(t, stored).Expires, "never beyond cache_ttl")
	assert.Equal(t, testNow.UnixMilli(), bodyOf(t, stored).Answered)
}

// TestAStoredVerdictIsKeptNoLongerThanTheReadersTTL: a reader uses a
// verdict from the Store until the entry expires, and at most its own
// CacheTTL after Clerk gave it, however far the entry's expiry, so that a
// credential revoked since is refused as soon as the reader would have
// asked Clerk again; and it asks the Store only for entries that expire by
// then.
func TestAStoredVerdictIsKeptNoLongerThanTheReadersTTL(t *testing.T) {
	c := testclock.New(testNow)
	store := newMemStore()
	v := newVerifier(t, Options{MachineSecretKey: testMachineKey, clerk: &fakeClerk{}, now: c.Now, CacheTTL: new(30 * time.Second), Store: store})
	for token, times := range map[string][2]time.Duration{ // answered, expiring
		"mt_recent": {-10 * time.Second, time.Hour}, "mt_old": {-time.Hour, time.Hour}, "mt_short": {0, 5 * time.Second},
	} {
		v.shared.share(token, &Identity{Subject: "mch_stored", TokenType: M2MToken, Format: Opaque, Scopes: []string{}},
			testNow.Add(times[0]), testNow.Add(times[1]))
	}
	waitFor(t, func() bool { return store.len() == 3 })
	for i, step := range []struct {
		at     time.Duration
		token  string
		stored bool
	}{
		{0, "mt_recent", true}, {0, "mt_old", false}, {0, "mt_short", true},
		{5 * time.Second, "mt_short", false}, {5 * time.Second, "mt_recent", true}, {20 * time.Second, "mt_recent", false},
	} {
		c.Set(testNow.Add(step.at))
		identity, err := v.Verify(context.Background(), step.token)
		require.NoError(t, err)
		assert.Equal(t, step.stored, identity.Subject == "mch_stored", "%s at %v", step.token, step.at)
		if i == 0 {
			assert.Equal(t, []time.Time{testNow.Add(30 * time.Second)}, store.expiresBy, "asked for entries that expire by now + cache_ttl")
		}
	}
}

// TestStoreTroubleFallsBackToClerk: a lookup that fails, takes longer than
// its share of the budget or finds garbage is a miss, reported, and Clerk
// answers.
func TestStoreTroubleFallsBackToClerk(t *testing.T) {
	for name, get := range map[string]func(ctx context.Context, key string) ([]byte, error){
		"failing": func(context.Context, string) ([]byte, error) { return nil, errors.New("disk on fire") },
		"hanging until its context ends": func(ctx context.Context, _ string) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
		"answering garbage": func(context.Context, string) ([]byte, error) { return []byte("0badc0de\n{}"), nil },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFleet(t)
			f.store.get = get
			caller := f.clerk.NewMachine("caller")
			token, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{})
			v := f.gateway("")
			identity, err := v.Verify(context.Background(), token)
			require.NoError(t, err)
			assert.Equal(t, caller.ID, identity.Subject)
			_, err = v.Verify(context.Background(), "mt_"+hex.EncodeToString(make([]byte, 16)))
			requireReason(t, err, ReasonInvalid)
			assert.Equal(t, 2, f.clerk.Calls(verifyPath))
			assert.Len(t, f.events.of(storeRead), 2, "each failed lookup reported")
		})
	}
}

// TestStoreIsReadOnceForABurst: the requests presenting a credential at
// once make one lookup in the Store, within the one call they share, which
// takes one of the Pool's slots like a call to Clerk.
func TestStoreIsReadOnceForABurst(t *testing.T) {
	f := newFleet(t)
	token := f.sharedToken()
	f.store.gets.Store(0)
	release := make(chan struct{})
	f.store.get = func(_ context.Context, key string) ([]byte, error) {
		<-release
		return f.store.stored(key)
	}
	pool, err := NewPool(PoolOptions{MaxClerkCalls: 1, now: f.clock.Now})
	require.NoError(t, err)
	other := f.gateway("", func(o *Options) { o.Pool = pool })
	results := make([]chan error, 8)
	for i := range results {
		results[i] = verifyInBackground(context.Background(), other, "", token)
	}
	waitFor(t, func() bool { return other.waiting(token) == len(results) })
	_, err = other.Verify(context.Background(), "mt_another")
	requireReason(t, err, ReasonCallsLimited)
	close(release)
	for _, result := range results {
		assert.NoError(t, receive(t, result, "an answer"))
	}
	assert.Equal(t, int32(1), f.store.gets.Load(), "one read for the burst")
	assert.Equal(t, 1, f.clerk.Calls(verifyPath), "the first gateway's call")
}

func TestStoreWritesAreBounded(t *testing.T) {
	f := newFleet(t)
	release := make(chan struct{})
	f.store.put = func(context.Context) { <-release }
	caller := f.clerk.NewMachine("caller")
	v := f.gateway("")
	for range maxStoreWrites + 2 {
		token, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{})
		_, err := v.Verify(context.Background(), token)
		require.NoError(t, err)
	}
	dropped := f.events.of(storeWrite)
	require.Len(t, dropped, 2, "maxStoreWrites writes in flight, the others dropped")
	assert.Contains(t, dropped[0], "not shared")
	close(release)
	f.waitForEntries(maxStoreWrites)
}
