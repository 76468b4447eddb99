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

// fakeJWKS serves a key set (or an error) and counts fetches. If release
// is set, a fetch waits until it is closed, or its context ends.
type fakeJWKS struct {
	mu      sync.Mutex
	keys    []json.RawMessage
	err     error
	release chan struct{}
	fetches atomic.Int32
}

func (f *fakeJWKS) JWKS(ctx context.Context) (*backend.JWKS, error) {
	f.fetches.Add(1)
	if f.release != nil {
		select {
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

func newRemote(t *testing.T, keys ...json.RawMessage) (*remoteKeys, *fakeJWKS, *testclock.Clock) {
	t.Helper()
	f := &fakeJWKS{keys: keys}
	c := testclock.New(testNow)
	return newRemoteKeys(f, remoteKeysOptions{now: c.Now, timeout: time.Second, maxStale: time.Hour}), f, c
}

// joining is a context that counts the callers waiting on it: a caller of
// remoteKeys.key waits on its context only once it has joined the fetch
// under way, or started one.
type joining struct {
	context.Context
	joined *atomic.Int32
}

func (j joining) Done() <-chan struct{} {
	j.joined.Add(1)
	return j.Context.Done()
}

// TestRemoteKeysFetchOnceOnFirstUse: nothing is fetched before a key is
// asked for; the callers that come while the set is fetched share that
// fetch, each waiting only as long as its own context lets it; later ones
// need none.
func TestRemoteKeysFetchOnceOnFirstUse(t *testing.T) {
	a, _ := signingKeys(t)
	r, f, _ := newRemote(t, jwkJSON(&a.PublicKey, "ins_a", "RS256"))
	assert.Zero(t, f.fetches.Load(), "nothing is fetched before a key is asked for")

	f.release = make(chan struct{})
	var joined atomic.Int32
	ctx, leave := context.WithCancel(context.Background())
	leaver := make(chan error, 1)
	go func() {
		_, err := r.key(joining{ctx, &joined}, "ins_a")
		leaver <- err
	}()
	var callers sync.WaitGroup
	for range 100 {
		callers.Go(func() {
			_, err := r.key(joining{context.Background(), &joined}, "ins_a")
			assert.NoError(t, err)
		})
	}
	waitFor(t, func() bool { return joined.Load() == 101 }) // every caller waits for a fetch
	leave()
	requireReason(t, receive(t, leaver, "the answer of a caller who left"), ReasonUnavailable)
	close(f.release)
	callers.Wait()
	for range 10 {
		key, err := r.key(context.Background(), "ins_a")
		require.NoError(t, err)
		assert.Equal(t, "RS256", key.algorithm)
		assert.Equal(t, a.N, key.public.N)
	}
	assert.Equal(t, int32(1), f.fetches.Load(), "one fetch, which went on for the others")
}

// TestKeyRotation: a token naming a kid the set does not hold has it
// fetched again, which picks up a rotation; the cached verdicts on JWTs
// whose key was rotated out, or replaced under the same kid, are
// forgotten, while a refresh that brings the same key back keeps them.
func TestKeyRotation(t *testing.T) {
	a, b := signingKeys(t)
	r, f, c := newRemote(t, jwkJSON(&a.PublicKey, testKid, "RS256"))
	var hits []bool
	v := newVerifier(t, Options{keys: r, now: c.Now, OnCacheLookup: func(_ string, hit bool) { hits = append(hits, hit) }})
	verify := func(token string) error {
		_, err := v.Verify(context.Background(), token)
		return err
	}
	old := sign(t, a, m2mHeader(), m2mPayload())
	keep(t, v, old)
	require.NoError(t, r.refresh(context.Background(), false)) // the same key again
	require.NoError(t, verify(old))
	assert.Equal(t, []bool{false, false, true}, hits, "a refresh that brings back the same key keeps the cache")

	f.set([]json.RawMessage{jwkJSON(&b.PublicKey, "ins_new", "RS256")}, nil)
	rotated := sign(t, b, with(m2mHeader(), map[string]any{"kid": "ins_new"}), m2mPayload())
	require.NoError(t, verify(rotated), "an unknown kid has the set fetched again")
	assert.Equal(t, int32(3), f.fetches.Load())
	requireReason(t, verify(old), ReasonInvalid)

	f.set([]json.RawMessage{jwkJSON(&a.PublicKey, "ins_new", "RS256")}, nil) // the same kid, another key
	require.NoError(t, r.refresh(context.Background(), false))
	requireReason(t, verify(rotated), ReasonInvalid)

	for _, kid := range []any{"ins_unknown", nil} {
		requireReason(t, verify(sign(t, a, with(m2mHeader(), map[string]any{"kid": kid}), m2mPayload())), ReasonInvalid)
	}
}

// TestRemoteKeysMadeUpKidsCostABoundedFewFetches: a kid that cannot be
// one costs no fetch, and made-up ones a few, paced; the kids held are
// never revealed.
func TestRemoteKeysMadeUpKidsCostABoundedFewFetches(t *testing.T) {
	a, _ := signingKeys(t)
	r, f, c := newRemote(t, jwkJSON(&a.PublicKey, "ins_secret_instance", "RS256"))
	for _, kid := range []string{"", strings.Repeat("k", maxKeyIDLength+1)} {
		_, err := r.key(context.Background(), kid)
		requireReason(t, err, ReasonInvalid)
	}
	assert.Zero(t, f.fetches.Load())
	for i := range 200 {
		_, err := r.key(context.Background(), "ins_made_up_"+strings.Repeat("x", i%50))
		requireReason(t, err, ReasonInvalid)
		assert.NotContains(t, err.Error(), "ins_secret_instance")
	}
	assert.Equal(t, int32(refetchBurst), f.fetches.Load())

	c.Advance(5 * time.Second)
	_, err := r.key(context.Background(), "ins_made_up_again")
	requireReason(t, err, ReasonInvalid)
	assert.Equal(t, int32(refetchBurst+1), f.fetches.Load(), "one more fetch per interval")

	_, err = r.key(context.Background(), "ins_secret_instance")
	assert.NoError(t, err, "known keys keep working throughout")
}

// TestRemoteKeysKeepTheLastGoodSetForMaxStale: with no set at all, keys
// are unavailable, for Clerk's reason; a set older than maxAge is still
// served while a refresh runs behind the request, and through failed
// refreshes for maxStale beyond maxAge, not after. Every fetch is
// reported, with where it was from and how it ended.
func TestRemoteKeysKeepTheLastGoodSetForMaxStale(t *testing.T) {
	a, _ := signingKeys(t)
	f := &fakeJWKS{err: &backend.Error{Status: 500, Code: "internal_clerk_error"}}
	c := testclock.New(testNow)
	fetched := make(chan error, 8)
	r := newRemoteKeys(f, remoteKeysOptions{url: "https://clerk.example.test", now: c.Now, maxStale: time.Hour,
		onFetch: func(url string, err error) {
			assert.Equal(t, "https://clerk.example.test", url)
			fetched <- err
		}})
	_, err := r.key(context.Background(), "ins_a")
	verr := requireReason(t, err, ReasonUnavailable)
	assert.ErrorContains(t, verr, "internal_clerk_error")
	assert.Positive(t, verr.RetryAfter)
	assert.Error(t, receive(t, fetched, "the first fetch"))

	f.set([]json.RawMessage{jwkJSON(&a.PublicKey, "ins_a", "RS256")}, nil)
	c.Advance(5 * time.Second)
	_, err = r.key(context.Background(), "ins_a")
	require.NoError(t, err)
	assert.NoError(t, receive(t, fetched, "the second fetch"))

	_, b := signingKeys(t)
	f.set([]json.RawMessage{jwkJSON(&b.PublicKey, "ins_a", "RS256")}, nil)
	c.Advance(5*time.Minute + time.Second)
	key, err := r.key(context.Background(), "ins_a")
	require.NoError(t, err)
	assert.Equal(t, a.N, key.public.N, "the old key is served while the refresh runs")
	assert.NoError(t, receive(t, fetched, "the refresh behind it"))
	waitFor(t, func() bool { // then the new one; onFetch is told before the set is in use
		key, err := r.key(context.Background(), "ins_a")
		return err == nil && key.public.N.Cmp(b.N) == 0
	})
	// The refresh behind may not quite have ended (its keys are in use a
	// moment before): a refresh joins it, or makes one, and returns once
	// no fetch is under way, so that the next refresh behind is a fetch of
	// its own.
	require.NoError(t, r.refresh(context.Background(), false))
	for len(fetched) > 0 {
		assert.NoError(t, <-fetched)
	}

	f.set(nil, &backend.Error{Status: 503})
	c.Advance(30 * time.Minute)
	_, err = r.key(context.Background(), "ins_a")
	require.NoError(t, err, "within the stale window the last good key is used")
	assert.Error(t, receive(t, fetched, "the refresh behind it"))

	c.Advance(36 * time.Minute) // 66 minutes after the fetch: past maxAge + maxStale
	_, err = r.key(context.Background(), "ins_a")
	verr = requireReason(t, err, ReasonUnavailable)
	assert.Positive(t, verr.RetryAfter)

	f.set([]json.RawMessage{jwkJSON(&a.PublicKey, "ins_a", "RS256")}, nil)
	c.Advance(5 * time.Second)
	_, err = r.key(context.Background(), "ins_a")
	assert.NoError(t, err, "recovers once Clerk answers again")
}

// TestARejectedKeyIsMisconfiguredForJWTsToo: when Clerk rejects the key
// that fetches the signing keys, a JWT is refused as an opaque credential
// asked about with that key is, misconfigured: the gateway's key is wrong,
// not Clerk unavailable; within the stale window the last good keys still
// serve.
func TestARejectedKeyIsMisconfiguredForJWTsToo(t *testing.T) {
	a, _ := signingKeys(t)
	rejected := &backend.Error{Status: 401, Code: "authentication_invalid", TraceID: "trace_1"}
	r, f, c := newRemote(t)
	f.set(nil, rejected)
	_, err := r.key(context.Background(), "ins_a")
	verr := requireReason(t, err, ReasonMisconfigured)
	assert.ErrorContains(t, verr, "trace_1", "the cause, for the log")

	f.set([]json.RawMessage{jwkJSON(&a.PublicKey, "ins_a", "RS256")}, nil)
	c.Advance(5 * time.Second)
	_, err = r.key(context.Background(), "ins_a")
	require.NoError(t, err)
	f.set(nil, rejected)
	c.Advance(10 * time.Minute)
	_, err = r.key(context.Background(), "ins_a")
	require.NoError(t, err, "within the stale window the last good key is used")
	waitFor(t, func() bool { return f.fetches.Load() == 3 }) // the refresh behind it, which fails
	c.Advance(time.Hour)
	_, err = r.key(context.Background(), "ins_a")
	requireReason(t, err, ReasonMisconfigured)
}

// TestRemoteKeysSkipUnusableKeys: one odd key does not make the others
// unusable; a set with no usable key is a failed fetch that says why each
// key was skipped, and does not replace a good set.
func TestRemoteKeysSkipUnusableKeys(t *testing.T) {
	a, b := signingKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	withField := func(key json.RawMessage, field string, value any) json.RawMessage {
		m := map[string]any{}
		require.NoError(t, json.Unmarshal(key, &m))
		m[field] = value
		data, _ := json.Marshal(m)
		return data
	}
	unusable := []struct {
		kid string
		key json.RawMessage
		why string
	}{
		{"ins_ec", json.RawMessage(`{"kty":"EC","crv":"P-256","kid":"ins_ec","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}`), "not an RSA public key"},
		{"ins_enc", withField(jwkJSON(&b.PublicKey, "ins_enc", ""), "use", "enc"), `key use "enc" is not signing`},
		{"ins_oaep", withField(jwkJSON(&b.PublicKey, "ins_oaep", "RSA-OAEP"), "use", nil), `algorithm "RSA-OAEP"`},
		{"ins_ops", withField(jwkJSON(&b.PublicKey, "ins_ops", ""), "key_ops", []string{"encrypt"}), "do not include verify"},
		{"ins_small", jwkJSON(&small.PublicKey, "ins_small", "RS256"), "1024 bits is too small"},
		{"", jwkJSON(&b.PublicKey, "", "RS256"), "no kid"},
		{"ins_private", withField(jwkJSON(&a.PublicKey, "ins_private", ""), "d", "AQAB"), "key 6:"},
		{"ins_hmac", json.RawMessage(`{"kty":"oct","k":"c2VjcmV0","kid":"ins_hmac"}`), "key type oct"},
		{"", json.RawMessage(`"not a key"`), "key 8:"},
	}
	var set []json.RawMessage
	for _, u := range unusable {
		set = append(set, u.key)
	}
	r, f, _ := newRemote(t, append(set, jwkJSON(&a.PublicKey, "ins_good", "RS256"))...)
	key, err := r.key(context.Background(), "ins_good")
	require.NoError(t, err)
	assert.Equal(t, a.N, key.public.N)
	for _, u := range unusable {
		if u.kid != "" {
			_, err := r.key(context.Background(), u.kid)
			requireReason(t, err, ReasonInvalid)
		}
	}

	f.set(set, nil)
	err = r.refresh(context.Background(), false)
	require.ErrorContains(t, err, "no usable signing key (9 keys in all)")
	for _, u := range unusable {
		assert.ErrorContains(t, err, u.why)
	}
	f.set([]json.RawMessage{}, nil)
	require.Error(t, r.refresh(context.Background(), false))
	_, err = r.key(context.Background(), "ins_good")
	assert.NoError(t, err, "the good set is kept")
}

// TestAnEmptySetIsExplainedPlainly: a fetch that brings no key at all says
// so in plain words.
func TestAnEmptySetIsExplainedPlainly(t *testing.T) {

	r, _, _ := newRemote(t)
	err := r.refresh(context.Background(), false)
	require.ErrorContains(t, err, "the JWKS holds no key")
	assert.NotContains(t, err.Error(), "%!")
}

func TestParsePEMKey(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	a, _ := signingKeys(t)
	armoured := publicPEM(t, a)
	body := strings.Join(strings.Split(strings.TrimSpace(armoured), "\n")[1:strings.Count(armoured, "\n")-1], "")
	private, err := x509.MarshalPKCS8PrivateKey(a)
	require.NoError(t, err)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ecPublic, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	require.NoError(t, err)
	for name, tc := range map[string]struct{ text, refusal string }{
		"armoured":                {armoured, ""},
		"bare base64":             {body, ""},
		"escaped line breaks":     {strings.ReplaceAll(armoured, "\n", `\n`), ""},
		"surrounded by blanks":    {"\n  " + armoured + "\n\n", ""},
		"bare base64 with breaks": {body[:64] + "\n" + body[64:], ""},
		"garbage":                 {"not a key", "neither a PEM block nor base64"},
		"empty":                   {"", "neither a PEM block nor base64"},
		"bad PEM":                 {"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "not a valid PEM public key"},
		"small key":               {publicPEM(t, small), "too small"},
		"private key":             {string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: private})), "private key"},
		"EC key":                  {string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPublic})), "not RSA"},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := pemKey(tc.text)
			if tc.refusal != "" {
				assert.ErrorContains(t, err, tc.refusal)
				return
			}
			require.NoError(t, err)
			key, err := s.key(context.Background(), "any kid at all")
			require.NoError(t, err)
			assert.Equal(t, a.N, key.public.N)
			assert.Equal(t, "RS256", key.algorithm)
			assert.True(t, s.current(key, time.Now()))
		})
	}
}

// pauses stands in for the refresher's timer: each pause the refresher
// asks for is handed to the test, which ends it when it chooses.
type pauses chan pause

type pause struct {
	length time.Duration
	end    chan time.Time
}

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

// runWithPauses runs remote keys whose clock and refresher's pauses the
// test moves, until the test ends or stop is called; ran is closed when
// run has returned.
func runWithPauses(t *testing.T, f *fakeJWKS, opts remoteKeysOptions) (r *remoteKeys, c *testclock.Clock, p pauses, stop func(), ran chan struct{}) {
	c, p = testclock.New(testNow), make(pauses, 16)
	opts.now, opts.after = c.Now, p.after
	r = newRemoteKeys(f, opts)
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	ran = make(chan struct{})
	go func() {
		r.run(ctx)
		close(ran)
	}()
	return r, c, p, stop, ran
}

// TestRemoteKeysRun: run fetches the set at once; while fetches fail, it
// retries, its pause doubling from refetchInterval up to a minute; once
// one succeeds, it renews the set ahead of maxAge, at four fifths of it,
// and a new run of failures starts again from refetchInterval. When its
// context ends, it returns and asks for nothing more, while the set held
// is still answered from.
func TestRemoteKeysRun(t *testing.T) {
	a, _ := signingKeys(t)
	f := &fakeJWKS{err: &backend.Error{Status: 503}}
	r, c, p, stop, ran := runWithPauses(t, f, remoteKeysOptions{maxAge: 100 * time.Second, refetchInterval: 5 * time.Second, timeout: time.Second})
	var lengths []time.Duration
	pause := p.next(t)
	next := func() { // ends the pause the refresher is in, once the clock has gone through it
		lengths = append(lengths, pause.length)
		c.Advance(pause.length)
		pause.end <- c.Now()
		pause = p.next(t)
	}
	for range 7 {
		next()
	}
	assert.Equal(t, []time.Duration{0, 5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute},
		lengths, "at once, then pauses doubling from refetchInterval up to a minute")
	assert.Equal(t, int32(7), f.fetches.Load(), "one fetch per pause")

	f.set([]json.RawMessage{jwkJSON(&a.PublicKey, "ins_a", "RS256")}, nil)
	lengths = nil
	for range 3 {
		next()
	}
	assert.Equal(t, []time.Duration{time.Minute, 80 * time.Second, 80 * time.Second}, lengths, "renewed ahead of maxAge, again and again")
	_, err := r.key(context.Background(), "ins_a")
	require.NoError(t, err, "a retry that succeeds brings the keys")

	f.set(nil, &backend.Error{Status: 503})
	next()
	assert.Equal(t, 5*time.Second, pause.length, "a new run of failures starts again from refetchInterval")

	stop()
	receive(t, ran, "run's return once its context ended")
	assert.Empty(t, p, "the refresher asks for no pause after")
	assert.Equal(t, int32(11), f.fetches.Load(), "nothing runs after")
	_, err = r.key(context.Background(), "ins_a")
	assert.NoError(t, err, "the set held is still answered from")
}

func TestRemoteKeysRunEndCancelsAHangingFetch(t *testing.T) {
	f := &fakeJWKS{release: make(chan struct{})} // never released
	var reported atomic.Int32
	r, _, p, stop, ran := runWithPauses(t, f, remoteKeysOptions{timeout: time.Hour, onFetch: func(string, error) { reported.Add(1) }})
	p.next(t).end <- testNow
	waitFor(t, func() bool { return f.fetches.Load() == 1 })
	stop()
	receive(t, ran, "run's return (a fetch hangs)")
	_ = r.refresh(context.Background(), false) // joins the cancelled fetch until it returns
	assert.Zero(t, reported.Load(), "a fetch cut short by the end of run is not reported as Clerk failing")
}
