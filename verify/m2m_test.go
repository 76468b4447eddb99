package verify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// jwtVerifier returns a verifier of M2M tokens with a counting key source
// holding key.
func jwtVerifier(key *signingKey, skew time.Duration) (*Verifier, *countingKeys) {
	keys := &countingKeys{signing: key}
	return New(Options{Accept: []TokenType{M2MToken}, Keys: keys, ClockSkew: skew, now: fixedClock}), keys
}

func TestM2MJWTValid(t *testing.T) {
	private, _ := signingKeys(t)
	v, _ := jwtVerifier(rsaKey(private, "RS256"), 5*time.Second)
	for name, header := range map[string]map[string]any{
		"with the M2M category":             m2mHeader(),
		"without category (before rollout)": with(m2mHeader(), map[string]any{"cat": nil}),
		"without typ":                       with(m2mHeader(), map[string]any{"typ": nil}),
	} {
		t.Run(name, func(t *testing.T) {
			payload := with(m2mPayload(), map[string]any{"role": "service", "tier": map[string]any{"level": 2}})
			id, err := v.Verify(context.Background(), sign(t, private, header, payload))
			require.NoError(t, err)
			assert.Equal(t, "mch_2vYVtestTESTtestTESTtestTESTtest", id.Subject)
			assert.Equal(t, M2MToken, id.TokenType)
			assert.Equal(t, JWT, id.Format)
			assert.Equal(t, "mt_2xKa9Bgv7NxMRDFyQw8LpZ3cTmU1vHjE", id.TokenID)
			assert.Equal(t, []string{"mch_1xxxxx", "mch_2xxxxx"}, id.Scopes)
			assert.Equal(t, testNow.Add(300*time.Second).Unix(), id.ExpiresAt.Unix())
			// Clerk keeps aud and scopes among the claims and drops only
			// iss, sub, exp, nbf, iat and jti.
			assert.JSONEq(t, `{"aud":["mch_1xxxxx","mch_2xxxxx"],"scopes":"mch_1xxxxx mch_2xxxxx","role":"service","tier":{"level":2}}`, id.ClaimsJSON())
			assert.Equal(t, "service", id.Claims()["role"])
		})
	}
}

func TestM2MJWTScopesAndClaimsMapping(t *testing.T) {
	private, _ := signingKeys(t)
	v, _ := jwtVerifier(rsaKey(private, ""), 5*time.Second)
	for _, tc := range []struct {
		name       string
		changes    map[string]any
		wantScopes []string
		wantClaims bool
	}{
		{"scopes preferred over aud", map[string]any{"scopes": "a b c", "aud": []string{"x"}}, []string{"a", "b", "c"}, true},
		{"aud when no scopes", map[string]any{"scopes": nil}, []string{"mch_1xxxxx", "mch_2xxxxx"}, true},
		{"aud as a string", map[string]any{"scopes": nil, "aud": "mch_9"}, []string{"mch_9"}, true},
		{"empty scopes string splits like JS", map[string]any{"scopes": ""}, []string{""}, true},
		{"neither", map[string]any{"scopes": nil, "aud": nil}, []string{}, false},
		{"no jti", map[string]any{"jti": nil}, []string{"mch_1xxxxx", "mch_2xxxxx"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), sign(t, private, m2mHeader(), with(m2mPayload(), tc.changes)))
			require.NoError(t, err)
			assert.Equal(t, tc.wantScopes, id.Scopes)
			assert.Equal(t, tc.wantClaims, id.Claims() != nil)
		})
	}
}

func TestM2MJWTCategoryIsCheckedBeforeAnyKeyLookup(t *testing.T) {
	private, _ := signingKeys(t)
	for _, cat := range []string{categorySession, categoryJWTTemplate, categoryIgnore, "cl_some_future_unknown_cat", ""} {
		v, keys := jwtVerifier(rsaKey(private, "RS256"), 5*time.Second)
		_, err := v.Verify(context.Background(), sign(t, private, with(m2mHeader(), map[string]any{"cat": cat}), m2mPayload()))
		verr := requireReason(t, err, ReasonInvalid)
		assert.Equal(t, M2MToken, verr.TokenType)
		assert.Zero(t, keys.calls.Load(), "cat %q: no key may be looked up", cat)
	}
}

func TestM2MJWTHeaderRulesNeedNoKey(t *testing.T) {
	private, _ := signingKeys(t)
	for name, changes := range map[string]map[string]any{
		"alg none":          {"alg": "none"},
		"alg empty":         {"alg": ""},
		"alg missing":       {"alg": nil},
		"alg HS256":         {"alg": "HS256"},
		"alg PS256":         {"alg": "PS256"},
		"alg ES256":         {"alg": "ES256"},
		"alg lowercase":     {"alg": "rs256"},
		"typ JWE":           {"typ": "JWE"},
		"typ lowercase jwt": {"typ": "jwt"},
		"typ empty":         {"typ": ""},
		"typ at+jwt":        {"typ": "at+jwt"},
		"crit":              {"crit": []string{"exp"}},
		"jku":               {"jku": "https://attacker.example/jwks.json"},
		"x5u":               {"x5u": "https://attacker.example/cert.pem"},
		"embedded jwk":      {"jwk": map[string]any{"kty": "RSA", "n": "AQAB", "e": "AQAB"}},
		"x5c":               {"x5c": []string{"MIIB"}},
	} {
		t.Run(name, func(t *testing.T) {
			v, keys := jwtVerifier(rsaKey(private, ""), 5*time.Second)
			_, err := v.Verify(context.Background(), sign(t, private, with(m2mHeader(), changes), m2mPayload()))
			requireReason(t, err, ReasonInvalid)
			assert.Zero(t, keys.calls.Load())
		})
	}
}

func TestM2MJWTHMACWithThePublicKeyIsRefused(t *testing.T) {
	private, _ := signingKeys(t)
	header, _ := json.Marshal(with(m2mHeader(), map[string]any{"alg": "HS256"}))
	payload, _ := json.Marshal(m2mPayload())
	signed := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	mac := hmac.New(sha256.New, []byte(publicPEM(t, private)))
	mac.Write([]byte(signed))
	token := signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	v, _ := jwtVerifier(rsaKey(private, ""), 5*time.Second)
	_, err := v.Verify(context.Background(), token)
	requireReason(t, err, ReasonInvalid)
}

func TestM2MJWTSignature(t *testing.T) {
	private, other := signingKeys(t)
	good := sign(t, private, m2mHeader(), m2mPayload())
	tamperedPayload, _ := json.Marshal(with(m2mPayload(), map[string]any{"sub": "mch_attacker"}))
	parts := splitJWT(good)
	for name, token := range map[string]string{
		"signed by another key": sign(t, other, m2mHeader(), m2mPayload()),
		"tampered payload":      parts[0] + "." + base64.RawURLEncoding.EncodeToString(tamperedPayload) + "." + parts[2],
		"signature of another token": parts[0] + "." + parts[1] + "." +
			splitJWT(sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"jti": "x"})))[2],
		"truncated signature": parts[0] + "." + parts[1] + "." + parts[2][:40],
	} {
		t.Run(name, func(t *testing.T) {
			v, _ := jwtVerifier(rsaKey(private, "RS256"), 5*time.Second)
			_, err := v.Verify(context.Background(), token)
			requireReason(t, err, ReasonInvalid)
		})
	}
}

func TestM2MJWTAlgorithmMustAgreeWithTheKey(t *testing.T) {
	private, _ := signingKeys(t)
	token := sign(t, private, with(m2mHeader(), map[string]any{"alg": "RS384"}), m2mPayload())

	v, _ := jwtVerifier(rsaKey(private, "RS256"), 5*time.Second)
	_, err := v.Verify(context.Background(), token)
	requireReason(t, err, ReasonInvalid)

	v, _ = jwtVerifier(rsaKey(private, ""), 5*time.Second)
	_, err = v.Verify(context.Background(), token)
	assert.NoError(t, err, "a key that names no algorithm verifies any RS algorithm")

	token = sign(t, private, with(m2mHeader(), map[string]any{"alg": "RS512"}), m2mPayload())
	v, _ = jwtVerifier(rsaKey(private, "RS512"), 5*time.Second)
	_, err = v.Verify(context.Background(), token)
	assert.NoError(t, err)
}

func TestM2MJWTTimes(t *testing.T) {
	private, _ := signingKeys(t)
	now := testNow.Unix()
	for _, tc := range []struct {
		name    string
		skew    time.Duration
		changes map[string]any
		want    Reason // "" = valid
	}{
		{"expired beyond skew", 5 * time.Second, map[string]any{"exp": now - 6}, ReasonExpired},
		{"expired within skew", 5 * time.Second, map[string]any{"exp": now - 4}, ""},
		{"exp now with skew 0 is expired", 0, map[string]any{"exp": now}, ReasonExpired},
		{"exp now with skew is fine", time.Second, map[string]any{"exp": now}, ""},
		{"skew 0 is honoured", 0, map[string]any{"exp": now - 1}, ReasonExpired},
		{"no exp", 5 * time.Second, map[string]any{"exp": nil}, ReasonInvalid},
		{"exp as a string", 5 * time.Second, map[string]any{"exp": "2099-01-01"}, ReasonInvalid},
		{"exp as a numeric string", 5 * time.Second, map[string]any{"exp": "4102444800"}, ReasonInvalid},
		{"exp null", 5 * time.Second, map[string]any{"exp": json.RawMessage("null")}, ReasonInvalid},
		{"exp as a float", 5 * time.Second, map[string]any{"exp": float64(now) + 0.5}, ""},
		{"a fraction of exp is dropped", 5 * time.Second, map[string]any{"exp": float64(now-5) + 0.9}, ReasonExpired},
		{"a fraction of nbf is dropped", 5 * time.Second, map[string]any{"nbf": float64(now+5) + 0.9}, ""},
		{"a fraction of iat is dropped", 5 * time.Second, map[string]any{"iat": float64(now+5) + 0.9}, ""},
		{"exp at the end of JavaScript dates", 5 * time.Second, map[string]any{"exp": 8.64e12}, ""},
		{"exp beyond JavaScript dates", 5 * time.Second, map[string]any{"exp": 8.64e12 + 1}, ReasonInvalid},
		{"exp before JavaScript dates", 5 * time.Second, map[string]any{"exp": -8.64e12 - 1}, ReasonInvalid},
		{"exp huge", 5 * time.Second, map[string]any{"exp": json.RawMessage("1e300")}, ReasonInvalid},
		{"nbf huge", 5 * time.Second, map[string]any{"nbf": json.RawMessage("1e300")}, ReasonInvalid},
		{"iat before JavaScript dates", 5 * time.Second, map[string]any{"iat": -1e300}, ReasonInvalid},
		{"exp beyond float range", 5 * time.Second, map[string]any{"exp": json.RawMessage("1e400")}, ReasonInvalid},
		{"exp negative", 5 * time.Second, map[string]any{"exp": -1}, ReasonExpired},
		{"nbf beyond skew", 5 * time.Second, map[string]any{"nbf": now + 6}, ReasonInvalid},
		{"nbf within skew", 5 * time.Second, map[string]any{"nbf": now + 4}, ""},
		{"nbf now with skew 0", 0, map[string]any{"nbf": now}, ""},
		{"nbf as a string", 5 * time.Second, map[string]any{"nbf": "now"}, ReasonInvalid},
		{"iat in the future", 5 * time.Second, map[string]any{"iat": now + 60}, ReasonInvalid},
		{"iat as a bool", 5 * time.Second, map[string]any{"iat": true}, ReasonInvalid},
		{"no nbf or iat", 5 * time.Second, map[string]any{"nbf": nil, "iat": nil}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, _ := jwtVerifier(rsaKey(private, ""), tc.skew)
			_, err := v.Verify(context.Background(), sign(t, private, m2mHeader(), with(m2mPayload(), tc.changes)))
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			requireReason(t, err, tc.want)
		})
	}
}

func TestM2MJWTMalformedClaims(t *testing.T) {
	private, _ := signingKeys(t)
	for name, changes := range map[string]map[string]any{
		"jti not a string":    {"jti": 7},
		"scopes not a string": {"scopes": []string{"a"}},
		"aud of numbers":      {"scopes": nil, "aud": []int{1}},
		"aud an object":       {"scopes": nil, "aud": map[string]any{}},
	} {
		t.Run(name, func(t *testing.T) {
			v, _ := jwtVerifier(rsaKey(private, ""), 5*time.Second)
			_, err := v.Verify(context.Background(), sign(t, private, m2mHeader(), with(m2mPayload(), changes)))
			requireReason(t, err, ReasonInvalid)
		})
	}
}

func TestM2MJWTKeySourceErrorsCarryTheType(t *testing.T) {
	private, _ := signingKeys(t)
	v := New(Options{Accept: []TokenType{M2MToken}, Keys: failingKeys{}, now: fixedClock})
	_, err := v.Verify(context.Background(), sign(t, private, m2mHeader(), m2mPayload()))
	verr := requireReason(t, err, ReasonUnavailable)
	assert.Equal(t, M2MToken, verr.TokenType)
}

type failingKeys struct{}

func (failingKeys) key(context.Context, string) (*signingKey, error) {
	return nil, &Error{Reason: ReasonUnavailable, Description: "keys are down"}
}
func (failingKeys) current(*signingKey) bool { return false }
func (failingKeys) scope() string            { return "failing" }

func splitJWT(token string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(token); i++ {
		if token[i] == '.' {
			parts = append(parts, token[start:i])
			start = i + 1
		}
	}
	return append(parts, token[start:])
}

// fakeBackend answers opaque verifications with fixed answers or an error,
// counting calls. With block, a call ends only when its context does, and
// budget is how long it had until its deadline.
type fakeBackend struct {
	answer *backend.M2MToken
	apiKey *backend.APIKey
	oauth  *backend.OAuthAccessToken
	err    error
	block  bool
	budget time.Duration
	calls  int
}

func (f *fakeBackend) VerifyM2MToken(ctx context.Context, _ string) (*backend.M2MToken, error) {
	return answerWith(f, ctx, f.answer)
}

func (f *fakeBackend) VerifyAPIKey(ctx context.Context, _ string) (*backend.APIKey, error) {
	return answerWith(f, ctx, f.apiKey)
}

func (f *fakeBackend) VerifyOAuthToken(ctx context.Context, _ string) (*backend.OAuthAccessToken, error) {
	return answerWith(f, ctx, f.oauth)
}

func answerWith[T any](f *fakeBackend, ctx context.Context, answer *T) (*T, error) {
	f.calls++
	if f.block {
		deadline, ok := ctx.Deadline()
		if !ok {
			return nil, errors.New("fakeBackend: a call without a deadline would block forever")
		}
		f.budget = time.Until(deadline)
		<-ctx.Done()
		return nil, &backend.Error{Err: ctx.Err()}
	}
	if f.err != nil {
		return nil, f.err
	}
	return answer, nil
}

func m2mAnswer(changes func(*backend.M2MToken)) *backend.M2MToken {
	expiration := testNow.Add(time.Hour).UnixMilli()
	answer := &backend.M2MToken{
		Object: "machine_to_machine_token", ID: "mt_1", Subject: "mch_caller",
		Scopes: []string{"mch_gateway"}, Claims: json.RawMessage(`{"foo":"bar"}`),
		Expiration: &expiration,
	}
	if changes != nil {
		changes(answer)
	}
	return answer
}

func opaqueVerifier(b Backend) *Verifier {
	return New(Options{Accept: []TokenType{M2MToken}, Backend: b, ClockSkew: 5 * time.Second, now: fixedClock, Timeout: 100 * time.Millisecond})
}

func TestOpaqueM2MValid(t *testing.T) {
	id, err := opaqueVerifier(&fakeBackend{answer: m2mAnswer(nil)}).Verify(context.Background(), "mt_abc")
	require.NoError(t, err)
	assert.Equal(t, "mch_caller", id.Subject)
	assert.Equal(t, M2MToken, id.TokenType)
	assert.Equal(t, Opaque, id.Format)
	assert.Equal(t, "mt_1", id.TokenID)
	assert.Equal(t, []string{"mch_gateway"}, id.Scopes)
	assert.Equal(t, map[string]any{"foo": "bar"}, id.Claims())
	assert.Equal(t, `{"foo":"bar"}`, id.ClaimsJSON())
	assert.Equal(t, testNow.Add(time.Hour), id.ExpiresAt.UTC())
}

func TestOpaqueM2MAnswerMapping(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*backend.M2MToken)
		want   Reason
		check  func(*testing.T, *Identity)
	}{
		{"revoked", func(a *backend.M2MToken) { a.Revoked = true }, ReasonInvalid, nil},
		{"expired flag", func(a *backend.M2MToken) { a.Expired = true }, ReasonExpired, nil},
		{"expiration passed", func(a *backend.M2MToken) { e := testNow.Add(-time.Minute).UnixMilli(); a.Expiration = &e }, ReasonExpired, nil},
		{"expiration within skew", func(a *backend.M2MToken) { e := testNow.Add(-time.Second).UnixMilli(); a.Expiration = &e }, "", nil},
		{"expiration in seconds", func(a *backend.M2MToken) { e := testNow.Add(time.Hour).Unix(); a.Expiration = &e }, "", func(t *testing.T, id *Identity) {
			assert.Equal(t, testNow.Add(time.Hour), id.ExpiresAt.UTC())
		}},
		{"never expires", func(a *backend.M2MToken) { a.Expiration = nil }, "", func(t *testing.T, id *Identity) {
			assert.True(t, id.ExpiresAt.IsZero())
		}},
		{"null claims", func(a *backend.M2MToken) { a.Claims = json.RawMessage("null") }, "", func(t *testing.T, id *Identity) {
			assert.Nil(t, id.Claims())
			assert.Equal(t, "{}", id.ClaimsJSON())
		}},
		{"no claims", func(a *backend.M2MToken) { a.Claims = nil }, "", func(t *testing.T, id *Identity) {
			assert.Nil(t, id.Claims())
			assert.Equal(t, "{}", id.ClaimsJSON())
		}},
		{"null scopes", func(a *backend.M2MToken) { a.Scopes = nil }, "", func(t *testing.T, id *Identity) {
			assert.Equal(t, []string{}, id.Scopes)
		}},
		{"claims not an object", func(a *backend.M2MToken) { a.Claims = json.RawMessage(`"text"`) }, ReasonUnavailable, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := opaqueVerifier(&fakeBackend{answer: m2mAnswer(tc.change)}).Verify(context.Background(), "mt_abc")
			if tc.want != "" {
				requireReason(t, err, tc.want)
				return
			}
			require.NoError(t, err)
			if tc.check != nil {
				tc.check(t, id)
			}
		})
	}
}

func TestOpaqueM2MClerkFailures(t *testing.T) {
	for _, tc := range []struct {
		err        error
		want       Reason
		retryAfter time.Duration
	}{
		{&backend.Error{Status: 404, Code: "resource_not_found"}, ReasonInvalid, 0},
		{&backend.Error{Status: 400, Code: "form_param_format_invalid"}, ReasonInvalid, 0},
		{&backend.Error{Status: 401, Code: "clerk_key_invalid"}, ReasonMisconfigured, 0},
		{&backend.Error{Status: 429, RetryAfter: 7 * time.Second}, ReasonRateLimited, 7 * time.Second},
		{&backend.Error{Status: 503, RetryAfter: 3 * time.Second}, ReasonUnavailable, 3 * time.Second},
		{&backend.Error{Err: errors.New("connection refused")}, ReasonUnavailable, 0},
		{errors.New("not even a backend error"), ReasonUnavailable, 0},
	} {
		_, err := opaqueVerifier(&fakeBackend{err: tc.err}).Verify(context.Background(), "mt_abc")
		verr := requireReason(t, err, tc.want)
		assert.Equal(t, M2MToken, verr.TokenType)
		assert.Equal(t, tc.retryAfter, verr.RetryAfter)
		assert.ErrorIs(t, err, tc.err)
	}
}

func TestOpaqueM2MRespectsTimeout(t *testing.T) {
	b := &fakeBackend{block: true}
	_, err := opaqueVerifier(b).Verify(context.Background(), "mt_abc")
	requireReason(t, err, ReasonUnavailable)
	assert.Positive(t, b.budget)
	assert.LessOrEqual(t, b.budget, 100*time.Millisecond, "the call to Clerk is bounded by Options.Timeout")
}

func TestTypesNotAcceptedMakeNoCall(t *testing.T) {
	private, _ := signingKeys(t)
	b := &fakeBackend{answer: m2mAnswer(nil)}
	keys := &countingKeys{signing: rsaKey(private, "")}
	v := New(Options{Accept: []TokenType{M2MToken}, Backend: b, Keys: keys, now: fixedClock})
	for _, token := range []string{
		"ak_LCWGdaM8mv8K4PC/57IICZQXAeWfCgF30DZaFXHoGn9=",
		"oat_8XOIucKvqHVr5tYP123456789abcdefghij",
		sign(t, private, map[string]any{"alg": "RS256", "typ": "at+jwt"}, map[string]any{"sub": "user_1"}),
		sign(t, private, map[string]any{"alg": "RS256", "typ": "JWT"}, map[string]any{"sub": "user_1", "sid": "sess_1"}),
	} {
		_, err := v.Verify(context.Background(), token)
		requireReason(t, err, ReasonTypeNotAccepted)
	}
	assert.Zero(t, b.calls)
	assert.Zero(t, keys.calls.Load())
}

func TestFormatsWithoutAVerifierAreNotAccepted(t *testing.T) {
	private, _ := signingKeys(t)
	jwtOnly := New(Options{Accept: []TokenType{M2MToken}, Keys: &countingKeys{signing: rsaKey(private, "")}, now: fixedClock})
	_, err := jwtOnly.Verify(context.Background(), "mt_abc")
	requireReason(t, err, ReasonTypeNotAccepted)

	opaqueOnly := New(Options{Accept: []TokenType{M2MToken}, Backend: &fakeBackend{answer: m2mAnswer(nil)}, now: fixedClock})
	_, err = opaqueOnly.Verify(context.Background(), sign(t, private, m2mHeader(), m2mPayload()))
	requireReason(t, err, ReasonTypeNotAccepted)
}
