package verify

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// The benchmarks come in pairs: an operation and the floor it is measured
// against in the same run (the RSA verification every uncached JWT needs, or
// the SHA-256 every cache lookup needs).

func benchToken(b *testing.B) (string, *rsa.PrivateKey) {
	private, _ := signingKeys(b)
	payload := m2mPayload()
	payload["exp"] = time.Now().Add(time.Hour).Unix()
	payload["iat"] = time.Now().Unix()
	payload["nbf"] = time.Now().Unix()
	return sign(b, private, m2mHeader(), payload), private
}

// BenchmarkFloorRSAVerify is SHA-256 plus RSA-2048 PKCS#1 v1.5 verification
// of a real M2M JWT: the least an uncached JWT can cost.
func BenchmarkFloorRSAVerify(b *testing.B) {
	token, private := benchToken(b)
	dot := strings.LastIndexByte(token, '.')
	signed := token[:dot]
	sig, _ := base64.RawURLEncoding.DecodeString(token[dot+1:])
	b.ReportAllocs()
	for b.Loop() {
		digest := sha256.Sum256([]byte(signed))
		if err := rsa.VerifyPKCS1v15(&private.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFloorSHA256 hashes a JWT: the least a cache lookup can cost.
func BenchmarkFloorSHA256(b *testing.B) {
	token, _ := benchToken(b)
	data := []byte(token)
	b.ReportAllocs()
	for b.Loop() {
		_ = sha256.Sum256(data)
	}
}

// BenchmarkClassify tells a credential's type and format, as every
// credential not in the cache needs.
func BenchmarkClassify(b *testing.B) {
	token, _ := benchToken(b)
	for name, credential := range map[string]string{"opaque": "mt_f7f0ba8c3b4843ce7d85fcdd5e71853e", "jwt": token} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := classify(credential); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyM2MJWTUncached verifies JWTs never seen before: in
// turn, four times as many distinct tokens as the cache's doorkeeper
// takes in before it forgets them all, so that none is seen twice.
// Compare with BenchmarkFloorRSAVerify.
func BenchmarkVerifyM2MJWTUncached(b *testing.B) {
	_, private := benchToken(b)
	tokens := make([]string, 4*minDoorkeeperKeys)
	for i := range tokens {
		tokens[i] = sign(b, private, m2mHeader(), with(m2mPayload(), map[string]any{
			"jti": fmt.Sprintf("mt_%04d", i), "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(), "nbf": time.Now().Unix(),
		}))
	}
	pool, err := NewPool(PoolOptions{CacheMaxBytes: 1})
	if err != nil {
		b.Fatal(err)
	}
	v := newVerifier(b, Options{keys: &staticKey{signingKey{id: testKid, public: &private.PublicKey}}, Pool: pool, now: time.Now})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := v.Verify(context.Background(), tokens[i%len(tokens)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkVerifyCached verifies a credential verified before, outside
// the measure: compare with BenchmarkFloorSHA256.
func BenchmarkVerifyCached(b *testing.B) {
	token, private := benchToken(b)
	v := newVerifier(b, Options{MachineSecretKey: testMachineKey, clerk: &fakeClerk{m2m: m2mAnswer(func(a *backend.M2MToken) { a.Expiration = nil })},
		keys: &staticKey{signingKey{id: testKid, public: &private.PublicKey}}, CacheTTL: new(time.Hour), now: time.Now})
	for name, credential := range map[string]string{"jwt": token, "opaque": "mt_f7f0ba8c3b4843ce7d85fcdd5e71853e"} {
		b.Run(name, func(b *testing.B) {
			keep(b, v, credential)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(context.Background(), credential); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkJWXParse is what the straightforward jwx/v2 route costs for the
// same token (parse, verify RS256, validate times): the comparison that made
// this package parse JWTs itself and keep jwx for keys.
func BenchmarkJWXParse(b *testing.B) {
	token, private := benchToken(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := jwt.Parse([]byte(token), jwt.WithKey(jwa.RS256, &private.PublicKey), jwt.WithValidate(true),
			jwt.WithAcceptableSkew(5*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyRequestSession verifies a browser's session verified
// before, from the Authorization header and from the cookies of a browser
// of two apps on one domain (the other app's plain session is decoded to
// choose the cookies, as Clerk's SDK decodes it): what reading the
// cookies adds to a request answered from the cache.
func BenchmarkVerifyRequestSession(b *testing.B) {
	private, other := signingKeys(b)
	payload := sessionPayload()
	payload["exp"], payload["iat"], payload["nbf"] = time.Now().Add(time.Hour).Unix(), time.Now().Unix(), time.Now().Unix()
	session := sign(b, private, sessionHeader(), payload)
	anotherApp := sign(b, other, sessionHeader(), with(payload, map[string]any{"iss": "https://clerk.other.example"}))
	v := newVerifier(b, Options{Accept: []TokenType{SessionToken}, JWTKey: publicPEM(b, private), PublishableKey: testPublishableKey,
		now: time.Now})
	sfx, uat := "_"+cookieSuffix(testPublishableKey), fmt.Sprint(time.Now().Unix()-60)
	for name, header := range map[string]http.Header{
		"header": {"Authorization": {"Bearer " + session}},
		"cookies": {"Cookie": {"theme=dark; __session=" + anotherApp + "; __client_uat=" + uat + "; __session" + sfx + "=" + session +
			"; __client_uat" + sfx + "=" + uat}},
	} {
		b.Run(name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header = header
			if _, err := v.VerifyRequest(r); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.VerifyRequest(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
