package verify

import (
	"context"
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

func TestSessionTokens(t *testing.T) {
	private, _ := signingKeys(t)
	v := allTypesVerifier(nil, &countingKeys{signing: rsaKey(private, "RS256")})
	id, err := v.Verify(context.Background(), sign(t, private, sessionHeader(), sessionPayload()))
	require.NoError(t, err)
	assert.Equal(t, SessionToken, id.TokenType)
	assert.Equal(t, "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", id.Subject)
	assert.Equal(t, "sess_2GbDB4enNdCa5vS1zpC3Xzg9tK9", id.SessionID)
	assert.Equal(t, "org_1", id.OrgID, "version 2: o.id")
	assert.Equal(t, []string{}, id.Scopes)
	assert.Equal(t, "admin", id.Claims()["o"].(map[string]any)["rol"])

	v1 := with(sessionPayload(), map[string]any{"v": nil, "o": nil, "org_id": "org_v1"})
	id, err = v.Verify(context.Background(), sign(t, private, sessionHeader(), v1))
	require.NoError(t, err)
	assert.Equal(t, "org_v1", id.OrgID, "version 1: org_id")

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
			keys := &countingKeys{signing: rsaKey(private, "RS256")}
			v := allTypesVerifier(nil, keys, tc.parties...)
			_, err := v.Verify(context.Background(), sign(t, private, tc.header, tc.payload))
			requireReason(t, err, ReasonInvalid)
			if strings.Contains(name, "category") {
				assert.Zero(t, keys.calls.Load(), "a category is refused before any key lookup")
			}
		})
	}
	v := allTypesVerifier(nil, &countingKeys{signing: rsaKey(private, "RS256")}, "https://accounts.inspired.puma-74.lcl.dev")
	_, err := v.Verify(context.Background(), sign(t, private, sessionHeader(), sessionPayload()))
	assert.NoError(t, err, "azp among the authorized parties")
}

func TestSessionOnlyRoutesRefuseMachineJWTs(t *testing.T) {
	private, _ := signingKeys(t)
	keys := &countingKeys{signing: rsaKey(private, "RS256")}
	v := New(Options{Accept: []TokenType{SessionToken}, Keys: keys, now: fixedClock, ClockSkew: 5 * time.Second})
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
	v := allTypesVerifier(&fakeBackend{answer: m2mAnswer(nil)}, &countingKeys{signing: rsaKey(private, "RS256")})
	inCookie := func(token string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.AddCookie(&http.Cookie{Name: SessionCookie, Value: token})
		return r
	}
	_, err := v.VerifyRequest(inCookie(sign(t, private, sessionHeader(), sessionPayload())))
	require.NoError(t, err)

	m2m := sign(t, private, m2mHeader(), m2mPayload())
	_, err = v.VerifyRequest(inCookie(m2m))
	requireReason(t, err, ReasonTypeNotAccepted)
	_, err = v.Verify(context.Background(), m2m)
	require.NoError(t, err)
	_, err = v.VerifyRequest(inCookie(m2m))
	requireReason(t, err, ReasonTypeNotAccepted)
	_, err = v.VerifyRequest(inCookie("mt_0123456789abcdef0123456789abcdef"))
	requireReason(t, err, ReasonTypeNotAccepted)
}
