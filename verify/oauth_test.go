package verify

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

func TestOpaqueOAuthTokens(t *testing.T) {
	expiration := testNow.Add(time.Hour).UnixMilli()
	answer := func(change func(*backend.OAuthAccessToken)) *backend.OAuthAccessToken {
		a := &backend.OAuthAccessToken{Object: "clerk_idp_oauth_access_token", ID: "oat_2VTWUzvGC5UhdJCNx6xG1D98edc",
			ClientID: "client_2VTWUzvGC5UhdJCNx6xG1D98edc", Subject: "user_1", Scopes: []string{"read:foo"}, Expiration: &expiration}
		if change != nil {
			change(a)
		}
		return a
	}
	const token = "oat_8XOIucKvqHVr5tYP123456789abcdefghij"
	verify := func(answer *backend.OAuthAccessToken) (*Identity, error) {
		return newVerifier(t, allTypes(&fakeClerk{oauth: answer}, nil)).Verify(context.Background(), token)
	}
	id, err := verify(answer(nil))
	require.NoError(t, err)
	assert.Equal(t, "user_1", id.Subject)
	assert.Equal(t, OAuthToken, id.TokenType)
	assert.Equal(t, "client_2VTWUzvGC5UhdJCNx6xG1D98edc", id.ClientID)
	assert.Equal(t, []string{"read:foo"}, id.Scopes)
	assert.Empty(t, id.Actor)
	assert.Nil(t, id.Claims())

	exchanged := answer(func(a *backend.OAuthAccessToken) {
		a.Actor = json.RawMessage(`{"sub":"user_admin","act":{"iss":"https://idp.example.com","sub":"svc"}}`)
	})
	id, err = verify(exchanged)
	require.NoError(t, err)
	assert.Equal(t, "user_admin", id.Actor, "the acting subject")
	assert.Equal(t, `{"act":{"act":{"iss":"https://idp.example.com","sub":"svc"},"sub":"user_admin"}}`, id.ClaimsJSON(), "the whole chain")

	inactive := false
	for name, tc := range map[string]struct {
		answer *backend.OAuthAccessToken
		want   Reason
	}{
		"not active": {&backend.OAuthAccessToken{Active: &inactive}, ReasonInvalid},
		"revoked":    {answer(func(a *backend.OAuthAccessToken) { a.Revoked = true }), ReasonInvalid},
		"expired":    {answer(func(a *backend.OAuthAccessToken) { a.Expired = true }), ReasonExpired},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := verify(tc.answer)
			requireReason(t, err, tc.want)
		})
	}
}

func oauthHeader() map[string]any {
	return map[string]any{"alg": "RS256", "kid": testKid, "typ": "at+jwt"}
}

func oauthPayload() map[string]any {
	now := testNow.Unix()
	return map[string]any{"client_id": "client_2VTWUzvGC5UhdJCNx6xG1D98edc", "sub": "user_2vYVtestTESTtestTESTtestTESTtest",
		"jti": "oat_2xKa9Bgv7NxMRDFyQw8LpZ3cTmU1vHjE", "iat": now, "exp": now + 300, "scope": "read:foo write:bar"}
}

func TestOAuthJWTs(t *testing.T) {
	private, _ := signingKeys(t)
	v := newVerifier(t, allTypes(nil, keysFor(private, "RS256")))
	for name, tc := range map[string]struct {
		header, payload map[string]any
		wantScopes      []string
	}{
		"at+jwt with scope":          {oauthHeader(), oauthPayload(), []string{"read:foo", "write:bar"}},
		"application/at+jwt":         {with(oauthHeader(), map[string]any{"typ": "application/at+jwt"}), oauthPayload(), []string{"read:foo", "write:bar"}},
		"scp preferred over scope":   {oauthHeader(), with(oauthPayload(), map[string]any{"scp": []string{"a"}}), []string{"a"}},
		"no scopes":                  {oauthHeader(), with(oauthPayload(), map[string]any{"scope": nil}), []string{}},
		"a category does not matter": {with(oauthHeader(), map[string]any{"cat": categorySession}), oauthPayload(), []string{"read:foo", "write:bar"}},
	} {
		t.Run(name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), sign(t, private, tc.header, tc.payload))
			require.NoError(t, err)
			assert.Equal(t, OAuthToken, id.TokenType)
			assert.Equal(t, JWT, id.Format)
			assert.Equal(t, "user_2vYVtestTESTtestTESTtestTESTtest", id.Subject)
			assert.Equal(t, "client_2VTWUzvGC5UhdJCNx6xG1D98edc", id.ClientID)
			assert.Equal(t, "oat_2xKa9Bgv7NxMRDFyQw8LpZ3cTmU1vHjE", id.TokenID)
			assert.Equal(t, tc.wantScopes, id.Scopes)
		})
	}
	for name, tc := range map[string]struct {
		act   any
		actor string
	}{
		"an actor":               {map[string]any{"sub": "user_admin"}, "user_admin"},
		"a chain":                {map[string]any{"sub": "user_admin", "act": map[string]any{"sub": "svc"}}, "user_admin"},
		"an actor without sub":   {map[string]any{"iss": "https://idp.example.com"}, ""},
		"a subject not a string": {map[string]any{"sub": 7}, ""},
		"not an object":          {"user_admin", ""},
	} {
		id, err := v.Verify(context.Background(), sign(t, private, oauthHeader(), with(oauthPayload(), map[string]any{"act": tc.act})))
		require.NoError(t, err, name)
		assert.Equal(t, tc.actor, id.Actor, name)
		assert.Equal(t, jsonRoundTrip(t, tc.act), jsonRoundTrip(t, id.Claims()["act"]), "%s: the chain stays in the claims", name)
	}
	for name, payload := range map[string]map[string]any{
		"sub missing":        with(oauthPayload(), map[string]any{"sub": nil}),
		"sub a number":       with(oauthPayload(), map[string]any{"sub": 123}),
		"sub an object":      with(oauthPayload(), map[string]any{"sub": map[string]any{}}),
		"scp not strings":    with(oauthPayload(), map[string]any{"scp": []int{1}}),
		"client_id a number": with(oauthPayload(), map[string]any{"client_id": 7}),
		"expired":            with(oauthPayload(), map[string]any{"exp": testNow.Unix() - 100}),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), sign(t, private, oauthHeader(), payload))
			require.Error(t, err, "refused without a panic")
		})
	}
}
