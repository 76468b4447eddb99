package verify

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInspect(t *testing.T) {
	for _, k := range kinds {
		if k.prefix == "" {
			continue // no opaque form
		}
		inspection, err := Inspect(k.prefix + "8XOIucKvqHVr5tYP123456789abcdefghij")
		require.NoError(t, err, k.prefix)
		assert.Equal(t, &Inspection{TokenType: k.tokenType, Format: Opaque}, inspection, k.prefix)
	}
	key, _ := signingKeys(t)
	inspection, err := Inspect(sign(t, key, m2mHeader(), m2mPayload()))
	require.NoError(t, err)
	assert.Equal(t, M2MToken, inspection.TokenType)
	assert.Equal(t, JWT, inspection.Format)
	assert.Equal(t, &Header{Alg: "RS256", Kid: testKid, Typ: "JWT", Cat: categoryM2M, HasTyp: true, HasCat: true}, inspection.Header)
	assert.Equal(t, jsonRoundTrip(t, m2mPayload()), jsonRoundTrip(t, inspection.Claims))

	session, err := Inspect(sign(t, key, map[string]any{"alg": "RS256", "kid": testKid}, map[string]any{"sub": "user_1", "sid": "sess_1"}))
	require.NoError(t, err)
	assert.Equal(t, SessionToken, session.TokenType, "classified as Verify classifies it")
	assert.Equal(t, &Header{Alg: "RS256", Kid: testKid}, session.Header, "no typ, no cat: told from empty ones")
}

// TestInspectRefusesAsVerifyDoes: what is not a Clerk credential gets the
// refusal Verify gives, with the format its shape tells.
func TestInspectRefusesAsVerifyDoes(t *testing.T) {
	for token, format := range map[string]Format{
		"not-a-token":  "",
		"mt_":          Opaque,
		"e30.e30.e30=": "",
		"e30.eyJ.AAAA": JWT,
	} {
		_, err := Inspect(token)
		verr := requireReason(t, err, ReasonInvalid)
		assert.Equal(t, format, verr.Format, token)
		_, verifyErr := newVerifier(t, allTypes(nil, nil)).Verify(t.Context(), token)
		assert.Equal(t, verifyErr.(*Error).Description, verr.Description, token)
	}
}

func TestCategoryNames(t *testing.T) {
	for header, want := range map[Header]string{
		{}:                                       "absent",
		{HasCat: true, Cat: categorySession}:     "session",
		{HasCat: true, Cat: categoryM2M}:         "M2M",
		{HasCat: true, Cat: categoryJWTTemplate}: "JWT template",
		{HasCat: true, Cat: categoryIgnore}:      "ignore",
		{HasCat: true, Cat: ""}:                  "unknown",
		{HasCat: true, Cat: "cl_B7d4PD444AAA"}:   "unknown",
	} {
		assert.Equal(t, want, header.Category(), "%+v", header)
	}
}
