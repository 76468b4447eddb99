package verify

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWhatJWXAcceptsIsRefusedHere keeps the package doc's account of the
// JOSE decision true: each of these tokens is signed with the right key,
// jwx/v2 verifies it, and this package refuses it, before any key lookup.
func TestWhatJWXAcceptsIsRefusedHere(t *testing.T) {
	private, _ := signingKeys(t)
	now := time.Now()
	claims := func(extra string) string {
		return `{"sub":"mch_2vYVtestTESTtestTESTtestTESTtest","jti":"mt_1","exp":` + strconv.FormatInt(now.Add(time.Hour).Unix(), 10) +
			`,"iat":` + strconv.FormatInt(now.Unix(), 10) + extra + `}`
	}
	header := func(extra string) string { return `{"alg":"RS256","typ":"JWT","kid":"` + testKid + `"` + extra + `}` }
	raw := base64.RawURLEncoding.EncodeToString
	good := signSegments(t, private, raw([]byte(header(""))), raw([]byte(claims(""))))
	keys := keysFor(private, "")
	v := newVerifier(t, Options{keys: keys, now: time.Now})
	for name, token := range map[string]string{
		"a duplicate claim":               signSegments(t, private, raw([]byte(header(""))), raw([]byte(claims(`,"sub":"mch_other"`)))),
		"a duplicate claim, escaped":      signSegments(t, private, raw([]byte(header(""))), raw([]byte(claims(`,"s\u0075b":"mch_other"`)))),
		"a duplicate header member":       signSegments(t, private, raw([]byte(header(`,"kid":"ins_other"`))), raw([]byte(claims("")))),
		"invalid UTF-8 in a claim":        signSegments(t, private, raw([]byte(header(""))), raw([]byte(claims(",\"x\":\"\xff\"")))),
		"padded base64":                   paddedSpelling(signSegments(t, private, raw([]byte(unaligned(header("")))), raw([]byte(unaligned(claims("")))))),
		"another spelling of the bytes":   otherSpelling(good),
		"critical extensions":             signSegments(t, private, raw([]byte(header(`,"crit":["exp"]`))), raw([]byte(claims("")))),
		"a key URL (jku)":                 signSegments(t, private, raw([]byte(header(`,"jku":"https://attacker.example/jwks"`))), raw([]byte(claims("")))),
		"a certificate URL (x5u)":         signSegments(t, private, raw([]byte(header(`,"x5u":"https://attacker.example/cert"`))), raw([]byte(claims("")))),
		"an embedded key (jwk)":           signSegments(t, private, raw([]byte(header(`,"jwk":`+string(jwkJSON(&private.PublicKey, testKid, "RS256"))))), raw([]byte(claims("")))),
		"an embedded certificate (x5c)":   signSegments(t, private, raw([]byte(header(`,"x5c":["MIIB"]`))), raw([]byte(claims("")))),
		"a typ Clerk does not use (JOSE)": signSegments(t, private, raw([]byte(`{"alg":"RS256","typ":"JOSE","kid":"`+testKid+`"}`)), raw([]byte(claims("")))),
	} {
		t.Run(name, func(t *testing.T) {
			require.NotEqual(t, good, token)
			_, err := jwt.Parse([]byte(token), jwt.WithKey(jwa.RS256, &private.PublicKey), jwt.WithValidate(true))
			require.NoError(t, err, "jwx accepts it")
			_, err = v.Verify(context.Background(), token)
			requireReason(t, err, ReasonInvalid)
			assert.Zero(t, keys.calls.Load(), "refused before any key is looked up")
		})
	}
	_, err := v.Verify(context.Background(), good)
	assert.NoError(t, err, "the same token, spelled plainly, is valid")
}

// signSegments signs the two encoded segments as they are (RS256).
func signSegments(t *testing.T, key *rsa.PrivateKey, header, payload string) string {
	t.Helper()
	signed := header + "." + payload
	digest := sha256.Sum256([]byte(signed))
	signature, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	require.NoError(t, err)
	return signed + "." + base64.RawURLEncoding.EncodeToString(signature)
}

// otherSpelling writes the signature of token with other trailing bits in
// its last character: the same bytes to a lenient base64 decoder.
func otherSpelling(token string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, token[len(token)-1])
	return token[:len(token)-1] + string(alphabet[last^1]) // a 2048-bit signature leaves 4 bits unused
}

// paddedSpelling writes the header and payload of token with base64
// padding: the same bytes to a lenient decoder.
func paddedSpelling(token string) string {
	parts := strings.Split(token, ".")
	for i := range 2 {
		decoded, _ := base64.RawURLEncoding.DecodeString(parts[i])
		parts[i] = base64.URLEncoding.EncodeToString(decoded)
	}
	return strings.Join(parts, ".")
}

// unaligned pads JSON with spaces to a length that base64 pads.
func unaligned(json string) string {
	for len(json)%3 == 0 {
		json += " "
	}
	return json
}
