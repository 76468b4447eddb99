package verify

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCustomClaims: what an identity keeps of a JWT's payload is its
// members but for the registered claims (however their names are
// spelled), values as written, names escaped where JSON needs it; and
// nothing when nothing is left.
func TestCustomClaims(t *testing.T) {
	for payload, want := range map[string]string{
		`{"sub":"mch_1","aud":["mch_2"],"scopes":"mch_2","exp":1,"iat":1,"nbf":1,"iss":"x","jti":"mt_1"}`: `{"aud":["mch_2"],"scopes":"mch_2"}`,
		`{"s\u0075b":"mch_1","big":12345678901234567890,"nested":{"a":[1,{"b":null}]}}`:                   `{"big":12345678901234567890,"nested":{"a":[1,{"b":null}]}}`,
		`{"q\"uote":1,"back\\slash":2,"tab\there":3,"é":4}`:                                               `{"q\"uote":1,"back\\slash":2,"tab\there":3,"é":4}`,
		`{"sub":"mch_1","exp":1}`: ``,
		`{}`:                      ``,
	} {
		members, err := scanObject([]byte(payload), nil)
		require.NoError(t, err, payload)
		got := customClaims(&jwtToken{claims: members})
		if want == "" {
			assert.Empty(t, got, payload)
			continue
		}
		require.True(t, json.Valid([]byte(got)), "%s from %s", got, payload)
		assert.JSONEq(t, want, got, payload)
	}
}
