package backendtest_test

import (
	"crypto"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

const (
	apiKeyRoute = "/api_keys/verify"
	oauthRoute  = "/oauth_applications/access_tokens/verify"
)

// userID and orgID look like Clerk's ids.
const (
	userID = "user_2vYVtestTESTtestTESTtestTESTtest"
	orgID  = "org_2vYVtestTESTtestTESTtestTESTtest"
)

// bodyOf is a JSON object with one string field.
func bodyOf(field, value string) string {
	b, _ := json.Marshal(map[string]string{field: value})
	return string(b)
}

// post sends body to path with the instance secret key.
func post(t *testing.T, s *backendtest.Server, path, body string) response {
	t.Helper()
	return do(t, http.MethodPost, s.URL+path, bearer(s.SecretKey()), body)
}

func verifyAPIKey(t *testing.T, s *backendtest.Server, secret string) map[string]any {
	t.Helper()
	return m2mObject(t, post(t, s, apiKeyRoute, bodyOf("secret", secret)))
}

func verifyOAuth(t *testing.T, s *backendtest.Server, token string) map[string]any {
	t.Helper()
	return m2mObject(t, post(t, s, oauthRoute, bodyOf("access_token", token)))
}

func TestVerifyAPIKey(t *testing.T) {
	s := newServer(t)
	s.SetClock(func() time.Time { return fixedNow })
	secret, id := s.CreateAPIKey(userID, backendtest.APIKeyOptions{
		Name:   "ci",
		Scopes: []string{"read:foo", "write:bar"},
		Claims: map[string]any{"foo": "bar"},
		TTL:    time.Hour,
	})
	assert.Equal(t, map[string]any{
		"object":            "api_key",
		"id":                id,
		"type":              "api_key",
		"subject":           userID,
		"name":              "ci",
		"description":       nil,
		"claims":            map[string]any{"foo": "bar"},
		"scopes":            []any{"read:foo", "write:bar"},
		"revoked":           false,
		"revocation_reason": nil,
		"expired":           false,
		"expiration":        ms(fixedNow.Add(time.Hour)),
		"created_by":        nil,
		"last_used_at":      ms(fixedNow),
		"created_at":        ms(fixedNow),
		"updated_at":        ms(fixedNow),
	}, verifyAPIKey(t, s, secret), "no secret field in verify answers")

	secret, _ = s.CreateAPIKey(orgID, backendtest.APIKeyOptions{})
	res := post(t, s, apiKeyRoute, bodyOf("secret", secret))
	obj := m2mObject(t, res)
	assert.Equal(t, "test-api-key", obj["name"])
	assert.Equal(t, orgID, obj["subject"])
	assert.Nil(t, obj["expiration"], "API keys never expire by default")
	assert.Equal(t, false, obj["expired"])
	for _, raw := range []string{`"scopes":[]`, `"claims":null`, `"description":null`, `"created_by":null`} {
		assert.Contains(t, string(res.body), raw)
	}
	assert.True(t, strings.HasPrefix(string(res.body), `{"object":"api_key"`))
}

func TestAPIKeyLifecycle(t *testing.T) {
	s := newServer(t)
	at := func(d time.Duration) { s.SetClock(func() time.Time { return fixedNow.Add(d) }) }
	at(0)
	secret, id := s.CreateAPIKey(userID, backendtest.APIKeyOptions{TTL: 2 * time.Minute})
	assert.Equal(t, ms(fixedNow), verifyAPIKey(t, s, secret)["last_used_at"])
	at(time.Minute)
	s.RevokeAPIKey(id)
	obj := verifyAPIKey(t, s, secret)
	assert.Equal(t, true, obj["revoked"])
	assert.Equal(t, backendtest.RevocationReason, obj["revocation_reason"])
	assert.Equal(t, false, obj["expired"])
	assert.Equal(t, ms(fixedNow.Add(time.Minute)), obj["last_used_at"], "updated on each verify")
	assert.Equal(t, ms(fixedNow.Add(time.Minute)), obj["updated_at"], "revocation updates the key")
	assert.Equal(t, ms(fixedNow), obj["created_at"])

	at(2 * time.Minute)
	obj = verifyAPIKey(t, s, secret)
	assert.Equal(t, true, obj["expired"], "expired when expiration <= now")
	assert.Equal(t, true, obj["revoked"])

	expired, _ := s.CreateAPIKey(userID, backendtest.APIKeyOptions{TTL: -time.Second})
	obj = verifyAPIKey(t, s, expired)
	assert.Equal(t, true, obj["expired"])
	assert.Equal(t, false, obj["revoked"])
	assert.Equal(t, ms(fixedNow.Add(2*time.Minute-time.Second)), obj["expiration"])
}

func TestVerifyOAuthToken(t *testing.T) {
	s := newServer(t)
	s.SetClock(func() time.Time { return fixedNow })
	token, id := s.CreateOAuthToken(userID, backendtest.OAuthOptions{Scopes: []string{"profile", "email"}})
	want := map[string]any{
		"object":            "clerk_idp_oauth_access_token",
		"id":                id,
		"type":              "oauth:access_token",
		"client_id":         s.OAuthClientID(),
		"subject":           userID,
		"scopes":            []any{"profile", "email"},
		"revoked":           false,
		"revocation_reason": nil,
		"expired":           false,
		"expiration":        ms(fixedNow.Add(time.Hour)),
		"created_at":        ms(fixedNow),
		"updated_at":        ms(fixedNow),
	}
	assert.Equal(t, want, verifyOAuth(t, s, token))
	assert.Equal(t, want, m2mObject(t, post(t, s, "/v1"+oauthRoute, bodyOf("secret", token))), "the deprecated field name")

	other, _ := s.CreateOAuthToken(userID, backendtest.OAuthOptions{ClientID: "client_other"})
	res := post(t, s, oauthRoute, bodyOf("access_token", other))
	assert.Equal(t, "client_other", m2mObject(t, res)["client_id"])
	assert.Contains(t, string(res.body), `"scopes":[]`)
	assert.True(t, strings.HasPrefix(string(res.body), `{"object":"clerk_idp_oauth_access_token"`))
	assert.NotContains(t, string(res.body), `"aud"`)
	assert.NotContains(t, string(res.body), `"act"`)

	exchanged, _ := s.CreateOAuthToken(userID, backendtest.OAuthOptions{
		Audience: []string{"https://api.example.com"},
		Actor:    &backendtest.Actor{Subject: "user_agent", Actor: &backendtest.Actor{Issuer: "https://idp.example.com", Subject: "svc"}},
	})
	obj := verifyOAuth(t, s, exchanged)
	assert.Equal(t, []any{"https://api.example.com"}, obj["aud"])
	assert.Equal(t, map[string]any{"sub": "user_agent", "act": map[string]any{"iss": "https://idp.example.com", "sub": "svc"}}, obj["act"])
}

func TestOAuthTokenLifecycle(t *testing.T) {
	s := newServer(t)
	s.SetClock(func() time.Time { return fixedNow })
	token, id := s.CreateOAuthToken(userID, backendtest.OAuthOptions{TTL: time.Second})
	s.RevokeOAuthToken(id)
	obj := verifyOAuth(t, s, token)
	assert.Equal(t, true, obj["revoked"])
	assert.Equal(t, backendtest.RevocationReason, obj["revocation_reason"])

	inactive := func(t *testing.T, token string) {
		t.Helper()
		res := post(t, s, oauthRoute, bodyOf("access_token", token))
		require.Equal(t, http.StatusOK, res.status)
		assert.Equal(t, []string{"application/json"}, res.header.Values("Content-Type"))
		assert.Equal(t, `{"active":false}`, string(res.body))
	}
	expired, _ := s.CreateOAuthToken(userID, backendtest.OAuthOptions{TTL: -time.Minute})
	inactive(t, expired)
	live, _ := s.CreateOAuthToken(userID, backendtest.OAuthOptions{TTL: time.Second})
	assert.Equal(t, false, verifyOAuth(t, s, live)["expired"])
	s.SetClock(func() time.Time { return fixedNow.Add(time.Second) })
	inactive(t, live)
	inactive(t, token) // revoked and expired
}

func TestCredentialsOfAnotherKindAreUnknown(t *testing.T) {
	s := newServer(t)
	m := s.NewMachine("m")
	m2m, _ := s.CreateM2MToken(m, backendtest.TokenOptions{Scopes: []string{m.ID}})
	apiKey, _ := s.CreateAPIKey(m.ID, backendtest.APIKeyOptions{})
	oauth, _ := s.CreateOAuthToken(userID, backendtest.OAuthOptions{})
	for _, tc := range []struct{ route, body string }{
		{"/m2m_tokens/verify", verifyBody(apiKey)},
		{"/m2m_tokens/verify", verifyBody(oauth)},
		{apiKeyRoute, bodyOf("secret", m2m)},
		{apiKeyRoute, bodyOf("secret", oauth)},
		{apiKeyRoute, bodyOf("secret", m.SecretKey)},
		{apiKeyRoute, bodyOf("secret", "ak_"+strings.Repeat("A", 40))},
		{oauthRoute, bodyOf("access_token", apiKey)},
		{oauthRoute, bodyOf("access_token", "oat_"+strings.Repeat("0", 32))},
	} {
		t.Run(tc.route+" "+tc.body, func(t *testing.T) {
			requireClerkError(t, post(t, s, tc.route, tc.body), http.StatusNotFound, "resource_not_found")
		})
	}
	requireClerkError(t, verify(t, s, m.SecretKey, apiKey), http.StatusNotFound, "resource_not_found")
}

func TestHelpersPanicOnUnknownIDsAndOtherKinds(t *testing.T) {
	s := newServer(t)
	m := s.NewMachine("m")
	assert.Panics(t, func() { s.GrantScopes(&backendtest.Machine{ID: "mch_unknown"}, "mch_x") })
	_, m2m := s.CreateM2MToken(m, backendtest.TokenOptions{})
	_, apiKey := s.CreateAPIKey(userID, backendtest.APIKeyOptions{})
	_, oauth := s.CreateOAuthToken(userID, backendtest.OAuthOptions{})
	for _, tc := range []struct {
		name   string
		revoke func(string)
		own    string
	}{
		{"RevokeM2MToken", s.RevokeM2MToken, m2m},
		{"RevokeAPIKey", s.RevokeAPIKey, apiKey},
		{"RevokeOAuthToken", s.RevokeOAuthToken, oauth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Panics(t, func() { tc.revoke("ak_unknown") })
			for _, id := range []string{m2m, apiKey, oauth} {
				if id == tc.own {
					assert.NotPanics(t, func() { tc.revoke(id) })
				} else {
					assert.Panics(t, func() { tc.revoke(id) }, "an id of another kind")
				}
			}
		})
	}
}

// seconds is t as a JWT NumericDate, decoded with UseNumber.
func seconds(t time.Time) json.Number { return json.Number(fmt.Sprint(t.Unix())) }

// with is a copy of claims with more's set over them.
func with(claims, more map[string]any) map[string]any {
	out := maps.Clone(claims)
	maps.Copy(out, more)
	return out
}

// requireValid parses token with jwx against the fake's JWKS, checking the
// signature, the kid and the time claims at fixedNow.
func requireValid(t *testing.T, s *backendtest.Server, token string) {
	t.Helper()
	_, err := jwt.Parse([]byte(token), jwt.WithKeySet(fetchJWKS(t, s)), jwt.WithClock(jwt.ClockFunc(func() time.Time { return fixedNow })))
	require.NoError(t, err)
}

func TestCategoryAndIssuerConstants(t *testing.T) {
	assert.Equal(t, "https://clerk.fake.example.test", backendtest.Issuer)
	assert.Equal(t, "cl_B7d4PD111AAA", backendtest.SessionCategory)
	assert.Equal(t, "cl_B7d4PD222AAA", backendtest.JWTTemplateCategory)
	assert.Equal(t, "cl_B7d4PD333AAA", backendtest.M2MCategory)
	assert.Equal(t, "cl_I7d4PD111III", backendtest.IgnoreCategory)
}

func TestMintOAuthJWTOptions(t *testing.T) {
	s := newServer(t)
	s.SetClock(func() time.Time { return fixedNow })
	t.Run("scp", func(t *testing.T) {
		token := s.MintOAuthJWT(userID, backendtest.OAuthJWTOptions{
			OAuthOptions: backendtest.OAuthOptions{ClientID: "client_other", Scopes: []string{"a", "b"}, TTL: time.Minute},
			UseScp:       true,
		})
		requireValid(t, s, token)
		_, payload := segments(t, token)
		assert.Equal(t, []any{"a", "b"}, payload["scp"])
		assert.NotContains(t, payload, "scope")
		assert.Equal(t, "client_other", payload["client_id"])
		assert.Equal(t, seconds(fixedNow.Add(time.Minute)), payload["exp"])
	})
	t.Run("no scopes", func(t *testing.T) {
		_, payload := segments(t, s.MintOAuthJWT(userID, backendtest.OAuthJWTOptions{}))
		assert.Equal(t, "", payload["scope"])
		_, payload = segments(t, s.MintOAuthJWT(userID, backendtest.OAuthJWTOptions{UseScp: true}))
		assert.Equal(t, []any{}, payload["scp"])
	})
	t.Run("audience and actor", func(t *testing.T) {
		_, payload := segments(t, s.MintOAuthJWT(userID, backendtest.OAuthJWTOptions{OAuthOptions: backendtest.OAuthOptions{
			Audience: []string{"https://a.example.com", "https://b.example.com"},
			Actor:    &backendtest.Actor{Subject: "user_agent"},
		}}))
		assert.Equal(t, []any{"https://a.example.com", "https://b.example.com"}, payload["aud"])
		assert.Equal(t, map[string]any{"sub": "user_agent"}, payload["act"])
	})
	t.Run("expired", func(t *testing.T) {
		_, payload := segments(t, s.MintOAuthJWT(userID, backendtest.OAuthJWTOptions{OAuthOptions: backendtest.OAuthOptions{TTL: -time.Minute}}))
		assert.Equal(t, seconds(fixedNow.Add(-time.Minute)), payload["exp"])
	})
	t.Run("overrides", func(t *testing.T) {
		token := s.MintOAuthJWT(userID, backendtest.OAuthJWTOptions{
			Header:  map[string]any{"typ": "application/at+jwt", "kid": nil},
			Payload: map[string]any{"sub": nil, "aud": "https://api.example.com"},
		})
		header, payload := segments(t, token)
		assert.Equal(t, map[string]any{"alg": "RS256", "typ": "application/at+jwt"}, header)
		assert.NotContains(t, payload, "sub")
		assert.Equal(t, "https://api.example.com", payload["aud"])
		assert.True(t, verifyPKCS1(t, s, token, crypto.SHA256))
	})
}

func TestMintSessionJWTClaims(t *testing.T) {
	s := newServer(t)
	s.SetClock(func() time.Time { return fixedNow })
	common := map[string]any{
		"sub": userID,
		"sid": "sess_123",
		"iss": backendtest.Issuer,
		"iat": seconds(fixedNow),
		"nbf": seconds(fixedNow),
		"exp": seconds(fixedNow.Add(5 * time.Minute)),
		"fva": []any{json.Number("0"), json.Number("-1")},
		"azp": "https://app.example.com",
		"sts": "pending",
	}
	for _, tc := range []struct {
		version int
		claims  map[string]any
	}{
		{2, map[string]any{"v": json.Number("2"), "o": map[string]any{"id": orgID, "rol": "admin", "slg": "acme"}}},
		{1, map[string]any{"org_id": orgID, "org_role": "org:admin", "org_slug": "acme"}},
	} {
		t.Run(fmt.Sprint("version ", tc.version), func(t *testing.T) {
			token := s.MintSessionJWT(userID, backendtest.SessionOptions{
				SessionID:       "sess_123",
				TTL:             5 * time.Minute,
				Version:         tc.version,
				OrgID:           orgID,
				AuthorizedParty: "https://app.example.com",
				Status:          "pending",
			})
			requireValid(t, s, token)
			_, payload := segments(t, token)
			assert.Equal(t, with(common, tc.claims), payload)
		})
	}
	_, payload := segments(t, s.MintSessionJWT(userID, backendtest.SessionOptions{Version: 1}))
	assert.NotContains(t, payload, "v")
	assert.NotContains(t, payload, "org_id")
	assert.Panics(t, func() { s.MintSessionJWT(userID, backendtest.SessionOptions{Version: 3}) })
}

func TestMintSessionJWTOptions(t *testing.T) {
	s := newServer(t)
	s.SetClock(func() time.Time { return fixedNow })
	t.Run("category", func(t *testing.T) {
		header, _ := segments(t, s.MintSessionJWT(userID, backendtest.SessionOptions{Category: backendtest.IgnoreCategory}))
		assert.Equal(t, backendtest.IgnoreCategory, header["cat"])
		token := s.MintSessionJWT(userID, backendtest.SessionOptions{OmitCategory: true})
		header, _ = segments(t, token)
		assert.NotContains(t, header, "cat")
		requireValid(t, s, token)
	})
	t.Run("expired", func(t *testing.T) {
		_, payload := segments(t, s.MintSessionJWT(userID, backendtest.SessionOptions{TTL: -time.Second}))
		assert.Equal(t, seconds(fixedNow.Add(-time.Second)), payload["exp"])
	})
	t.Run("overrides", func(t *testing.T) {
		token := s.MintSessionJWT(userID, backendtest.SessionOptions{
			Header:  map[string]any{"cat": backendtest.M2MCategory, "alg": "RS384"},
			Payload: map[string]any{"sid": nil, "act": map[string]any{"sub": "user_admin"}},
		})
		assert.True(t, verifyPKCS1(t, s, token, crypto.SHA384), "the JWKS says RS256, so only by hand")
		header, payload := segments(t, token)
		assert.Equal(t, map[string]any{"alg": "RS384", "typ": "JWT", "kid": s.KeyID(), "cat": backendtest.M2MCategory}, header)
		assert.NotContains(t, payload, "sid")
		assert.Equal(t, map[string]any{"sub": "user_admin"}, payload["act"])
	})
}

// TestEveryMintedJWTFollowsKeyRotation: each kind of JWT the fake mints is
// signed with the current key, after a rotation too, with the header and
// the claims Clerk gives it. Custom or template claims cannot override the
// registered ones.
func TestEveryMintedJWTFollowsKeyRotation(t *testing.T) {
	s := newServer(t)
	s.SetClock(func() time.Time { return fixedNow })
	sender, receiver := s.NewMachine("sender"), s.NewMachine("receiver")
	s.RotateKey(false)
	times := func(ttl time.Duration) map[string]any {
		return map[string]any{"iss": backendtest.Issuer, "iat": seconds(fixedNow), "nbf": seconds(fixedNow), "exp": seconds(fixedNow.Add(ttl))}
	}
	for _, tc := range []struct {
		name, token   string
		header        map[string]any // besides "alg" RS256 and the current "kid"
		id, idPattern string         // the claim holding a random id, if any
		claims        map[string]any // besides the id and times' claims
		ttl           time.Duration
	}{
		{"m2m", s.MintM2MJWT(sender, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{
			Scopes: []string{receiver.ID, sender.ID}, Claims: map[string]any{"role": "service", "sub": "mch_forged"}, TTL: 5 * time.Minute,
		}}), map[string]any{"typ": "JWT", "cat": "cl_B7d4PD333AAA"}, "jti", `^mt_[0-9a-f]{32}$`, map[string]any{
			"sub": sender.ID, "aud": []any{receiver.ID, sender.ID}, "scopes": receiver.ID + " " + sender.ID, "role": "service",
		}, 5 * time.Minute},
		{"oauth", s.MintOAuthJWT(userID, backendtest.OAuthJWTOptions{OAuthOptions: backendtest.OAuthOptions{Scopes: []string{"read:foo", "write:bar"}}}),
			map[string]any{"typ": "at+jwt"}, "jti", `^oat_[0-9a-f]{32}$`,
			map[string]any{"client_id": s.OAuthClientID(), "sub": userID, "scope": "read:foo write:bar"}, time.Hour},
		{"session", s.MintSessionJWT(userID, backendtest.SessionOptions{}), map[string]any{"typ": "JWT", "cat": backendtest.SessionCategory},
			"sid", `^sess_[A-Za-z0-9]{27}$`, map[string]any{"sub": userID, "v": json.Number("2"), "fva": []any{json.Number("0"), json.Number("-1")}}, time.Minute},
		{"template", s.MintTemplateJWT(userID, map[string]any{"email": "a@example.com", "sub": "user_forged", "exp": 1}),
			map[string]any{"typ": "JWT", "cat": backendtest.JWTTemplateCategory}, "", "", map[string]any{"email": "a@example.com", "sub": userID}, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Regexp(t, `^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`, tc.token)
			requireValid(t, s, tc.token)
			header, payload := segments(t, tc.token)
			assert.NotEqual(t, s.InstanceID(), header["kid"])
			assert.Equal(t, with(tc.header, map[string]any{"alg": "RS256", "kid": s.KeyID()}), header)
			if tc.id != "" {
				assert.Regexp(t, tc.idPattern, payload[tc.id])
				delete(payload, tc.id)
			}
			assert.Equal(t, with(tc.claims, times(tc.ttl)), payload)
		})
	}
	_, payload := segments(t, s.MintTemplateJWT(userID, nil))
	assert.Len(t, payload, 5)
}
