package verify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// jwtVerifier is a Verifier of M2M tokens whose JWT keys are keys.
func jwtVerifier(t *testing.T, keys keySource, skew time.Duration) *Verifier {
	return newVerifier(t, Options{keys: keys, ClockSkew: &skew})
}

// TestM2MJWTMapping: an M2M JWT maps as Clerk's M2MToken maps it, whatever
// its category (none before Clerk's rollout) or typ: its scopes from
// "scopes", else "aud"; its claims, the payload but for iss, sub, exp, nbf,
// iat and jti (aud and scopes stay).
func TestM2MJWTMapping(t *testing.T) {
	private, _ := signingKeys(t)
	v := jwtVerifier(t, keysFor(private, ""), 5*time.Second)
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
			assert.JSONEq(t, `{"aud":["mch_1xxxxx","mch_2xxxxx"],"scopes":"mch_1xxxxx mch_2xxxxx","role":"service","tier":{"level":2}}`, id.ClaimsJSON())
			assert.Equal(t, "service", id.Claims()["role"])
		})
	}
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

// TestM2MJWTHeaderRulesNeedNoKey: the category, then the rest of the
// header, are checked before any key is looked up (and a header that
// names a key, or extensions, see TestWhatJWXAcceptsIsRefusedHere).
func TestM2MJWTHeaderRulesNeedNoKey(t *testing.T) {
	private, _ := signingKeys(t)
	for name, changes := range map[string]map[string]any{
		"session category":  {"cat": categorySession},
		"template category": {"cat": categoryJWTTemplate},
		"ignore category":   {"cat": categoryIgnore},
		"unknown category":  {"cat": "cl_some_future_unknown_cat"},
		"empty category":    {"cat": ""},
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
	} {
		t.Run(name, func(t *testing.T) {
			keys := keysFor(private, "")
			_, err := jwtVerifier(t, keys, 5*time.Second).Verify(context.Background(), sign(t, private, with(m2mHeader(), changes), m2mPayload()))
			assert.Equal(t, M2MToken, requireReason(t, err, ReasonInvalid).TokenType)
			assert.Zero(t, keys.calls.Load(), "no key may be looked up")
		})
	}
}

// TestM2MJWTSignature: only a signature by the key, with the algorithm it
// allows, verifies; HMAC keyed with the public key never does.
func TestM2MJWTSignature(t *testing.T) {
	private, other := signingKeys(t)
	good := sign(t, private, m2mHeader(), m2mPayload())
	tamperedPayload, _ := json.Marshal(with(m2mPayload(), map[string]any{"sub": "mch_attacker"}))
	parts := strings.Split(good, ".")
	header, _ := json.Marshal(with(m2mHeader(), map[string]any{"alg": "HS256"}))
	hmacSigned := base64.RawURLEncoding.EncodeToString(header) + "." + parts[1]
	mac := hmac.New(sha256.New, []byte(publicPEM(t, private)))
	mac.Write([]byte(hmacSigned))
	rs384 := sign(t, private, with(m2mHeader(), map[string]any{"alg": "RS384"}), m2mPayload())
	for name, tc := range map[string]struct {
		token, keyAlg string
		ok            bool
	}{
		"signed by another key": {sign(t, other, m2mHeader(), m2mPayload()), "RS256", false},
		"tampered payload":      {parts[0] + "." + base64.RawURLEncoding.EncodeToString(tamperedPayload) + "." + parts[2], "RS256", false},
		"signature of another token": {parts[0] + "." + parts[1] + "." +
			strings.Split(sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"jti": "x"})), ".")[2], "RS256", false},
		"truncated signature":             {parts[0] + "." + parts[1] + "." + parts[2][:40], "RS256", false},
		"HMAC with the public key":        {hmacSigned + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), "", false},
		"RS384 for an RS256 key":          {rs384, "RS256", false},
		"RS384 for a key naming none":     {rs384, "", true},
		"RS512 for an RS512 key":          {sign(t, private, with(m2mHeader(), map[string]any{"alg": "RS512"}), m2mPayload()), "RS512", true},
		"the same token, signed properly": {good, "RS256", true},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := jwtVerifier(t, keysFor(private, tc.keyAlg), 5*time.Second).Verify(context.Background(), tc.token)
			if tc.ok {
				assert.NoError(t, err)
				return
			}
			requireReason(t, err, ReasonInvalid)
		})
	}
}

func TestM2MJWTTimesAndClaims(t *testing.T) {
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
		{"jti not a string", 5 * time.Second, map[string]any{"jti": 7}, ReasonInvalid},
		{"scopes not a string", 5 * time.Second, map[string]any{"scopes": []string{"a"}}, ReasonInvalid},
		{"aud of numbers", 5 * time.Second, map[string]any{"scopes": nil, "aud": []int{1}}, ReasonInvalid},
		{"aud an object", 5 * time.Second, map[string]any{"scopes": nil, "aud": map[string]any{}}, ReasonInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := jwtVerifier(t, keysFor(private, ""), tc.skew)
			_, err := v.Verify(context.Background(), sign(t, private, m2mHeader(), with(m2mPayload(), tc.changes)))
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			requireReason(t, err, tc.want)
		})
	}
}

func TestM2MJWTKeySourceErrorsCarryTheType(t *testing.T) {
	private, _ := signingKeys(t)
	_, err := jwtVerifier(t, failingKeys{}, 0).Verify(context.Background(), sign(t, private, m2mHeader(), m2mPayload()))
	verr := requireReason(t, err, ReasonUnavailable)
	assert.Equal(t, M2MToken, verr.TokenType)
	assert.Equal(t, JWT, verr.Format)
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

func TestOpaqueM2MAnswerMapping(t *testing.T) {
	inAnHour := strconv.FormatInt(testNow.Add(time.Hour).Unix(), 10)
	for _, tc := range []struct {
		name   string
		change func(*backend.M2MToken)
		want   Reason
		fields map[string]string // by Field's names
	}{
		{"as Clerk answers", nil, "", map[string]string{"id": "mch_caller", "token_type": "m2m_token", "token_format": "opaque",
			"token_id": "mt_1", "scopes": "mch_gateway", "expires_at": inAnHour, "claims": `{"foo":"bar"}`}},
		{"revoked", func(a *backend.M2MToken) { a.Revoked = true }, ReasonInvalid, nil},
		{"expired flag", func(a *backend.M2MToken) { a.Expired = true }, ReasonExpired, nil},
		{"expiration passed", func(a *backend.M2MToken) { e := testNow.Add(-time.Minute).UnixMilli(); a.Expiration = &e }, ReasonExpired, nil},
		{"expiration within skew", func(a *backend.M2MToken) { e := testNow.Add(-time.Second).UnixMilli(); a.Expiration = &e }, "", nil},
		{"expiration in seconds", func(a *backend.M2MToken) { e := testNow.Add(time.Hour).Unix(); a.Expiration = &e }, "", map[string]string{"expires_at": inAnHour}},
		{"never expires", func(a *backend.M2MToken) { a.Expiration = nil }, "", map[string]string{"expires_at": ""}},
		{"null claims", func(a *backend.M2MToken) { a.Claims = json.RawMessage("null") }, "", map[string]string{"claims": "{}"}},
		{"no claims", func(a *backend.M2MToken) { a.Claims = nil }, "", map[string]string{"claims": "{}"}},
		{"null scopes", func(a *backend.M2MToken) { a.Scopes = nil }, "", map[string]string{"scopes": ""}},
		{"claims not an object", func(a *backend.M2MToken) { a.Claims = json.RawMessage(`"text"`) }, ReasonUnavailable, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := opaqueVerifier(t, &fakeClerk{m2m: m2mAnswer(tc.change)}, time.Minute, PoolOptions{}).Verify(context.Background(), "mt_abc")
			if tc.want != "" {
				requireReason(t, err, tc.want)
				return
			}
			require.NoError(t, err)
			assert.NotNil(t, id.Scopes, "no scopes are an empty list")
			assert.Equal(t, id.ClaimsJSON() == "{}", id.Claims() == nil)
			for name, want := range tc.fields {
				got, _ := id.Field(name)
				assert.Equal(t, want, got, name)
			}
		})
	}
}

// TestClerkFailures: what a failed call to Clerk means for a credential
// of any opaque type: invalid when Clerk does not know it or finds it
// malformed, a misconfiguration when Clerk rejects our key, Clerk's
// trouble (with its Retry-After) otherwise.
func TestClerkFailures(t *testing.T) {
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
		for tokenType, token := range map[TokenType]string{M2MToken: "mt_abc", APIKey: "ak_abc", OAuthToken: "oat_abc"} {
			v := newVerifier(t, allTypes(&fakeClerk{err: tc.err}, nil)) // a 429 pauses the Pool's calls
			_, err := v.Verify(context.Background(), token)
			verr := requireReason(t, err, tc.want)
			assert.Equal(t, tokenType, verr.TokenType)
			assert.Equal(t, Opaque, verr.Format)
			assert.Equal(t, tc.retryAfter, verr.RetryAfter)
			assert.ErrorIs(t, err, tc.err)
		}
	}
}

func TestOpaqueM2MRespectsTimeout(t *testing.T) {
	clerk := &fakeClerk{gate: make(chan struct{})} // never opened
	_, err := opaqueVerifier(t, clerk, time.Minute, PoolOptions{Timeout: new(100 * time.Millisecond)}).Verify(context.Background(), "mt_abc")
	requireReason(t, err, ReasonUnavailable)
	assert.Positive(t, clerk.budget.Load())
	assert.LessOrEqual(t, time.Duration(clerk.budget.Load()), 100*time.Millisecond, "the call to Clerk is bounded by the Pool's timeout")
}

// TestWhatIsNotAcceptedMakesNoCall: a credential of a type not accepted,
// or of a format that no key given verifies, is refused before any key is
// looked up or Clerk is asked.
func TestWhatIsNotAcceptedMakesNoCall(t *testing.T) {
	private, _ := signingKeys(t)
	clerk, keys := &fakeClerk{}, keysFor(private, "")
	m2mJWT := sign(t, private, m2mHeader(), m2mPayload())
	oauthJWT := sign(t, private, map[string]any{"alg": "RS256", "typ": "at+jwt"}, map[string]any{"sub": "user_1"})
	session := sign(t, private, map[string]any{"alg": "RS256", "typ": "JWT"}, map[string]any{"sub": "user_1", "sid": "sess_1"})
	for name, tc := range map[string]struct {
		opts   Options
		tokens []string
	}{
		"M2M tokens only": {Options{SecretKey: testSecretKey, clerk: clerk, keys: keys},
			[]string{"ak_LCWGdaM8mv8K4PC/57IICZQXAeWfCgF30DZaFXHoGn9=", "oat_8XOIucKvqHVr5tYP123456789abcdefghij", oauthJWT, session}},
		"session tokens only":          {Options{Accept: []TokenType{SessionToken}, keys: keys}, []string{m2mJWT, oauthJWT, "mt_0123456789abcdef"}},
		"M2M tokens, JWT keys only":    {Options{keys: keys}, []string{"mt_abc"}},
		"M2M tokens, machine key only": {Options{MachineSecretKey: testMachineKey, clerk: clerk}, []string{m2mJWT}},
	} {
		v := newVerifier(t, tc.opts)
		for _, token := range tc.tokens {
			_, err := v.Verify(context.Background(), token)
			requireReason(t, err, ReasonTypeNotAccepted)
		}
		assert.Zero(t, clerk.calls.Load(), name)
		assert.Zero(t, keys.calls.Load(), name)
	}
}
