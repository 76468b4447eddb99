package integration

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"hash"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
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
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{a.jwk()}})
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

func (a *attacker) jwk() map[string]any {
	return map[string]any{"kty": "RSA", "kid": "attacker", "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(a.key.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(a.key.E)).Bytes())}
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

// hmacToken signs header and payload with HMAC keyed by secret.
func hmacToken(newHash func() hash.Hash, secret []byte, header, payload string) string {
	signed := b64(header) + "." + b64(payload)
	mac := hmac.New(newHash, secret)
	mac.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func TestAdversarialTokens(t *testing.T) {
	e := start(t, adversarialCaddyfile)
	clerk, caller := e.clerk, e.caller
	other := backendtest.New() // another Clerk instance
	defer other.Close()
	evil := newAttacker(t)

	kid := clerk.KeyID()
	future := time.Now().Add(time.Hour).Unix()
	payload := func(extra string) string {
		return `{"sub":"` + caller.ID + `","exp":` + jsonInt(future) + `,"iat":` + jsonInt(time.Now().Unix()) + extra + `}`
	}
	header := func(fields string) string { return `{"alg":"RS256","typ":"JWT","kid":"` + kid + `"` + fields + `}` }
	signed := func(h, p string) string { return clerk.SignRaw(json.RawMessage(h), json.RawMessage(p)) }
	public := []byte(clerk.PublicKeyPEM())
	hs := func(alg string, newHash func() hash.Hash) string {
		return hmacToken(newHash, public, `{"alg":"`+alg+`","typ":"JWT","kid":"`+kid+`"}`, payload(""))
	}
	require.Equal(t, http.StatusOK, e.rawStatus("/m2m/x", "Bearer "+signed(header(""), payload(""))), "the baseline token is valid")

	cases := map[string][]string{
		"alg none":                        {"Bearer " + b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(payload("")) + "."},
		"alg none, signature kept":        {"Bearer " + signed(`{"alg":"none","typ":"JWT","kid":"`+kid+`"}`, payload(""))},
		"alg empty":                       {"Bearer " + signed(`{"alg":"","typ":"JWT","kid":"`+kid+`"}`, payload(""))},
		"HS256 keyed with the public key": {"Bearer " + hs("HS256", sha256.New)},
		"HS384 keyed with the public key": {"Bearer " + hs("HS384", sha512.New384)},
		"PS256":                           {"Bearer " + signed(`{"alg":"PS256","typ":"JWT","kid":"`+kid+`"}`, payload(""))},
		"ES256":                           {"Bearer " + signed(`{"alg":"ES256","typ":"JWT","kid":"`+kid+`"}`, payload(""))},
		"typ JWE":                         {"Bearer " + signed(`{"alg":"RS256","typ":"JWE","kid":"`+kid+`"}`, payload(""))},
		"typ jose":                        {"Bearer " + signed(`{"alg":"RS256","typ":"JOSE","kid":"`+kid+`"}`, payload(""))},
		"crit":                            {"Bearer " + signed(header(`,"crit":["exp"]`), payload(""))},
		"crit b64":                        {"Bearer " + signed(header(`,"b64":false,"crit":["b64"]`), payload(""))},
		"jku to the attacker":             {"Bearer " + evil.sign(t, `{"alg":"RS256","typ":"JWT","kid":"attacker","jku":"`+evil.url+`"}`, payload(""))},
		"x5u to the attacker":             {"Bearer " + evil.sign(t, `{"alg":"RS256","typ":"JWT","kid":"attacker","x5u":"`+evil.url+`"}`, payload(""))},
		"embedded attacker jwk":           {"Bearer " + evil.sign(t, `{"alg":"RS256","typ":"JWT","kid":"attacker","jwk":`+mustJSON(evil.jwk())+`}`, payload(""))},
		"jku next to Clerk's kid":         {"Bearer " + evil.sign(t, header(`,"jku":"`+evil.url+`"`), payload(""))},
		"kid missing":                     {"Bearer " + signed(`{"alg":"RS256","typ":"JWT"}`, payload(""))},
		"kid empty":                       {"Bearer " + signed(`{"alg":"RS256","typ":"JWT","kid":""}`, payload(""))},
		"kid very long":                   {"Bearer " + signed(`{"alg":"RS256","typ":"JWT","kid":"`+strings.Repeat("k", 4000)+`"}`, payload(""))},
		"kid path-like":                   {"Bearer " + signed(`{"alg":"RS256","typ":"JWT","kid":"../../../../etc/passwd"}`, payload(""))},
		"kid a URL":                       {"Bearer " + signed(`{"alg":"RS256","typ":"JWT","kid":"`+evil.url+`"}`, payload(""))},
		"Clerk's kid, attacker's key":     {"Bearer " + evil.sign(t, header(""), payload(""))},
		"duplicate alg":                   {"Bearer " + signed(`{"alg":"none","alg":"RS256","typ":"JWT","kid":"`+kid+`"}`, payload(""))},
		"duplicate sub":                   {"Bearer " + signed(header(""), `{"sub":"user_1","sub":"`+caller.ID+`","exp":`+jsonInt(future)+`}`)},
		"duplicate exp, escaped":          {"Bearer " + signed(header(""), `{"sub":"`+caller.ID+`","exp":1,"\u0065xp":`+jsonInt(future)+`}`)},
		"exp a string":                    {"Bearer " + signed(header(""), `{"sub":"`+caller.ID+`","exp":"`+jsonInt(future)+`"}`)},
		"exp a past float":                {"Bearer " + signed(header(""), `{"sub":"`+caller.ID+`","exp":1000.5}`)},
		"exp too huge for a float":        {"Bearer " + signed(header(""), `{"sub":"`+caller.ID+`","exp":1e400}`)},
		"exp negative":                    {"Bearer " + signed(header(""), `{"sub":"`+caller.ID+`","exp":-1}`)},
		"exp missing":                     {"Bearer " + signed(header(""), `{"sub":"`+caller.ID+`"}`)},
		"nbf a string":                    {"Bearer " + signed(header(""), payload(`,"nbf":"0"`))},
		"nbf a future float":              {"Bearer " + signed(header(""), payload(`,"nbf":`+jsonInt(future)+`.5`))},
		"nbf huge":                        {"Bearer " + signed(header(""), payload(`,"nbf":1e300`))},
		"iat a string":                    {"Bearer " + signed(header(""), payload(`,"iat":"now"`))},
		"iat in the future":               {"Bearer " + signed(header(""), `{"sub":"`+caller.ID+`","exp":`+jsonInt(future)+`,"iat":`+jsonInt(future)+`}`)},
		"sub missing":                     {"Bearer " + signed(header(""), `{"exp":`+jsonInt(future)+`}`)},
		"sub a number":                    {"Bearer " + signed(header(""), `{"sub":7,"exp":`+jsonInt(future)+`}`)},
		"sub a list of mch_":              {"Bearer " + signed(header(""), `{"sub":["`+caller.ID+`"],"exp":`+jsonInt(future)+`}`)},
		"sub not a machine":               {"Bearer " + signed(header(""), `{"sub":"user_1","exp":`+jsonInt(future)+`}`)},
		"another instance's key":          {"Bearer " + other.MintM2MJWT(other.NewMachine("x"), backendtest.JWTOptions{})},
		"another instance, same kid":      {"Bearer " + other.SignRaw(json.RawMessage(header("")), json.RawMessage(payload("")))},
		"payload not JSON":                {"Bearer " + signed(header(""), `not json`)},
		"payload invalid UTF-8":           {"Bearer " + signed(header(""), "{\"sub\":\""+caller.ID+"\",\"exp\":"+jsonInt(future)+",\"x\":\"\xff\"}")},
		"space inside":                    {"Bearer mt_0123 456789abcdef"},
		"tab after Bearer":                {"Bearer\tmt_0123456789abcdef0123456789abcdef"},
		"NUL byte":                        {"Bearer mt_0123\x00456789abcdef"},
		"invalid UTF-8":                   {"Bearer mt_\xff\xfe\xfd"},
		"16 KiB + 1":                      {"Bearer " + strings.Repeat("a", 16<<10+1)},
		"over 16 KiB, a JWT":              {"Bearer " + signed(header(""), payload(`,"pad":"`+strings.Repeat("x", 12500)+`"`))},
		"two Authorization headers":       {"Bearer " + signed(header(""), payload("")), "Bearer mt_0123456789abcdef0123456789abcdef"},
		"Bearer and two spaces":           {"Bearer  " + signed(header(""), payload(""))},
		"Bearer and nothing":              {"Bearer "},
		"Bearer alone":                    {"Bearer"},
		"Basic":                           {"Basic dXNlcjpwYXNz"},
		"token without scheme":            {signed(header(""), payload(""))},
	}
	// Refused before Caddy's handlers: Go's HTTP server answers 400 to a
	// header with a NUL byte, and 431 to headers beyond Caddy's
	// max_header_bytes (16 KiB by default, plus Go's 4 KiB of slack).
	statuses := map[string]int{"NUL byte": http.StatusBadRequest}
	for name, values := range cases {
		want := http.StatusUnauthorized
		if status, ok := statuses[name]; ok {
			want = status
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
		e.secrets = append(e.secrets, clerk.SecretKey(), e.gateway.SecretKey, caller.SecretKey, other.SecretKey())
		e.assertNoSecretsLogged(8)
	})
}

func jsonInt(n int64) string { return mustJSON(n) }

func mustJSON(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(data)
}
