package verify

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestClassifyOpaque(t *testing.T) {
	for token, want := range map[string]TokenType{
		"mt_8XOIucKvqHVr5tYP123456789abcdefghij":          M2MToken,
		"oat_8XOIucKvqHVr5tYP123456789abcdefghij":         OAuthToken,
		"ak_LCWGdaM8mv8K4PC/57IICZQXAeWfCgF30DZaFXHoGn9=": APIKey,
	} {
		tok, err := classifyToken(token)
		require.NoError(t, err, token)
		assert.Equal(t, want, tok.kind.tokenType, token)
		assert.Equal(t, Opaque, tok.format(), token)
	}
}

func TestClassifyRefusesWhatIsNotAClerkCredential(t *testing.T) {
	for _, token := range []string{
		"", "unknown_prefix_token", "session_token_value", "M2M_token_value", "OAUTH_token_value",
		"API_KEY_value", "mt_", "oat_", "ak_", "invalid", "invalid.jwt", "invalid.jwt.token.extra",
		"a..c", ".b.c", "a.b.", "aaa.bbb.ccc", "YWJj.YWJj.YWJj", "mt_a.b.c", "e30.e30.e30=",
	} {
		_, err := classifyToken(token)
		requireReason(t, err, ReasonInvalid)
	}
}

func TestClassifyJWT(t *testing.T) {
	key, _ := signingKeys(t)
	for _, tc := range []struct {
		name    string
		header  map[string]any
		payload map[string]any
		want    TokenType
	}{
		{"m2m", m2mHeader(), m2mPayload(), M2MToken},
		{"m2m without typ", with(m2mHeader(), map[string]any{"typ": nil}), m2mPayload(), M2MToken},
		{"oauth at+jwt", map[string]any{"alg": "RS256", "typ": "at+jwt"}, map[string]any{"sub": "user_1"}, OAuthToken},
		{"oauth application/at+jwt", map[string]any{"alg": "RS256", "typ": "application/at+jwt"}, map[string]any{"sub": "user_1"}, OAuthToken},
		{"oauth with a non-string sub", map[string]any{"alg": "RS256", "typ": "at+jwt"}, map[string]any{"sub": 123}, OAuthToken},
		{"oauth with an object sub", map[string]any{"alg": "RS256", "typ": "at+jwt"}, map[string]any{"sub": map[string]any{}}, OAuthToken},
		{"mch_ subject wins over at+jwt", map[string]any{"alg": "RS256", "typ": "at+jwt"}, map[string]any{"sub": "mch_1"}, M2MToken},
		{"session", map[string]any{"alg": "RS256", "typ": "JWT"}, map[string]any{"sub": "user_1", "sid": "sess_1"}, SessionToken},
		{"non-string mch sub", m2mHeader(), with(m2mPayload(), map[string]any{"sub": []string{"mch_1"}}), SessionToken},
		{"no sub", m2mHeader(), with(m2mPayload(), map[string]any{"sub": nil}), SessionToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := classifyToken(sign(t, key, tc.header, tc.payload))
			require.NoError(t, err)
			assert.Equal(t, tc.want, tok.kind.tokenType)
			assert.Equal(t, JWT, tok.format())
		})
	}
}

func TestClassifyRefusesUndecodableJWTs(t *testing.T) {
	key, _ := signingKeys(t)
	for name, tc := range map[string]struct{ header, payload any }{
		"header not JSON":         {"not json", m2mPayload()},
		"payload not JSON":        {m2mHeader(), "not json"},
		"header an array":         {"[1,2]", m2mPayload()},
		"payload a string":        {m2mHeader(), `"mch_1"`},
		"payload with trailing":   {m2mHeader(), `{"sub":"mch_1"}}`},
		"header alg not a string": {map[string]any{"alg": 256, "kid": testKid}, m2mPayload()},
		"header typ not a string": {map[string]any{"alg": "RS256", "typ": 1}, m2mPayload()},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := classifyToken(sign(t, key, tc.header, tc.payload))
			requireReason(t, err, ReasonInvalid)
		})
	}
}

func TestParseTokenTypes(t *testing.T) {
	types, err := ParseTokenTypes([]string{"api_key", "m2m_token", "api_key"})
	require.NoError(t, err)
	assert.Equal(t, []TokenType{M2MToken, APIKey}, types, "each once, in the documentation's order")

	types, err = ParseTokenTypes([]string{"any"})
	require.NoError(t, err)
	assert.Equal(t, []TokenType{M2MToken, APIKey, OAuthToken, SessionToken}, types)

	_, err = ParseTokenTypes([]string{"m2m_token", "machine_token"})
	require.ErrorContains(t, err, `unknown token type "machine_token"`)
}
