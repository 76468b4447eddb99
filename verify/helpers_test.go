package verify

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// testNow is the fixed clock of these tests.
var testNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func fixedClock() time.Time { return testNow }

// Keys of the right shapes for New, for Verifiers whose Clerk is a
// fakeClerk (Options.clerk): New checks only that some key verifies each
// type accepted.
const (
	testSecretKey  = "sk_test_secret"
	testMachineKey = "ak_test_machine"
)

// The publishable keys of the tests' instance, whose Frontend API is the
// issuer of sessionPayload: a production key, and a development one.
const (
	testPublishableKey = "pk_live_Y2xlcmsuaW5zcGlyZWQucHVtYS03NC5sY2wuZGV2JA"
	testDevelopmentKey = "pk_test_Y2xlcmsuaW5zcGlyZWQucHVtYS03NC5sY2wuZGV2JA"
)

var (
	keysOnce sync.Once
	keyA     *rsa.PrivateKey
	keyB     *rsa.PrivateKey
)

// signingKeys returns two RSA-2048 keys, generated once per test binary.
func signingKeys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		keyA, err = rsa.GenerateKey(rand.Reader, 2048)
		if err == nil {
			keyB, err = rsa.GenerateKey(rand.Reader, 2048)
		}
		if err != nil {
			panic(err)
		}
	})
	return keyA, keyB
}

// sign builds a compact JWS over exactly the given header and payload (maps
// are marshalled, strings used verbatim) with key, hashing as header["alg"]
// says when it is an RS algorithm, with SHA-256 otherwise.
func sign(t testing.TB, key *rsa.PrivateKey, header, payload any) string {
	t.Helper()
	encode := func(v any) string {
		if s, ok := v.(string); ok {
			return base64.RawURLEncoding.EncodeToString([]byte(s))
		}
		data, err := json.Marshal(v)
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(data)
	}
	signed := encode(header) + "." + encode(payload)
	hash := crypto.SHA256
	if h, ok := header.(map[string]any); ok {
		if alg, ok := h["alg"].(string); ok {
			if known, ok := algorithms[alg]; ok {
				hash = known
			}
		}
	}
	digest := hash.New()
	digest.Write([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, hash, digest.Sum(nil))
	require.NoError(t, err)
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

const testKid = "ins_2GIoQhbUpy0hX7B2cVkuTMinXoD"

func m2mHeader() map[string]any {
	return map[string]any{"alg": "RS256", "typ": "JWT", "kid": testKid, "cat": categoryM2M}
}

func m2mPayload() map[string]any {
	now := testNow.Unix()
	return map[string]any{
		"iss":    "https://clerk.m2m.example.test",
		"sub":    "mch_2vYVtestTESTtestTESTtestTESTtest",
		"aud":    []string{"mch_1xxxxx", "mch_2xxxxx"},
		"scopes": "mch_1xxxxx mch_2xxxxx",
		"jti":    "mt_2xKa9Bgv7NxMRDFyQw8LpZ3cTmU1vHjE",
		"iat":    now,
		"nbf":    now - 10,
		"exp":    now + 300,
	}
}

// ourM2MPayload is an M2M JWT's payload issued by the instance of
// testPublishableKey: in the __session cookie, the cookie the SDK reads it
// from (another instance's token there has the suffixed cookies read).
func ourM2MPayload() map[string]any {
	return with(m2mPayload(), map[string]any{"iss": sessionPayload()["iss"]})
}

// with returns a copy of m with the given changes; a nil value deletes.
func with(m map[string]any, changes map[string]any) map[string]any {
	out := maps.Clone(m)
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

func publicPEM(t testing.TB, key *rsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func jwkJSON(key *rsa.PublicKey, kid, alg string) json.RawMessage {
	m := map[string]any{
		"kty": "RSA", "use": "sig", "kid": kid,
		"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString([]byte{1, 0, 1}),
	}
	if alg != "" {
		m["alg"] = alg
	}
	data, _ := json.Marshal(m)
	return data
}

// countingKeys is a keySource that records how often it was asked.
type countingKeys struct {
	signing *signingKey
	calls   atomic.Int32
}

func (c *countingKeys) key(context.Context, string) (*signingKey, error) {
	c.calls.Add(1)
	return c.signing, nil
}

func (c *countingKeys) current(key *signingKey, _ time.Time) bool { return key == c.signing }

func (c *countingKeys) scope() string { return "counting" }

// keysFor is a countingKeys holding private's public key, for alg.
func keysFor(private *rsa.PrivateKey, alg string) *countingKeys {
	return &countingKeys{signing: &signingKey{id: testKid, algorithm: alg, public: &private.PublicKey}}
}

// failingKeys is a keySource that cannot give any key.
type failingKeys struct{}

func (failingKeys) key(context.Context, string) (*signingKey, error) {
	return nil, &Error{Reason: ReasonUnavailable, Description: "keys are down"}
}
func (failingKeys) current(*signingKey, time.Time) bool { return false }
func (failingKeys) scope() string                       { return "failing" }

// fakeClerk stands in for Clerk's Backend API (Options.clerk). It answers
// M2M tokens with m2m (nil: an answer made for the token, which is its id,
// expiring at expiry, or an hour after testNow), API keys with apiKey and
// OAuth tokens with oauth, or each with err when it is set. With gate set,
// a call waits until gate is closed, or ends with its context; with delay,
// a call takes that long. It counts the calls, and those its context
// ended, and keeps the budget the last call had.
type fakeClerk struct {
	m2m    *backend.M2MToken
	apiKey *backend.APIKey
	oauth  *backend.OAuthAccessToken
	err    error
	expiry time.Time
	gate   chan struct{}
	delay  time.Duration

	calls, cancelled atomic.Int32
	budget           atomic.Int64
}

func (f *fakeClerk) VerifyM2MToken(ctx context.Context, token string) (*backend.M2MToken, error) {
	answer := f.m2m
	if answer == nil {
		expiry := f.expiry
		if expiry.IsZero() {
			expiry = testNow.Add(time.Hour)
		}
		expiration := expiry.UnixMilli()
		answer = &backend.M2MToken{Object: "machine_to_machine_token", ID: token, Subject: "mch_caller", Expiration: &expiration}
	}
	return answerWith(ctx, f, answer)
}

func (f *fakeClerk) VerifyAPIKey(ctx context.Context, _ string) (*backend.APIKey, error) {
	return answerWith(ctx, f, f.apiKey)
}

func (f *fakeClerk) VerifyOAuthToken(ctx context.Context, _ string) (*backend.OAuthAccessToken, error) {
	return answerWith(ctx, f, f.oauth)
}

func answerWith[T any](ctx context.Context, f *fakeClerk, answer *T) (*T, error) {
	f.calls.Add(1)
	if deadline, ok := ctx.Deadline(); ok {
		f.budget.Store(int64(time.Until(deadline)))
	}
	var delay <-chan time.Time
	if f.delay > 0 {
		delay = time.After(f.delay)
	}
	if f.gate != nil || delay != nil {
		select { // a nil channel never delivers
		case <-f.gate:
		case <-delay:
		case <-ctx.Done():
			f.cancelled.Add(1)
			return nil, &backend.Error{Err: ctx.Err()}
		}
	}
	if f.err != nil {
		return nil, f.err
	}
	return answer, nil
}

// newVerifier is New(opts), on the tests' clock unless opts has one,
// failing the test if New refuses opts.
func newVerifier(t testing.TB, opts Options) *Verifier {
	t.Helper()
	if opts.now == nil {
		opts.now = fixedClock
	}
	v, err := New(opts)
	require.NoError(t, err)
	return v
}

// keep verifies credential until the cache keeps its verdict: twice, as a
// JWT's is kept from its second use (an opaque credential's second is a
// hit), failing the test if either is refused.
func keep(t testing.TB, v *Verifier, credential string) {
	t.Helper()
	for range 2 {
		_, err := v.Verify(context.Background(), credential)
		require.NoError(t, err)
	}
}

// allTypes are Options accepting every type, verified by clerk (with the
// secret key that verifies all opaque types) and keys: ones that Clerk
// never answers and that give no key when nil; sessions are read from the
// cookies of the app of testPublishableKey.
func allTypes(clerk clerkAPI, keys keySource) Options {
	accept, _ := ParseTokenTypes([]string{"any"})
	if clerk == nil {
		clerk = &fakeClerk{err: errors.New("fakeClerk: not expected to be asked")}
	}
	if keys == nil {
		keys = failingKeys{}
	}
	return Options{Accept: accept, SecretKey: testSecretKey, PublishableKey: testPublishableKey, clerk: clerk, keys: keys}
}

// opaqueVerifier verifies M2M tokens with clerk (with a machine secret
// key, which fetches no keys for JWTs), remembering verdicts for ttl, in a
// Pool of its own made with pool (and on its clock, if it has one).
func opaqueVerifier(t *testing.T, clerk clerkAPI, ttl time.Duration, pool PoolOptions) *Verifier {
	t.Helper()
	p, err := NewPool(pool)
	require.NoError(t, err)
	return newVerifier(t, Options{MachineSecretKey: testMachineKey, clerk: clerk, now: pool.now, CacheTTL: &ttl, Pool: p})
}

// hung is how long a test waits for something that must happen before it
// declares the code under test stuck: far beyond any real wait, so that it
// fails only when the thing never happens, whatever the load.
const hung = time.Minute

// receive returns what ch delivers, failing the test if nothing comes
// before hung.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hung):
	}
	t.Fatalf("waited %v for %s", hung, what)
	var none T
	return none
}

// waitFor polls cond until it holds, failing the test after hung.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, hung, time.Millisecond)
}

// requireReason asserts that err is an *Error with the given reason.
func requireReason(t *testing.T, err error, want Reason) *Error {
	t.Helper()
	require.Error(t, err)
	var verr *Error
	require.ErrorAs(t, err, &verr)
	require.Equal(t, want, verr.Reason, "error: %v", err)
	return verr
}

// jsonRoundTrip gives v as encoding/json decodes it (numbers as float64).
func jsonRoundTrip(t *testing.T, v any) any {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	var out any
	require.NoError(t, json.Unmarshal(data, &out))
	return out
}

// len is how many entries the cache holds.
func (c *verdictCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries.live
}

// held is the estimate of what the cache's entries hold, in bytes.
// getKey is get, hashing key itself.
func (c *verdictCache) getKey(key cacheKey, now time.Time) *cacheEntry {
	return c.get(key, c.hash(key), now)
}

func (c *verdictCache) held() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes[cheapVerdict] + c.bytes[paidVerdict]
}

// inFlight is how many calls to Clerk are in flight.
func (c *clerkCalls) inFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slots.used
}

// waiting is how many requests wait for the call under way for
// credential, 0 when there is none.
func (v *Verifier) waiting(credential string) int {
	c := v.pool.calls
	c.mu.Lock()
	defer c.mu.Unlock()
	if call, ok := c.running[cacheKey{v.scope, credential}]; ok {
		return call.waiting
	}
	return 0
}

// verifyInBackground verifies credential with ctx, as a request from
// client (an IP address) presents it, or as Verify's caller when client is
// "", and sends the error.
func verifyInBackground(ctx context.Context, v *Verifier, client, credential string) chan error {
	result := make(chan error, 1)
	go func() { result <- verifyAs(ctx, v, client, credential) }()
	return result
}

// verifyAs verifies credential with ctx, as a request from client (an IP
// address) presents it, or as Verify's caller when client is "".
func verifyAs(ctx context.Context, v *Verifier, client, credential string) error {
	if client == "" {
		_, err := v.Verify(ctx, credential)
		return err
	}
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	r.RemoteAddr = net.JoinHostPort(client, "40000")
	r.Header.Set("Authorization", "Bearer "+credential)
	_, err := v.VerifyRequest(r)
	return err
}
