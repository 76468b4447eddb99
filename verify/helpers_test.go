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

// with returns a copy of m with the given changes; a nil value deletes.
func with(m map[string]any, changes map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
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

// countingKeys is a KeySource that records how often it was asked.
type countingKeys struct {
	signing *signingKey
	calls   atomic.Int32
}

func (c *countingKeys) key(context.Context, string) (*signingKey, error) {
	c.calls.Add(1)
	return c.signing, nil
}

func (c *countingKeys) current(key *signingKey) bool { return key == c.signing }

func (c *countingKeys) scope() string { return "counting" }

func rsaKey(private *rsa.PrivateKey, alg string) *signingKey {
	return &signingKey{id: testKid, algorithm: alg, public: &private.PublicKey}
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

// concurrently runs f n times at once and waits for all of them.
func concurrently(n int, f func()) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(f)
	}
	wg.Wait()
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

// m2mOnly completes a Backend that only expects M2M verifications.
type m2mOnly struct{}

func (m2mOnly) VerifyAPIKey(context.Context, string) (*backend.APIKey, error) {
	return nil, errors.New("unexpected API key verification")
}

func (m2mOnly) VerifyOAuthToken(context.Context, string) (*backend.OAuthAccessToken, error) {
	return nil, errors.New("unexpected OAuth verification")
}

// classifyToken classifies token as the Verifier does.
func classifyToken(token string) (*classified, error) { return classify(token, prefixedKind(token)) }

func allTypesVerifier(b Backend, keys KeySource, parties ...string) *Verifier {
	accept, _ := ParseTokenTypes([]string{"any"})
	return New(Options{Accept: accept, Backend: b, Keys: keys, ClockSkew: 5 * time.Second, now: fixedClock,
		AuthorizedParties: parties, CacheTTL: time.Minute})
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
