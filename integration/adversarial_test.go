package integration

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var adversarialCaddyfile = globals(debugLog) + `
http://{{GATEWAY}} {
	log {
		output file {{LOG}}
	}
	handle /m2m/* {
		clerk_m2m {
			secret_key {{SECRET}}
			machine_secret_key {{GATEWAY_KEY}}
			api_url {{CLERK}}
		}
		respond "through"
	}
	handle /any/* {
		clerk_m2m {
			secret_key {{SECRET}}
			api_url {{CLERK}}
			accept any
		}
		respond "through"
	}
}
`

// attacker is what an attacker controls: an RSA key, and a server that
// would hand it out as a JWKS to anyone who asked.
type attacker struct {
	key   *rsa.PrivateKey
	url   string
	asked atomic.Int32
}

func newAttacker(t *testing.T) *attacker {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	a := &attacker{key: key}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		a.asked.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"keys":[`+a.jwk()+`]}`)
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

// jwk is the attacker's public key as a JWK (rsa.GenerateKey's exponent
// is always 65537, AQAB).
func (a *attacker) jwk() string {
	return `{"kty":"RSA","kid":"attacker","alg":"RS256","use":"sig","e":"AQAB","n":"` + b64(string(a.key.N.Bytes())) + `"}`
}

// sign signs header and payload (JSON text, used verbatim) with the
// attacker's key, RS256.
func (a *attacker) sign(t *testing.T, header, payload string) string {
	signed := b64(header) + "." + b64(payload)
	digest := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, a.key, crypto.SHA256, digest[:])
	require.NoError(t, err)
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestAdversarialTokens sends hostile Authorization headers to both kinds
// of route: what only the HTTP boundary shows (the forms of the header,
// Go's limits on it, no fetch of a URL a token names, nothing of a token
// in the DEBUG log), with a JWT refused at each stage of verification.
// The JWT-level rules themselves are proven by verify's unit tests
// (TestWhatJWXAcceptsIsRefusedHere, TestM2MJWTHeaderRulesNeedNoKey,
// TestM2MJWTSignature, TestM2MJWTTimesAndClaims, TestClassifyJWT).
func TestAdversarialTokens(t *testing.T) {
	e := start(t, adversarialCaddyfile)
	clerk, caller := e.clerk, e.caller
	evil := newAttacker(t)

	kid := clerk.KeyID()
	future := time.Now().Add(time.Hour).Unix()
	payload := func(extra string) string {
		return `{"sub":"` + caller.ID + `","exp":` + fmt.Sprint(future) + `,"iat":` + fmt.Sprint(time.Now().Unix()) + extra + `}`
	}
	header := func(fields string) string { return `{"alg":"RS256","typ":"JWT","kid":"` + kid + `"` + fields + `}` }
	signed := func(h, p string) string { return clerk.SignRaw(json.RawMessage(h), json.RawMessage(p)) }
	require.Equal(t, http.StatusOK, e.rawStatus("/m2m/x", "Bearer "+signed(header(""), payload(""))), "the baseline token is valid")

	cases := map[string][]string{
		"alg none":                    {"Bearer " + b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(payload("")) + "."},
		"Clerk's kid, attacker's key": {"Bearer " + evil.sign(t, header(""), payload(""))},
		"exp missing":                 {"Bearer " + signed(header(""), `{"sub":"`+caller.ID+`"}`)},
		"sub not a machine":           {"Bearer " + signed(header(""), `{"sub":"user_1","exp":`+fmt.Sprint(future)+`}`)},
		"payload not JSON":            {"Bearer " + signed(header(""), `not json`)},
		"jku to the attacker":         {"Bearer " + evil.sign(t, `{"alg":"RS256","typ":"JWT","kid":"attacker","jku":"`+evil.url+`"}`, payload(""))},
		"x5u to the attacker":         {"Bearer " + evil.sign(t, `{"alg":"RS256","typ":"JWT","kid":"attacker","x5u":"`+evil.url+`"}`, payload(""))},
		"embedded attacker jwk":       {"Bearer " + evil.sign(t, `{"alg":"RS256","typ":"JWT","kid":"attacker","jwk":`+evil.jwk()+`}`, payload(""))},
		"jku next to Clerk's kid":     {"Bearer " + evil.sign(t, header(`,"jku":"`+evil.url+`"`), payload(""))},
		"kid a URL":                   {"Bearer " + signed(`{"alg":"RS256","typ":"JWT","kid":"`+evil.url+`"}`, payload(""))},
		"space inside":                {"Bearer mt_0123 456789abcdef"},
		"tab after Bearer":            {"Bearer\tmt_0123456789abcdef0123456789abcdef"},
		"NUL byte":                    {"Bearer mt_0123\x00456789abcdef"},
		"invalid UTF-8":               {"Bearer mt_\xff\xfe\xfd"},
		"16 KiB + 1":                  {"Bearer " + strings.Repeat("a", 16<<10+1)},
		"over 16 KiB, a JWT":          {"Bearer " + signed(header(""), payload(`,"pad":"`+strings.Repeat("x", 12500)+`"`))},
		"two Authorization headers":   {"Bearer " + signed(header(""), payload("")), "Bearer mt_0123456789abcdef0123456789abcdef"},
		"Bearer and two spaces":       {"Bearer  " + signed(header(""), payload(""))},
		"Bearer and nothing":          {"Bearer "},
		"Bearer alone":                {"Bearer"},
		"Basic":                       {"Basic dXNlcjpwYXNz"},
		"token without scheme":        {signed(header(""), payload(""))},
	}
	// Refused before Caddy's handlers: Go's HTTP server answers 400 to a
	// header with a NUL byte, and 431 to headers beyond Caddy's
	// max_header_bytes (16 KiB by default, plus Go's 4 KiB of slack).
	for name, values := range cases {
		want := http.StatusUnauthorized
		if name == "NUL byte" {
			want = http.StatusBadRequest
		}
		for _, path := range []string{"/m2m/x", "/any/x"} {
			t.Run(name+" "+path, func(t *testing.T) {
				assert.Equal(t, want, e.rawStatus(path, values...), "refused, with the right status")
			})
		}
		for _, value := range values {
			e.secrets = append(e.secrets, strings.TrimSpace(strings.TrimPrefix(value, "Bearer")))
		}
	}
	require.Greater(t, len(cases["over 16 KiB, a JWT"][0]), 16<<10+len("Bearer "), "the JWT case must exceed the module's limit")
	t.Run("a mebibyte of token is refused before it reaches the module", func(t *testing.T) {
		status := e.rawStatus("/m2m/x", "Bearer "+strings.Repeat("a", 1<<20))
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, status)
	})
	assert.Zero(t, evil.asked.Load(), "no request ever went to a URL a token named")

	t.Run("no token, secret or fragment of either in the DEBUG log", func(t *testing.T) {
		e.assertNoSecretsLogged(8)
	})
}
