package verify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/internal/testclock"
)

// fakeJWKS serves a key set (or an error) and counts fetches.
type fakeJWKS struct {
	mu      sync.Mutex
	keys    []json.RawMessage
	err     error
	delay   time.Duration
	fetches atomic.Int32
}

func (f *fakeJWKS) JWKS(ctx context.Context) (*backend.JWKS, error) {
	f.fetches.Add(1)
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return &backend.JWKS{Keys: append([]json.RawMessage(nil), f.keys...)}, nil
}

func (f *fakeJWKS) set(keys []json.RawMessage, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys, f.err = keys, err
}

func newRemote(t *testing.T, keys ...json.RawMessage) (*RemoteKeys, *fakeJWKS, *testclock.Clock) {
	t.Helper()
	f := &fakeJWKS{keys: keys}
	c := testclock.New(testNow)
	return NewRemoteKeys(f, JWKSOptions{now: c.Now, Timeout: time.Second}), f, c
}

// waitFor polls cond until it holds or a second has passed.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, time.Second, 5*time.Millisecond)
}

func TestRemoteKeysFetchOnFirstUseOnly(t *testing.T) {
	a, _ := signingKeys(t)
	r, f, _ := newRemote(t, jwkJSON(&a.PublicKey, "ins_a", "RS256"))
	assert.Zero(t, f.fetches.Load(), "nothing is fetched before a key is asked for")

	for range 10 {
		key, err := r.key(context.Background(), "ins_a")
		require.NoError(t, err)
		assert.Equal(t, "RS256", key.algorithm)
		assert.Equal(t, a.N, key.public.N)
	}
	assert.Equal(t, int32(1), f.fetches.Load())
}

func TestRemoteKeysConcurrentMissesShareOneFetch(t *testing.T) {
	a, _ := signingKeys(t)
	r, f, _ := newRemote(t, jwkJSON(&a.PublicKey, "ins_a", "RS256"))
	f.delay = 50 * time.Millisecond
	concurrently(100, func() {
		_, err := r.key(context.Background(), "ins_a")
		assert.NoError(t, err)
	})
	assert.Equal(t, int32(1), f.fetches.Load())
}

func TestRemoteKeysPickUpARotation(t *testing.T) {
	a, b := signingKeys(t)
	r, f, _ := newRemote(t, jwkJSON(&a.PublicKey, "ins_a", "RS256"))
	_, err := r.key(context.Background(), "ins_a")
	require.NoError(t, err)

	f.set([]json.RawMessage{jwkJSON(&b.PublicKey, "ins_b", "RS256")}, nil)
	key, err := r.key(context.Background(), "ins_b")
	require.NoError(t, err, "an unknown kid triggers a refetch")
	assert.Equal(t, b.N, key.public.N)
	assert.Equal(t, int32(2), f.fetches.Load())

	_, err = r.key(context.Background(), "ins_a")
	requireReason(t, err, ReasonInvalid)
}

func TestRemoteKeysMadeUpKidsCostABoundedFewFetches(t *testing.T) {
	a, _ := signingKeys(t)
	r, f, c := newRemote(t, jwkJSON(&a.PublicKey, "ins_a", "RS256"))
	for i := range 200 {
		_, err := r.key(context.Background(), "ins_made_up_"+strings.Repeat("x", i%50))
		requireReason(t, err, ReasonInvalid)
	}
	assert.Equal(t, int32(refetchBurst), f.fetches.Load())

	c.Advance(5 * time.Second)
	_, err := r.key(context.Background(), "ins_made_up_again")
	requireReason(t, err, ReasonInvalid)
	assert.Equal(t, int32(refetchBurst+1), f.fetches.Load(), "one more fetch per interval")

	_, err = r.key(context.Background(), "ins_a")
	assert.NoError(t, err, "known keys keep working throughout")
}

func TestRemoteKeysRefuseUnusableKidsWithoutFetching(t *testing.T) {
	r, f, _ := newRemote(t)
	for _, kid := range []string{"", strings.Repeat("k", maxKeyIDLength+1)} {
		_, err := r.key(context.Background(), kid)
		requireReason(t, err, ReasonInvalid)
	}
	assert.Zero(t, f.fetches.Load())
}

func TestRemoteKeysRefreshAfterMaxAgeWithoutBlocking(t *testing.T) {
	a, b := signingKeys(t)
	r, f, c := newRemote(t, jwkJSON(&a.PublicKey, "ins_a", "RS256"))
	_, err := r.key(context.Background(), "ins_a")
	require.NoError(t, err)

	f.set([]json.RawMessage{jwkJSON(&b.PublicKey, "ins_a", "RS256")}, nil)
	c.Advance(5*time.Minute + time.Second)
	key, err := r.key(context.Background(), "ins_a")
	require.NoError(t, err)
	assert.Equal(t, a.N, key.public.N, "the old key is served while the refresh runs")
	waitFor(t, func() bool { return f.fetches.Load() == 2 })
	waitFor(t, func() bool {
		key, err := r.key(context.Background(), "ins_a")
		return err == nil && key.public.N.Cmp(b.N) == 0
	})
}

func TestRemoteKeysKeepTheLastGoodSetForMaxStale(t *testing.T) {
	a, _ := signingKeys(t)
	r, f, c := newRemote(t, jwkJSON(&a.PublicKey, "ins_a", "RS256"))
	_, err := r.key(context.Background(), "ins_a")
	require.NoError(t, err)

	f.set(nil, &backend.Error{Status: 503})
	c.Advance(30 * time.Minute)
	_, err = r.key(context.Background(), "ins_a")
	require.NoError(t, err, "within the stale window the last good key is used")
	waitFor(t, func() bool { return f.fetches.Load() == 2 })

	c.Advance(36 * time.Minute) // 66 minutes after the fetch: past MaxAge + MaxStale
	_, err = r.key(context.Background(), "ins_a")
	verr := requireReason(t, err, ReasonUnavailable)
	assert.Positive(t, verr.RetryAfter)

	f.set([]json.RawMessage{jwkJSON(&a.PublicKey, "ins_a", "RS256")}, nil)
	c.Advance(5 * time.Second)
	_, err = r.key(context.Background(), "ins_a")
	assert.NoError(t, err, "recovers once Clerk answers again")
}

func TestRemoteKeysWithoutAnySetAreUnavailable(t *testing.T) {
	r, f, _ := newRemote(t)
	f.set(nil, &backend.Error{Status: 500, Code: "internal_clerk_error"})
	_, err := r.key(context.Background(), "ins_a")
	verr := requireReason(t, err, ReasonUnavailable)
	assert.ErrorContains(t, verr, "internal_clerk_error")
}

func TestRemoteKeysAnEmptySetDoesNotReplaceAGoodOne(t *testing.T) {
	a, _ := signingKeys(t)
	r, f, c := newRemote(t, jwkJSON(&a.PublicKey, "ins_a", "RS256"))
	_, err := r.key(context.Background(), "ins_a")
	require.NoError(t, err)

	f.set([]json.RawMessage{}, nil)
	c.Advance(5*time.Minute + time.Second)
	_, err = r.key(context.Background(), "ins_a")
	require.NoError(t, err)
	waitFor(t, func() bool { return f.fetches.Load() == 2 })
	_, err = r.key(context.Background(), "ins_a")
	assert.NoError(t, err)
}

func TestRemoteKeysSkipUnusableKeys(t *testing.T) {
	a, b := signingKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	privateJWK := func() json.RawMessage {
		m := map[string]any{}
		require.NoError(t, json.Unmarshal(jwkJSON(&a.PublicKey, "ins_private", ""), &m))
		m["d"] = "AQAB"
		data, _ := json.Marshal(m)
		return data
	}
	withField := func(key json.RawMessage, field string, value any) json.RawMessage {
		m := map[string]any{}
		require.NoError(t, json.Unmarshal(key, &m))
		m[field] = value
		data, _ := json.Marshal(m)
		return data
	}
	r, _, _ := newRemote(t,
		json.RawMessage(`{"kty":"EC","crv":"P-256","kid":"ins_ec","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}`),
		withField(jwkJSON(&b.PublicKey, "ins_enc", ""), "use", "enc"),
		withField(jwkJSON(&b.PublicKey, "ins_oaep", "RSA-OAEP"), "use", nil),
		withField(jwkJSON(&b.PublicKey, "ins_ops", ""), "key_ops", []string{"encrypt"}),
		jwkJSON(&small.PublicKey, "ins_small", "RS256"),
		jwkJSON(&b.PublicKey, "", "RS256"),
		privateJWK(),
		json.RawMessage(`{"kty":"oct","k":"c2VjcmV0","kid":"ins_hmac"}`),
		json.RawMessage(`"not a key"`),
		jwkJSON(&a.PublicKey, "ins_good", "RS256"),
	)
	key, err := r.key(context.Background(), "ins_good")
	require.NoError(t, err)
	assert.Equal(t, a.N, key.public.N)
	for _, kid := range []string{"ins_ec", "ins_enc", "ins_oaep", "ins_ops", "ins_small", "ins_private", "ins_hmac"} {
		_, err := r.key(context.Background(), kid)
		requireReason(t, err, ReasonInvalid)
	}
}

func TestRemoteKeysWaiterGivesUpWithItsContext(t *testing.T) {
	a, _ := signingKeys(t)
	r, f, _ := newRemote(t, jwkJSON(&a.PublicKey, "ins_a", "RS256"))
	f.delay = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.key(ctx, "ins_a")
	requireReason(t, err, ReasonUnavailable)
	assert.Less(t, time.Since(start), 400*time.Millisecond)

	waitFor(t, func() bool {
		_, err := r.key(context.Background(), "ins_a")
		return err == nil
	})
	assert.Equal(t, int32(1), f.fetches.Load(), "the fetch went on for later callers")
}

func TestRemoteKeysNeverRevealKnownKids(t *testing.T) {
	a, _ := signingKeys(t)
	r, _, _ := newRemote(t, jwkJSON(&a.PublicKey, "ins_secret_instance", "RS256"))
	_, err := r.key(context.Background(), "ins_other")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "ins_secret_instance")
}

func TestJWTVerificationThroughRemoteKeys(t *testing.T) {
	a, _ := signingKeys(t)
	r, _, _ := newRemote(t, jwkJSON(&a.PublicKey, testKid, "RS256"))
	v := New(Options{Accept: []TokenType{M2MToken}, Keys: r, now: fixedClock, ClockSkew: 5 * time.Second})
	_, err := v.Verify(context.Background(), sign(t, a, m2mHeader(), m2mPayload()))
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), sign(t, a, with(m2mHeader(), map[string]any{"kid": "ins_unknown"}), m2mPayload()))
	requireReason(t, err, ReasonInvalid)
	_, err = v.Verify(context.Background(), sign(t, a, with(m2mHeader(), map[string]any{"kid": nil}), m2mPayload()))
	requireReason(t, err, ReasonInvalid)
}

func TestParsePEMKey(t *testing.T) {
	a, _ := signingKeys(t)
	armoured := publicPEM(t, a)
	body := strings.Join(strings.Split(strings.TrimSpace(armoured), "\n")[1:strings.Count(armoured, "\n")-1], "")
	for name, text := range map[string]string{
		"armoured":                armoured,
		"bare base64":             body,
		"escaped line breaks":     strings.ReplaceAll(armoured, "\n", `\n`),
		"surrounded by blanks":    "\n  " + armoured + "\n\n",
		"bare base64 with breaks": body[:64] + "\n" + body[64:],
	} {
		t.Run(name, func(t *testing.T) {
			s, err := PEMKey(text)
			require.NoError(t, err)
			key, err := s.key(context.Background(), "any kid at all")
			require.NoError(t, err)
			assert.Equal(t, a.N, key.public.N)
			assert.Equal(t, "RS256", key.algorithm)
			assert.True(t, s.current(key))
		})
	}
}

func TestParsePEMKeyRefusals(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	a, _ := signingKeys(t)
	for name, tc := range map[string]struct{ text, want string }{
		"garbage":     {"not a key", "neither a PEM block nor base64"},
		"empty":       {"", "neither a PEM block nor base64"},
		"bad PEM":     {"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "not a valid PEM public key"},
		"small key":   {publicPEM(t, small), "too small"},
		"private key": {privatePEM(t, a), "private key"},
		"EC key":      {ecPublicPEM(t), "not RSA"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := PEMKey(tc.text)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func privatePEM(t *testing.T, key *rsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func ecPublicPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func TestRemoteKeysStartFetchesInTheBackground(t *testing.T) {
	a, _ := signingKeys(t)
	f := &fakeJWKS{keys: []json.RawMessage{jwkJSON(&a.PublicKey, "ins_a", "RS256")}}
	r := NewRemoteKeys(f, JWKSOptions{MaxAge: 100 * time.Millisecond, Timeout: time.Second})
	r.Start()
	r.Start() // idempotent
	waitFor(t, func() bool { return f.fetches.Load() >= 1 })
	_, err := r.key(context.Background(), "ins_a")
	require.NoError(t, err)

	waitFor(t, func() bool { return f.fetches.Load() >= 3 }) // renewed ahead of MaxAge, again and again
	r.Stop()
	fetches := f.fetches.Load()
	time.Sleep(250 * time.Millisecond)
	assert.Equal(t, fetches, f.fetches.Load(), "nothing runs after Stop")
	select {
	case <-r.stopped:
	default:
		t.Fatal("Stop returned before the refresher did")
	}

	_, err = r.key(context.Background(), "ins_a")
	assert.NoError(t, err, "the set held is still answered from")
	r.Start()
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, fetches, f.fetches.Load(), "Start after Stop does nothing")
}

func TestRemoteKeysRefresherBacksOffWhileFailing(t *testing.T) {
	f := &fakeJWKS{err: &backend.Error{Status: 503}}
	r := NewRemoteKeys(f, JWKSOptions{RefetchInterval: 40 * time.Millisecond, Timeout: time.Second})
	r.Start()
	defer r.Stop()
	time.Sleep(330 * time.Millisecond) // attempts at about 0, 40, 120 and 280 ms
	assert.LessOrEqual(t, f.fetches.Load(), int32(5), "retries double their pause instead of hammering every 40 ms")
	assert.GreaterOrEqual(t, f.fetches.Load(), int32(2), "and do retry")

	a, _ := signingKeys(t)
	f.set([]json.RawMessage{jwkJSON(&a.PublicKey, "ins_a", "RS256")}, nil)
	waitFor(t, func() bool {
		_, err := r.key(context.Background(), "ins_a")
		return err == nil
	})
}

func TestRemoteKeysStopCancelsAHangingFetch(t *testing.T) {
	f := &fakeJWKS{delay: time.Hour}
	var failures atomic.Int32
	r := NewRemoteKeys(f, JWKSOptions{Timeout: time.Hour, OnFetch: func(error) { failures.Add(1) }})
	r.Start()
	waitFor(t, func() bool { return f.fetches.Load() == 1 })
	stopped := make(chan struct{})
	go func() { r.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatal("Stop waited for a hanging fetch")
	}
	_ = r.refresh(context.Background(), false) // joins the cancelled fetch until it returns
	assert.Zero(t, failures.Load(), "a fetch cancelled by Stop is not reported as Clerk failing")
}

func TestRemoteKeysReportFetchesAndAge(t *testing.T) {
	a, _ := signingKeys(t)
	f := &fakeJWKS{err: &backend.Error{Status: 503}}
	c := testclock.New(testNow)
	var fetches []error
	r := NewRemoteKeys(f, JWKSOptions{now: c.Now, OnFetch: func(err error) { fetches = append(fetches, err) }})
	_, known := r.Age()
	assert.False(t, known)
	_, _ = r.key(context.Background(), "ins_a")
	f.set([]json.RawMessage{jwkJSON(&a.PublicKey, "ins_a", "RS256")}, nil)
	c.Advance(5 * time.Second)
	_, err := r.key(context.Background(), "ins_a")
	require.NoError(t, err)
	require.Len(t, fetches, 2)
	assert.Error(t, fetches[0])
	assert.NoError(t, fetches[1])
	c.Advance(42 * time.Second)
	age, known := r.Age()
	assert.True(t, known)
	assert.Equal(t, 42*time.Second, age)
}
