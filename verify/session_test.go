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
)

func sessionHeader() map[string]any {
	return map[string]any{"alg": "RS256", "kid": testKid, "typ": "JWT", "cat": categorySession}
}

func sessionPayload() map[string]any {
	now := testNow.Unix()
	return map[string]any{"azp": "https://accounts.inspired.puma-74.lcl.dev", "exp": now + 60, "iat": now,
		"iss": "https://clerk.inspired.puma-74.lcl.dev", "nbf": now - 10, "sid": "sess_2GbDB4enNdCa5vS1zpC3Xzg9tK9",
		"sub": "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", "v": 2, "o": map[string]any{"id": "org_1", "rol": "admin"}}
}

// partiesVerifier accepts every type, with keys and the authorized
// parties given.
func partiesVerifier(t *testing.T, keys keySource, parties ...string) *Verifier {
	opts := allTypes(nil, keys)
	opts.AuthorizedParties = parties
	return newVerifier(t, opts)
}

func TestSessionTokens(t *testing.T) {
	private, _ := signingKeys(t)
	v := newVerifier(t, allTypes(nil, keysFor(private, "RS256")))
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
		"ignore category": with(sessionHeader(), map[string]any{"cat": categoryIgnore}),
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
		"template category":          {with(sessionHeader(), map[string]any{"cat": categoryJWTTemplate}), sessionPayload(), nil},
		"M2M category":               {with(sessionHeader(), map[string]any{"cat": categoryM2M}), sessionPayload(), nil},
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
			keys := keysFor(private, "RS256")
			v := partiesVerifier(t, keys, tc.parties...)
			_, err := v.Verify(context.Background(), sign(t, private, tc.header, tc.payload))
			requireReason(t, err, ReasonInvalid)
			if strings.Contains(name, "category") {
				assert.Zero(t, keys.calls.Load(), "a category is refused before any key lookup")
			}
		})
	}
	v := partiesVerifier(t, keysFor(private, "RS256"), "https://accounts.inspired.puma-74.lcl.dev")
	_, err := v.Verify(context.Background(), sign(t, private, sessionHeader(), sessionPayload()))
	assert.NoError(t, err, "azp among the authorized parties")
}

func TestCheckSignedIn(t *testing.T) {
	private, _ := signingKeys(t)
	v := newVerifier(t, allTypes(nil, keysFor(private, "RS256")))
	iat := testNow.Unix()
	verify := func(t *testing.T, payload map[string]any) *Identity {
		id, err := v.Verify(context.Background(), sign(t, private, sessionHeader(), payload))
		require.NoError(t, err)
		return id
	}
	session, withoutIat := verify(t, sessionPayload()), verify(t, with(sessionPayload(), map[string]any{"iat": nil}))
	assert.Equal(t, time.Unix(iat, 0), session.IssuedAt)
	for name, tc := range map[string]struct {
		id        *Identity
		clientUAT []string // the values of the family's __client_uat, as sent
		reason    Reason   // "" for signed in
	}{
		"signed in before the token":   {session, []string{fmt.Sprint(iat - 60)}, ""},
		"signed in as the token":       {session, []string{fmt.Sprint(iat)}, ""},
		"changed after the token":      {session, []string{fmt.Sprint(iat + 1)}, ReasonSessionOutdated},
		"a token that gives no iat":    {withoutIat, []string{fmt.Sprint(iat + 60)}, ""},
		"no __client_uat":              {session, nil, ReasonSessionOutdated},
		"signed out":                   {session, []string{"0"}, ReasonSessionOutdated},
		"empty":                        {session, []string{""}, ReasonInvalid},
		"negative":                     {session, []string{"-5"}, ReasonInvalid},
		"with a sign":                  {session, []string{fmt.Sprint("+", iat)}, ReasonInvalid},
		"with letters":                 {session, []string{fmt.Sprint(iat, "s")}, ReasonInvalid},
		"quoted":                       {session, []string{fmt.Sprintf(`"%d"`, iat)}, ReasonInvalid},
		"hexadecimal":                  {session, []string{"0x10"}, ReasonInvalid},
		"beyond int64":                 {session, []string{"99999999999999999999"}, ReasonInvalid},
		"twice":                        {session, []string{fmt.Sprint(iat), fmt.Sprint(iat)}, ReasonInvalid},
		"twice, the first empty":       {session, []string{"", fmt.Sprint(iat)}, ReasonInvalid},
		"zeros before a signed-in uat": {session, []string{fmt.Sprintf("000%d", iat)}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			browser := &browserSession{names: CookieNames{Session: SessionCookie, ClientUAT: ClientUATCookie}, clientUAT: tc.clientUAT}
			err := checkSignedIn(browser, tc.id)
			if tc.reason == "" {
				assert.NoError(t, err)
				return
			}
			verr := requireReason(t, err, tc.reason)
			assert.Equal(t, SessionToken, verr.TokenType)
		})
	}
}

// TestCookiesCarryOnlySignedInSessions: VerifyRequest takes only a
// session token from the cookie, never a machine's, verified or answered
// from the cache; and it applies the __client_uat rule to a session token
// from the cookie, and to no other: after the token is verified (a forged
// token stays token_invalid), before the scopes (an outdated session is
// told as such, not as insufficient), and also when the token's verdict
// comes from the cache.
func TestCookiesCarryOnlySignedInSessions(t *testing.T) {
	private, other := signingKeys(t)
	keys := keysFor(private, "RS256")
	opts := allTypes(&fakeClerk{}, keys)
	open := newVerifier(t, opts)
	opts.RequireScopes = []string{"admin"}
	v := newVerifier(t, opts)
	session, m2m := sign(t, private, sessionHeader(), sessionPayload()), sign(t, private, m2mHeader(), ourM2MPayload())
	request := func(authorization string, cookies ...*http.Cookie) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if authorization != "" {
			r.Header.Set("Authorization", authorization)
		}
		for _, c := range cookies {
			r.AddCookie(c)
		}
		return r
	}
	signedOut := &http.Cookie{Name: ClientUATCookie, Value: "0"}
	signedIn := &http.Cookie{Name: ClientUATCookie, Value: fmt.Sprint(testNow.Unix() - 60)}
	cookie := func(token string) *http.Cookie { return &http.Cookie{Name: SessionCookie, Value: token} }

	_, err := open.VerifyRequest(request("Bearer "+session, signedOut))
	require.NoError(t, err, "a token from the Authorization header is exempt")
	for range 2 { // verified, then from the cache
		_, err = open.VerifyRequest(request("", cookie(session), signedOut))
		verr := requireReason(t, err, ReasonSessionOutdated)
		assert.Equal(t, SessionToken, verr.TokenType)
		_, err = open.VerifyRequest(request("", cookie(session)))
		requireReason(t, err, ReasonSessionOutdated)
		_, err = open.VerifyRequest(request("", cookie(session), signedIn))
		require.NoError(t, err)
		for _, machine := range []string{m2m, "mt_0123456789abcdef0123456789abcdef"} {
			_, err = open.VerifyRequest(request("", cookie(machine), signedIn))
			requireReason(t, err, ReasonTypeNotAccepted)
			_, err = open.Verify(context.Background(), machine)
			require.NoError(t, err)
		}
	}
	_, err = open.VerifyRequest(request("", cookie(sign(t, other, sessionHeader(), sessionPayload())), signedOut))
	requireReason(t, err, ReasonInvalid)
	_, err = v.VerifyRequest(request("", cookie(session), signedOut))
	requireReason(t, err, ReasonSessionOutdated)
	_, err = v.VerifyRequest(request("", cookie(session), signedIn))
	requireReason(t, err, ReasonInsufficientScope)
}

// TestSessionRulesSpareMachineJWTs: issuers and authorized parties are
// session rules: a session token's "iss" must be one of the issuers, and
// its "azp" one of the parties (see TestSessionTokenRefusals), while
// machine JWTs are not checked, as in Clerk's SDK (which has checked no azp
// on them since 3.25).
func TestSessionRulesSpareMachineJWTs(t *testing.T) {
	private, _ := signingKeys(t)
	opts := allTypes(nil, keysFor(private, "RS256"))
	opts.Issuer = []string{"https://clerk.example.com", "https://clerk.inspired.puma-74.lcl.dev"}
	opts.AuthorizedParties = []string{"https://app.example.com", "https://accounts.inspired.puma-74.lcl.dev"}
	v := newVerifier(t, opts)
	elsewhere := map[string]any{"iss": "https://clerk.evil.example", "azp": "https://evil.example.com"}
	for name, tc := range map[string]struct {
		header, payload map[string]any
		ok              bool
	}{
		"session from an issuer":        {sessionHeader(), sessionPayload(), true},
		"session from another":          {sessionHeader(), with(sessionPayload(), map[string]any{"iss": "https://clerk.evil.example"}), false},
		"session without iss":           {sessionHeader(), with(sessionPayload(), map[string]any{"iss": nil}), false},
		"session with an empty iss":     {sessionHeader(), with(sessionPayload(), map[string]any{"iss": ""}), false},
		"session with iss a list":       {sessionHeader(), with(sessionPayload(), map[string]any{"iss": []string{"https://clerk.example.com"}}), false},
		"session to another party":      {sessionHeader(), with(sessionPayload(), map[string]any{"azp": "https://evil.example.com"}), false},
		"M2M JWT from and to others":    {m2mHeader(), with(m2mPayload(), elsewhere), true},
		"OAuth JWT from and to others":  {oauthHeader(), with(oauthPayload(), elsewhere), true},
		"OAuth JWT without iss nor azp": {oauthHeader(), oauthPayload(), true},
		"M2M JWT without azp":           {m2mHeader(), m2mPayload(), true},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), sign(t, private, tc.header, tc.payload))
			if tc.ok {
				assert.NoError(t, err)
				return
			}
			requireReason(t, err, ReasonInvalid)
		})
	}
}
