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

// fakeJWKS serves a key set (or an error) and counts fetches. A fetch
// takes delay, or if release is set, waits until it is closed.
type fakeJWKS struct {
	mu      sync.Mutex
	keys    []json.RawMessage
	err     error
	delay   time.Duration
	release chan struct{}
	fetches atomic.Int32
}

func (f *fakeJWKS) JWKS(ctx context.Context) (*backend.JWKS, error) {
	f.fetches.Add(1)
	var delay <-chan time.Time
	if f.delay > 0 {
		delay = time.After(f.delay)
	}
	if delay != nil || f.release != nil {
		select { // a nil channel never delivers
		case <-delay:
		case <-f.release:
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
	f := &fakeJWKS{keys: []json.RawMessage{jwkJSON(&a.PublicKey, "ins_a", "RS256")}, release: make(chan struct{})}
	r := NewRemoteKeys(f, JWKSOptions{now: testclock.New(testNow).Now, Timeout: time.Hour})
	ctx, leave := context.WithCancel(context.Background())
	waiter := make(chan error, 1)
	go func() {
		_, err := r.key(ctx, "ins_a")
		waiter <- err
	}()
	waitFor(t, func() bool { return f.fetches.Load() == 1 })
	leave()
	// The fetch is held until released below: the waiter can only return
	// on its own.
	requireReason(t, receive(t, waiter, "the waiter's answer"), ReasonUnavailable)

	close(f.release)
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

// pauses stands in for the refresher's timer: each pause the refresher
// asks for is handed to the test, which ends it when it chooses.
type pauses chan pause

type pause struct {
	length time.Duration
	end    chan time.Time
}

func newPauses() pauses { return make(pauses, 16) }

func (p pauses) after(length time.Duration) <-chan time.Time {
	end := make(chan time.Time, 1)
	p <- pause{length, end}
	return end
}

// next is the pause the refresher asks for next: it asks once it is done
// with the fetch before, if any.
func (p pauses) next(t *testing.T) pause {
	t.Helper()
	return receive(t, p, "the refresher's next pause")
}

// remoteWithPauses is a RemoteKeys whose clock and refresher's pauses the
// test moves.
func remoteWithPauses(f *fakeJWKS, opts JWKSOptions) (*RemoteKeys, *testclock.Clock, pauses) {
	c, p := testclock.New(testNow), newPauses()
	opts.now, opts.after = c.Now, p.after
	return NewRemoteKeys(f, opts), c, p
}

func TestRemoteKeysStartFetchesInTheBackground(t *testing.T) {
	a, _ := signingKeys(t)
	f := &fakeJWKS{keys: []json.RawMessage{jwkJSON(&a.PublicKey, "ins_a", "RS256")}}
	r, c, p := remoteWithPauses(f, JWKSOptions{MaxAge: 100 * time.Second, Timeout: time.Second})
	r.Start()
	r.Start() // idempotent
	pause := p.next(t)
	assert.Zero(t, pause.length, "the first fetch starts at once")
	for fetches := range int32(3) {
		pause.end <- c.Now()
		pause = p.next(t)
		assert.Equal(t, fetches+1, f.fetches.Load())
		assert.Equal(t, 80*time.Second, pause.length, "renewed ahead of MaxAge, again and again")
		c.Advance(pause.length)
	}
	_, err := r.key(context.Background(), "ins_a")
	require.NoError(t, err)

	r.Stop()
	select {
	case <-r.stopped:
	default:
		t.Fatal("Stop returned before the refresher did")
	}
	pause.end <- c.Now() // the pause the refresher was in when stopped
	assert.Empty(t, p, "the refresher asks for no pause after Stop")
	assert.Equal(t, int32(3), f.fetches.Load(), "nothing runs after Stop")

	_, err = r.key(context.Background(), "ins_a")
	assert.NoError(t, err, "the set held is still answered from")
	r.Start()
	// A refresher started here would ask for its first pause at once. The
	// grace lets no right Start fail; only a wrong one on a stalled run could
	// slip through, and -count catches that.
	select {
	case <-p:
		t.Fatal("Start after Stop started a refresher")
	case <-time.After(100 * time.Millisecond):
	}
	assert.Equal(t, int32(3), f.fetches.Load(), "Start after Stop does nothing")
}

func TestRemoteKeysRefresherBacksOffWhileFailing(t *testing.T) {
	f := &fakeJWKS{err: &backend.Error{Status: 503}}
	r, c, p := remoteWithPauses(f, JWKSOptions{RefetchInterval: 5 * time.Second, Timeout: time.Second})
	r.Start()
	defer r.Stop()
	var lengths []time.Duration
	pause := p.next(t)
	for range 7 {
		lengths = append(lengths, pause.length)
		c.Advance(pause.length)
		pause.end <- c.Now()
		pause = p.next(t)
	}
	assert.Equal(t, []time.Duration{0, 5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute},
		lengths, "retries double their pause from RefetchInterval up to a minute")
	assert.Equal(t, int32(7), f.fetches.Load(), "one fetch per pause")

	a, _ := signingKeys(t)
	f.set([]json.RawMessage{jwkJSON(&a.PublicKey, "ins_a", "RS256")}, nil)
	c.Advance(pause.length)
	pause.end <- c.Now()
	pause = p.next(t)
	_, err := r.key(context.Background(), "ins_a")
	require.NoError(t, err, "a retry that succeeds brings the keys")
	assert.Equal(t, 4*time.Minute, pause.length, "then the next renewal is due at four fifths of MaxAge")

	f.set(nil, &backend.Error{Status: 503})
	c.Advance(pause.length)
	pause.end <- c.Now()
	assert.Equal(t, 5*time.Second, p.next(t).length, "a new run of failures starts again from RefetchInterval")
}

func TestRemoteKeysStopCancelsAHangingFetch(t *testing.T) {
	f := &fakeJWKS{release: make(chan struct{})} // never released
	var failures atomic.Int32
	r := NewRemoteKeys(f, JWKSOptions{Timeout: time.Hour, OnFetch: func(error) { failures.Add(1) }})
	r.Start()
	waitFor(t, func() bool { return f.fetches.Load() == 1 })
	stopped := make(chan struct{})
	go func() { r.Stop(); close(stopped) }()
	receive(t, stopped, "Stop's return (it waited for a hanging fetch)")
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
