package verify

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestClassifyOpaque: an opaque credential is the kind its prefix names;
// anything that is not a Clerk credential is refused as invalid, with the
// format its shape has, if any.
func TestClassifyOpaque(t *testing.T) {
	for token, want := range map[string]struct {
		tokenType TokenType // "": refused
		format    Format
	}{
		"mt_8XOIucKvqHVr5tYP123456789abcdefghij": {M2MToken, Opaque}, "oat_8XOIucKvqHVr5tYP123456789abcdefghij": {OAuthToken, Opaque},
		"ak_LCWGdaM8mv8K4PC/57IICZQXAeWfCgF30DZaFXHoGn9=": {APIKey, Opaque}, "mt_x": {M2MToken, Opaque},
		"": {}, "unknown_prefix_token": {}, "session_token_value": {}, "M2M_token_value": {}, "OAUTH_token_value": {},
		"API_KEY_value": {}, "invalid": {}, "invalid.jwt": {}, "invalid.jwt.token.extra": {}, "a..c": {}, ".b.c": {},
		"a.b.": {}, "e30.e30.e30=": {}, "hello-not-a-token": {}, "mt_ space": {"", Opaque}, "mt_": {"", Opaque},
		"oat_": {"", Opaque}, "ak_": {"", Opaque}, "aaa.bbb.ccc": {"", JWT}, "YWJj.YWJj.YWJj": {"", JWT},
		"mt_a.b.c": {"", JWT}, "e30.eyJ.AAAA": {"", JWT},
	} {
		cred, err := classify(token)
		if want.tokenType == "" {
			assert.Equal(t, want.format, requireReason(t, err, ReasonInvalid).Format, token)
			continue
		}
		require.NoError(t, err, token)
		assert.Equal(t, &credential{kind: kindOf(want.tokenType), format: Opaque, raw: token}, cred)
	}
}

// TestClassifyJWT: a JWT is the first kind whose rules claim it; one whose
// parts do not decode is refused as an invalid JWT.
func TestClassifyJWT(t *testing.T) {
	key, _ := signingKeys(t)
	atJWT := map[string]any{"alg": "RS256", "typ": "at+jwt"}
	for _, tc := range []struct {
		name            string
		header, payload any
		want            TokenType // "": refused
	}{
		{"m2m", m2mHeader(), m2mPayload(), M2MToken},
		{"m2m without typ", with(m2mHeader(), map[string]any{"typ": nil}), m2mPayload(), M2MToken},
		{"oauth at+jwt", atJWT, map[string]any{"sub": "user_1"}, OAuthToken},
		{"oauth application/at+jwt", map[string]any{"alg": "RS256", "typ": "application/at+jwt"}, map[string]any{"sub": "user_1"}, OAuthToken},
		{"oauth with a non-string sub", atJWT, map[string]any{"sub": 123}, OAuthToken},
		{"oauth with an object sub", atJWT, map[string]any{"sub": map[string]any{}}, OAuthToken},
		{"mch_ subject wins over at+jwt", atJWT, map[string]any{"sub": "mch_1"}, M2MToken},
		{"session", map[string]any{"alg": "RS256", "typ": "JWT"}, map[string]any{"sub": "user_1", "sid": "sess_1"}, SessionToken},
		{"non-string mch sub", m2mHeader(), with(m2mPayload(), map[string]any{"sub": []string{"mch_1"}}), SessionToken},
		{"no sub", m2mHeader(), with(m2mPayload(), map[string]any{"sub": nil}), SessionToken},
		{"header not JSON", "not json", m2mPayload(), ""},
		{"payload not JSON", m2mHeader(), "not json", ""},
		{"header an array", "[1,2]", m2mPayload(), ""},
		{"payload a string", m2mHeader(), `"mch_1"`, ""},
		{"payload with trailing", m2mHeader(), `{"sub":"mch_1"}}`, ""},
		{"header alg not a string", map[string]any{"alg": 256, "kid": testKid}, m2mPayload(), ""},
		{"header typ not a string", map[string]any{"alg": "RS256", "typ": 1}, m2mPayload(), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred, err := classify(sign(t, key, tc.header, tc.payload))
			if tc.want == "" {
				assert.Equal(t, JWT, requireReason(t, err, ReasonInvalid).Format)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, cred.kind.tokenType)
			assert.Equal(t, JWT, cred.format)
			assert.NotNil(t, cred.jwt)
		})
	}
}

func TestParseTokenTypes(t *testing.T) {
	types, err := ParseTokenTypes([]string{"api_key", "m2m_token", "api_key"})
	require.NoError(t, err)
	assert.Equal(t, []TokenType{M2MToken, APIKey}, types, "each once, in the documentation's order")

	types, err = ParseTokenTypes([]string{"any"})
	require.NoError(t, err)
	var all []TokenType
	for _, k := range kinds {
		all = append(all, k.tokenType)
	}
	assert.Equal(t, all, types, "every type of the table, in its order")
	assert.Subset(t, types, []TokenType{M2MToken, APIKey, OAuthToken, SessionToken})

	_, err = ParseTokenTypes([]string{"m2m_token", "machine_token"})
	require.ErrorContains(t, err, `unknown token type "machine_token"`)
}
