package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

func allTypesVerifier(b Backend, keys KeySource, parties ...string) *Verifier {
	accept, _ := ParseTokenTypes([]string{"any"})
	return New(Options{Accept: accept, Backend: b, Keys: keys, ClockSkew: 5 * time.Second, Now: fixedClock,
		AuthorizedParties: parties, CacheTTL: time.Minute})
}

func apiKeyAnswer(subject string, change func(*backend.APIKey)) *backend.APIKey {
	answer := &backend.APIKey{Object: "api_key", ID: "ak_ey966f1b1xf93586b2debdcadb0b3bd1", Type: "api_key",
		Subject: subject, Name: "my-api-key", Claims: json.RawMessage(`{"foo":"bar"}`), Scopes: []string{"read:foo", "write:bar"}}
	if change != nil {
		change(answer)
	}
	return answer
}

func TestAPIKeys(t *testing.T) {
	const secret = "ak_LCWGdaM8mv8K4PC/57IICZQXAeWfCgF30DZaFXHoGn9="
	id, err := allTypesVerifier(&fakeBackend{apiKey: apiKeyAnswer("user_2vYVtestTESTtestTESTtestTESTtest", nil)}, nil).Verify(context.Background(), secret)
	require.NoError(t, err)
	assert.Equal(t, "user_2vYVtestTESTtestTESTtestTESTtest", id.Subject)
	assert.Equal(t, APIKey, id.TokenType)
	assert.Equal(t, Opaque, id.Format)
	assert.Equal(t, "ak_ey966f1b1xf93586b2debdcadb0b3bd1", id.TokenID)
	assert.Equal(t, "my-api-key", id.Name)
	assert.Equal(t, []string{"read:foo", "write:bar"}, id.Scopes)
	assert.Equal(t, `{"foo":"bar"}`, id.ClaimsJSON())
	assert.Empty(t, id.OrgID)
	assert.True(t, id.ExpiresAt.IsZero(), "API keys may never expire")

	id, err = allTypesVerifier(&fakeBackend{apiKey: apiKeyAnswer("org_2vYVtestTESTtestTESTtestTESTtest", nil)}, nil).Verify(context.Background(), secret)
	require.NoError(t, err)
	assert.Equal(t, "org_2vYVtestTESTtestTESTtestTESTtest", id.OrgID, "an organization's key names the organization")

	for name, tc := range map[string]struct {
		backend *fakeBackend
		want    Reason
	}{
		"revoked":       {&fakeBackend{apiKey: apiKeyAnswer("user_1", func(k *backend.APIKey) { k.Revoked = true })}, ReasonInvalid},
		"expired":       {&fakeBackend{apiKey: apiKeyAnswer("user_1", func(k *backend.APIKey) { k.Expired = true })}, ReasonExpired},
		"unknown":       {&fakeBackend{err: &backend.Error{Status: 404}}, ReasonInvalid},
		"key rejected":  {&fakeBackend{err: &backend.Error{Status: 401, Code: "clerk_key_invalid"}}, ReasonMisconfigured},
		"claims a list": {&fakeBackend{apiKey: apiKeyAnswer("user_1", func(k *backend.APIKey) { k.Claims = json.RawMessage(`[1]`) })}, ReasonUnavailable},
		"clerk failing": {&fakeBackend{err: &backend.Error{Status: 502}}, ReasonUnavailable},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := allTypesVerifier(tc.backend, nil).Verify(context.Background(), secret)
			verr := requireReason(t, err, tc.want)
			assert.Equal(t, APIKey, verr.TokenType)
		})
	}
}

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
	id, err := allTypesVerifier(&fakeBackend{oauth: answer(nil)}, nil).Verify(context.Background(), token)
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
	id, err = allTypesVerifier(&fakeBackend{oauth: exchanged}, nil).Verify(context.Background(), token)
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
			_, err := allTypesVerifier(&fakeBackend{oauth: tc.answer}, nil).Verify(context.Background(), token)
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
	v := allTypesVerifier(nil, &countingKeys{key: rsaKey(private, "RS256")})
	for name, tc := range map[string]struct {
		header, payload map[string]any
		wantScopes      []string
	}{
		"at+jwt with scope":          {oauthHeader(), oauthPayload(), []string{"read:foo", "write:bar"}},
		"application/at+jwt":         {with(oauthHeader(), map[string]any{"typ": "application/at+jwt"}), oauthPayload(), []string{"read:foo", "write:bar"}},
		"scp preferred over scope":   {oauthHeader(), with(oauthPayload(), map[string]any{"scp": []string{"a"}}), []string{"a"}},
		"no scopes":                  {oauthHeader(), with(oauthPayload(), map[string]any{"scope": nil}), []string{}},
		"a category does not matter": {with(oauthHeader(), map[string]any{"cat": CategorySession}), oauthPayload(), []string{"read:foo", "write:bar"}},
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

func sessionHeader() map[string]any {
	return map[string]any{"alg": "RS256", "kid": testKid, "typ": "JWT", "cat": CategorySession}
}

func sessionPayload() map[string]any {
	now := testNow.Unix()
	return map[string]any{"azp": "https://accounts.inspired.puma-74.lcl.dev", "exp": now + 60, "iat": now,
		"iss": "https://clerk.inspired.puma-74.lcl.dev", "nbf": now - 10, "sid": "sess_2GbDB4enNdCa5vS1zpC3Xzg9tK9",
		"sub": "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", "v": 2, "o": map[string]any{"id": "org_1", "rol": "admin"}}
}

func TestSessionTokens(t *testing.T) {
	private, _ := signingKeys(t)
	v := allTypesVerifier(nil, &countingKeys{key: rsaKey(private, "RS256")})
	id, err := v.Verify(context.Background(), sign(t, private, sessionHeader(), sessionPayload()))
	require.NoError(t, err)
	assert.Equal(t, SessionToken, id.TokenType)
	assert.Equal(t, "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", id.Subject)
	assert.Equal(t, "sess_2GbDB4enNdCa5vS1zpC3Xzg9tK9", id.SessionID)
	assert.Equal(t, "org_1", id.OrgID, "version 2: o.id")
	assert.Empty(t, id.Actor)
	impersonated, err := v.Verify(context.Background(), sign(t, private, sessionHeader(),
		with(sessionPayload(), map[string]any{"act": map[string]any{"sub": "user_admin"}})))
	require.NoError(t, err)
	assert.Equal(t, "user_admin", impersonated.Actor, "the impersonating user")
	assert.Equal(t, []string{}, id.Scopes)
	assert.Equal(t, "admin", id.Claims()["o"].(map[string]any)["rol"])

	for name, tc := range map[string]struct {
		changes map[string]any
		org     string
	}{
		"version 1":                  {map[string]any{"v": nil, "o": nil, "org_id": "org_v1"}, "org_v1"},
		"version 1 with o too":       {map[string]any{"v": nil, "org_id": "org_v1"}, "org_v1"},
		"version 2 with org_id too":  {map[string]any{"org_id": "org_v1"}, "org_1"},
		"version 2 without o":        {map[string]any{"o": nil, "org_id": "org_v1"}, ""},
		"version 2 written 2.0":      {map[string]any{"v": json.RawMessage("2.0")}, "org_1"},
		"version 2 as a string":      {map[string]any{"v": "2", "org_id": "org_v1"}, "org_v1"},
		"version 3":                  {map[string]any{"v": 3, "org_id": "org_v1"}, "org_v1"},
		"version 1 without org_id":   {map[string]any{"v": 1}, ""},
		"version 2, o without an id": {map[string]any{"o": map[string]any{"rol": "admin"}}, ""},
	} {
		id, err = v.Verify(context.Background(), sign(t, private, sessionHeader(), with(sessionPayload(), tc.changes)))
		require.NoError(t, err, name)
		assert.Equal(t, tc.org, id.OrgID, name)
	}

	for name, header := range map[string]map[string]any{
		"ignore category": with(sessionHeader(), map[string]any{"cat": CategoryIgnore}),
		"no category":     with(sessionHeader(), map[string]any{"cat": nil}),
		"no typ":          with(sessionHeader(), map[string]any{"typ": nil}),
	} {
		_, err := v.Verify(context.Background(), sign(t, private, header, sessionPayload()))
		assert.NoError(t, err, name)
	}
}

func TestSessionTokenRefusals(t *testing.T) {
	private, _ := signingKeys(t)
	for name, tc := range map[string]struct {
		header, payload map[string]any
		parties         []string
	}{
		"template category":          {with(sessionHeader(), map[string]any{"cat": CategoryJWTTemplate}), sessionPayload(), nil},
		"M2M category":               {with(sessionHeader(), map[string]any{"cat": CategoryM2M}), sessionPayload(), nil},
		"unknown category":           {with(sessionHeader(), map[string]any{"cat": "cl_future"}), sessionPayload(), nil},
		"template token without cat": {with(sessionHeader(), map[string]any{"cat": nil}), with(sessionPayload(), map[string]any{"sid": nil}), nil},
		"empty sid":                  {sessionHeader(), with(sessionPayload(), map[string]any{"sid": ""}), nil},
		"pending session":            {sessionHeader(), with(sessionPayload(), map[string]any{"sts": "pending"}), nil},
		"azp missing with parties":   {sessionHeader(), with(sessionPayload(), map[string]any{"azp": nil}), []string{"https://app.example.com"}},
		"azp empty with parties":     {sessionHeader(), with(sessionPayload(), map[string]any{"azp": ""}), []string{"https://app.example.com"}},
		"azp not among the parties":  {sessionHeader(), sessionPayload(), []string{"https://app.example.com"}},
		"sub missing":                {sessionHeader(), with(sessionPayload(), map[string]any{"sub": nil}), nil},
		"o not an object":            {sessionHeader(), with(sessionPayload(), map[string]any{"o": "org_1"}), nil},
		"typ JWE":                    {with(sessionHeader(), map[string]any{"typ": "JWE"}), sessionPayload(), nil},
	} {
		t.Run(name, func(t *testing.T) {
			keys := &countingKeys{key: rsaKey(private, "RS256")}
			v := allTypesVerifier(nil, keys, tc.parties...)
			_, err := v.Verify(context.Background(), sign(t, private, tc.header, tc.payload))
			requireReason(t, err, ReasonInvalid)
			if strings.Contains(name, "category") {
				assert.Zero(t, keys.calls.Load(), "a category is refused before any key lookup")
			}
		})
	}
	v := allTypesVerifier(nil, &countingKeys{key: rsaKey(private, "RS256")}, "https://accounts.inspired.puma-74.lcl.dev")
	_, err := v.Verify(context.Background(), sign(t, private, sessionHeader(), sessionPayload()))
	assert.NoError(t, err, "azp among the authorized parties")
}

func TestSessionOnlyRoutesRefuseMachineJWTs(t *testing.T) {
	private, _ := signingKeys(t)
	keys := &countingKeys{key: rsaKey(private, "RS256")}
	v := New(Options{Accept: TypesOf(SessionToken), Keys: keys, Now: fixedClock, ClockSkew: 5 * time.Second})
	for name, token := range map[string]string{
		"M2M JWT":   sign(t, private, m2mHeader(), m2mPayload()),
		"OAuth JWT": sign(t, private, oauthHeader(), oauthPayload()),
		"opaque":    "mt_0123456789abcdef0123456789abcdef",
	} {
		_, err := v.Verify(context.Background(), token)
		requireReason(t, err, ReasonTypeNotAccepted)
		assert.Zero(t, keys.calls.Load(), name)
	}
}

func TestCookiesCarryOnlySessions(t *testing.T) {
	private, _ := signingKeys(t)
	v := allTypesVerifier(&fakeBackend{answer: m2mAnswer(nil)}, &countingKeys{key: rsaKey(private, "RS256")})
	_, err := v.VerifyFrom(context.Background(), sign(t, private, sessionHeader(), sessionPayload()), FromCookie)
	require.NoError(t, err)

	m2m := sign(t, private, m2mHeader(), m2mPayload())
	_, err = v.VerifyFrom(context.Background(), m2m, FromCookie)
	requireReason(t, err, ReasonTypeNotAccepted)
	_, err = v.Verify(context.Background(), m2m)
	require.NoError(t, err)
	_, err = v.VerifyFrom(context.Background(), m2m, FromCookie)
	requireReason(t, err, ReasonTypeNotAccepted)
	_, err = v.VerifyFrom(context.Background(), "mt_0123456789abcdef0123456789abcdef", FromCookie)
	requireReason(t, err, ReasonTypeNotAccepted)
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

func TestCheckSignedIn(t *testing.T) {
	private, _ := signingKeys(t)
	v := allTypesVerifier(nil, &countingKeys{key: rsaKey(private, "RS256")})
	iat := testNow.Unix()
	verify := func(t *testing.T, payload map[string]any) *Identity {
		id, err := v.VerifyFrom(context.Background(), sign(t, private, sessionHeader(), payload), FromCookie)
		require.NoError(t, err)
		return id
	}
	session, withoutIat := verify(t, sessionPayload()), verify(t, with(sessionPayload(), map[string]any{"iat": nil}))
	assert.Equal(t, time.Unix(iat, 0), session.IssuedAt)
	for name, tc := range map[string]struct {
		id      *Identity
		cookies string
		reason  Reason // "" for signed in
	}{
		"signed in before the token":   {session, fmt.Sprintf("__client_uat=%d", iat-60), ""},
		"signed in as the token":       {session, fmt.Sprintf("__client_uat=%d", iat), ""},
		"changed after the token":      {session, fmt.Sprintf("__client_uat=%d", iat+1), ReasonSessionOutdated},
		"a token that gives no iat":    {withoutIat, fmt.Sprintf("__client_uat=%d", iat+60), ""},
		"no __client_uat":              {session, "theme=dark", ReasonSessionOutdated},
		"signed out":                   {session, "__client_uat=0", ReasonSessionOutdated},
		"empty":                        {session, "__client_uat=", ReasonInvalid},
		"negative":                     {session, "__client_uat=-5", ReasonInvalid},
		"with a sign":                  {session, fmt.Sprintf("__client_uat=+%d", iat), ReasonInvalid},
		"with letters":                 {session, fmt.Sprintf("__client_uat=%ds", iat), ReasonInvalid},
		"beyond int64":                 {session, "__client_uat=99999999999999999999", ReasonInvalid},
		"twice":                        {session, fmt.Sprintf("__client_uat=%d; __client_uat=%d", iat, iat), ReasonInvalid},
		"a lookalike does not count":   {session, fmt.Sprintf("__client_uat_x=%d", iat), ReasonSessionOutdated},
		"zeros before a signed-in uat": {session, fmt.Sprintf("__client_uat=000%d", iat), ""},
	} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Cookie", tc.cookies)
			err := CheckSignedIn(r, tc.id)
			if tc.reason == "" {
				assert.NoError(t, err)
				return
			}
			verr := requireReason(t, err, tc.reason)
			assert.Equal(t, SessionToken, verr.TokenType)
		})
	}
}

func TestCredential(t *testing.T) {
	request := func(authorization []string, cookies ...string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		for _, value := range authorization {
			r.Header.Add("Authorization", value)
		}
		for _, cookie := range cookies {
			r.Header.Add("Cookie", cookie)
		}
		return r
	}
	for name, tc := range map[string]struct {
		r              *http.Request
		acceptSessions bool
		want           string
		source         Source
		reason         Reason
	}{
		"header":                           {request([]string{"Bearer mt_a"}), false, "mt_a", FromHeader, ""},
		"header wins over the cookie":      {request([]string{"Bearer mt_a"}, "__session=a.b.c"), true, "mt_a", FromHeader, ""},
		"cookie when sessions accepted":    {request(nil, "__session=a.b.c"), true, "a.b.c", FromCookie, ""},
		"cookie ignored otherwise":         {request(nil, "__session=a.b.c"), false, "", FromHeader, ReasonMissing},
		"nothing":                          {request(nil), true, "", FromCookie, ReasonMissing},
		"empty cookie":                     {request(nil, "__session="), true, "", FromCookie, ReasonMissing},
		"two session cookies":              {request(nil, "__session=a.b.c; __session=d.e.f"), true, "", FromCookie, ReasonInvalid},
		"cookie with spaces":               {request(nil, `__session="a b"`), true, "", FromCookie, ReasonInvalid},
		"quoted cookie":                    {request(nil, `__session="a.b.c"`), true, "", FromCookie, ReasonInvalid},
		"other cookies only":               {request(nil, "theme=dark"), true, "", FromCookie, ReasonMissing},
		"bad header, cookie not consulted": {request([]string{"Basic x"}, "__session=a.b.c"), true, "", FromHeader, ReasonInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			token, source, err := Credential(tc.r, tc.acceptSessions)
			if tc.reason != "" {
				requireReason(t, err, tc.reason)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, token)
			assert.Equal(t, tc.source, source)
		})
	}
}

func TestPolicy(t *testing.T) {
	id := &Identity{Subject: "mch_caller", TokenType: M2MToken, Scopes: []string{"mch_gateway", "mch_other"}}
	for name, tc := range map[string]struct {
		policy Policy
		ok     bool
	}{
		"nothing required":          {Policy{}, true},
		"the scope it has":          {Policy{RequireScopes: []string{"mch_gateway"}}, true},
		"all scopes it has":         {Policy{RequireScopes: []string{"mch_gateway", "mch_other"}}, true},
		"one scope missing":         {Policy{RequireScopes: []string{"mch_gateway", "mch_third"}}, false},
		"a prefix is not a scope":   {Policy{RequireScopes: []string{"mch_gate"}}, false},
		"allowed subject":           {Policy{AllowedSubjects: []string{"mch_x", "mch_caller"}}, true},
		"subject not allowed":       {Policy{AllowedSubjects: []string{"mch_x"}}, false},
		"both, subject not allowed": {Policy{RequireScopes: []string{"mch_gateway"}, AllowedSubjects: []string{"mch_x"}}, false},
	} {
		err := tc.policy.Check(id)
		if tc.ok {
			assert.NoError(t, err, name)
			continue
		}
		requireReason(t, err, ReasonInsufficientScope)
	}
}
