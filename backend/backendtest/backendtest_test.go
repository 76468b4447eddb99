package backendtest_test

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// fixedNow is a moment with a millisecond part, to catch seconds/ms mix-ups.
var fixedNow = time.UnixMilli(1_753_743_316_590)

func newServer(t *testing.T) *backendtest.Server {
	t.Helper()
	s := backendtest.New()
	t.Cleanup(s.Close)
	return s
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request; auth is the whole Authorization header ("" = none).
func do(t *testing.T, method, url, auth, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{res.StatusCode, res.Header, b}
}

func bearer(key string) string { return "Bearer " + key }

func verifyBody(token string) string {
	b, _ := json.Marshal(map[string]string{"token": token})
	return string(b)
}

func verify(t *testing.T, s *backendtest.Server, key, token string) response {
	t.Helper()
	return do(t, http.MethodPost, s.URL+"/m2m_tokens/verify", bearer(key), verifyBody(token))
}

// m2mObject decodes a 200 verify answer, checking the wire format.
func m2mObject(t *testing.T, res response) map[string]any {
	t.Helper()
	require.Equal(t, http.StatusOK, res.status, string(res.body))
	assert.Equal(t, []string{"application/json"}, res.header.Values("Content-Type"))
	assert.Regexp(t, `^[0-9a-f]{32}$`, res.header.Get("Clerk-Trace-Id"))
	var obj map[string]any
	d := json.NewDecoder(strings.NewReader(string(res.body)))
	d.UseNumber()
	require.NoError(t, d.Decode(&obj))
	return obj
}

type clerkErrors struct {
	Errors []struct {
		Message     string         `json:"message"`
		LongMessage string         `json:"long_message"`
		Code        string         `json:"code"`
		Meta        map[string]any `json:"meta"`
	} `json:"errors"`
	TraceID string `json:"clerk_trace_id"`
}

// requireClerkError checks res is a Clerk error answer with status and code.
func requireClerkError(t *testing.T, res response, status int, code string) clerkErrors {
	t.Helper()
	require.Equal(t, status, res.status, string(res.body))
	assert.Equal(t, []string{"application/json"}, res.header.Values("Content-Type"))
	var e clerkErrors
	require.NoError(t, json.Unmarshal(res.body, &e), string(res.body))
	require.Len(t, e.Errors, 1)
	assert.Equal(t, code, e.Errors[0].Code)
	assert.NotEmpty(t, e.Errors[0].Message)
	assert.NotEmpty(t, e.Errors[0].LongMessage)
	assert.Regexp(t, `^[0-9a-f]{32}$`, e.TraceID)
	assert.Equal(t, e.TraceID, res.header.Get("Clerk-Trace-Id"))
	return e
}

func ms(t time.Time) json.Number { return json.Number(fmt.Sprint(t.UnixMilli())) }

func TestIdentifiers(t *testing.T) {
	s := newServer(t)
	assert.Regexp(t, `^ins_[A-Za-z0-9]{27}$`, s.InstanceID())
	assert.Regexp(t, `^sk_test_[A-Za-z0-9]+$`, s.SecretKey())
	assert.Equal(t, s.InstanceID(), s.KeyID(), "Clerk's kid is the instance id")
	assert.NotContains(t, s.URL[len("http://"):], "/")

	m := s.NewMachine("worker")
	assert.Regexp(t, `^mch_[A-Za-z0-9]{27}$`, m.ID)
	assert.Regexp(t, `^ak_[0-9a-f]{32}$`, m.SecretKey)
	assert.Equal(t, "worker", m.Name)
	assert.NotEqual(t, m.ID, s.NewMachine("worker").ID)

	token, id := s.CreateM2MToken(m, backendtest.TokenOptions{})
	assert.Regexp(t, `^mt_[0-9a-f]{32}$`, token)
	assert.Regexp(t, `^mt_[0-9a-f]{32}$`, id)
	assert.NotEqual(t, token, id)

	for _, subject := range []string{userID, orgID, m.ID} {
		secret, id := s.CreateAPIKey(subject, backendtest.APIKeyOptions{})
		assert.Regexp(t, `^ak_[A-Za-z0-9]{32,}$`, secret)
		assert.NotRegexp(t, `^ak_[0-9a-f]{32}$`, secret, "never shaped like a machine secret key")
		assert.Regexp(t, `^ak_[0-9a-f]{32}$`, id)
		assert.NotEqual(t, secret, id)
	}
	assert.Panics(t, func() { s.CreateAPIKey("ins_123", backendtest.APIKeyOptions{}) })
	assert.Panics(t, func() { s.CreateAPIKey("", backendtest.APIKeyOptions{}) })

	assert.Regexp(t, `^client_[A-Za-z0-9]{27}$`, s.OAuthClientID())
	assert.Equal(t, s.OAuthClientID(), s.OAuthClientID())
	assert.NotEqual(t, s.OAuthClientID(), newServer(t).OAuthClientID())
	token, id = s.CreateOAuthToken(userID, backendtest.OAuthOptions{})
	assert.Regexp(t, `^oat_[0-9a-f]{32}$`, token)
	assert.Regexp(t, `^oat_[0-9a-f]{32}$`, id)
	assert.NotEqual(t, token, id)
}

func TestVerifyWithInstanceKey(t *testing.T) {
	s := newServer(t)
	s.SetClock(func() time.Time { return fixedNow })
	sender, receiver := s.NewMachine("sender"), s.NewMachine("receiver")
	token, id := s.CreateM2MToken(sender, backendtest.TokenOptions{
		Scopes: []string{receiver.ID},
		Claims: map[string]any{"role": "service", "tier": 2},
	})

	obj := m2mObject(t, verify(t, s, s.SecretKey(), token))
	assert.Equal(t, map[string]any{
		"object":            "machine_to_machine_token",
		"id":                id,
		"subject":           sender.ID,
		"scopes":            []any{receiver.ID},
		"claims":            map[string]any{"role": "service", "tier": json.Number("2")},
		"revoked":           false,
		"revocation_reason": nil,
		"expired":           false,
		"expiration":        ms(fixedNow.Add(time.Hour)),
		"last_used_at":      ms(fixedNow),
		"created_at":        ms(fixedNow),
		"updated_at":        ms(fixedNow),
	}, obj, "no token field in verify answers")

	bare, _ := s.CreateM2MToken(sender, backendtest.TokenOptions{})
	res := verify(t, s, s.SecretKey(), bare)
	assert.Equal(t, []any{}, m2mObject(t, res)["scopes"])
	assert.Contains(t, string(res.body), `"scopes":[]`)
	assert.Contains(t, string(res.body), `"claims":null`)
}

func TestVerifyWithMachineKey(t *testing.T) {
	s := newServer(t)
	sender, receiver, other := s.NewMachine("sender"), s.NewMachine("receiver"), s.NewMachine("other")
	token, id := s.CreateM2MToken(sender, backendtest.TokenOptions{Scopes: []string{receiver.ID}})

	obj := m2mObject(t, verify(t, s, receiver.SecretKey, token))
	assert.Equal(t, id, obj["id"])

	notGranted := requireClerkError(t, verify(t, s, other.SecretKey, token), http.StatusNotFound, "resource_not_found")
	unknown := requireClerkError(t, verify(t, s, other.SecretKey, "mt_"+strings.Repeat("0", 32)), http.StatusNotFound, "resource_not_found")
	assert.Equal(t, "Not found", unknown.Errors[0].Message)
	notGranted.TraceID, unknown.TraceID = "", ""
	assert.Equal(t, unknown, notGranted, "a token not granted to the machine looks unknown")

	requireClerkError(t, verify(t, s, sender.SecretKey, token), http.StatusNotFound, "resource_not_found")
}

func TestVerifyRevokedExpiredAndLastUsedAt(t *testing.T) {
	s := newServer(t)
	s.SetClock(func() time.Time { return fixedNow })
	m := s.NewMachine("m")

	token, id := s.CreateM2MToken(m, backendtest.TokenOptions{})
	s.RevokeM2MToken(id)
	obj := m2mObject(t, verify(t, s, s.SecretKey(), token))
	assert.Equal(t, true, obj["revoked"])
	assert.Equal(t, "revoked by test", obj["revocation_reason"])
	assert.Equal(t, false, obj["expired"])

	expired, _ := s.CreateM2MToken(m, backendtest.TokenOptions{TTL: -time.Minute})
	obj = m2mObject(t, verify(t, s, s.SecretKey(), expired))
	assert.Equal(t, true, obj["expired"])
	assert.Equal(t, false, obj["revoked"])
	assert.Equal(t, ms(fixedNow.Add(-time.Minute)), obj["expiration"])

	forever, _ := s.CreateM2MToken(m, backendtest.TokenOptions{NoExpiry: true})
	obj = m2mObject(t, verify(t, s, s.SecretKey(), forever))
	assert.Nil(t, obj["expiration"])
	assert.Equal(t, false, obj["expired"])

	short, _ := s.CreateM2MToken(m, backendtest.TokenOptions{TTL: time.Second})
	obj = m2mObject(t, verify(t, s, s.SecretKey(), short))
	assert.Equal(t, false, obj["expired"])
	assert.Equal(t, ms(fixedNow), obj["last_used_at"])
	s.SetClock(func() time.Time { return fixedNow.Add(time.Second) })
	obj = m2mObject(t, verify(t, s, s.SecretKey(), short))
	assert.Equal(t, true, obj["expired"], "expired when expiration <= now")
	assert.Equal(t, ms(fixedNow.Add(time.Second)), obj["last_used_at"], "updated on each verify")
	assert.Equal(t, ms(fixedNow), obj["updated_at"])
	s.SetClock(nil)
	assert.Equal(t, true, m2mObject(t, verify(t, s, s.SecretKey(), short))["expired"])
}

// TestVerifyRoutesRejectBadKeys: the M2M token route lets in the instance
// secret key and machine secret keys; the API key and OAuth token routes,
// the instance secret key only.
func TestVerifyRoutesRejectBadKeys(t *testing.T) {
	s := newServer(t)
	m := s.NewMachine("m")
	token, _ := s.CreateM2MToken(m, backendtest.TokenOptions{Scopes: []string{m.ID}})
	apiKey, _ := s.CreateAPIKey(userID, backendtest.APIKeyOptions{})
	oauth, _ := s.CreateOAuthToken(userID, backendtest.OAuthOptions{})
	bodies := map[string]string{"/m2m_tokens/verify": verifyBody(token), apiKeyRoute: bodyOf("secret", apiKey), oauthRoute: bodyOf("access_token", oauth)}
	for _, tc := range []struct {
		name, auth        string
		m2m, instanceOnly string // the code of each kind of route; "" lets the caller in
	}{
		{"no header", "", "unauthorized", "unauthorized"},
		{"basic scheme", "Basic " + base64.StdEncoding.EncodeToString([]byte("a:b")), "unauthorized", "unauthorized"},
		{"no key", "Bearer ", "unauthorized", "unauthorized"},
		{"scheme only", "Bearer", "unauthorized", "unauthorized"},
		{"other instance secret", bearer("sk_test_someoneelse"), "clerk_key_invalid", "clerk_key_invalid"},
		{"live secret", bearer("sk_live_someoneelse"), "clerk_key_invalid", "clerk_key_invalid"},
		{"machine secret", bearer(m.SecretKey), "", "clerk_key_invalid"},
		{"other machine secret", bearer("ak_" + strings.Repeat("a", 32)), "machine_secret_key_invalid", "clerk_key_invalid"},
		{"the API key itself", bearer(apiKey), "machine_secret_key_invalid", "clerk_key_invalid"},
		{"anything else", bearer("hello"), "machine_secret_key_invalid", "clerk_key_invalid"},
		{"instance secret", bearer(s.SecretKey()), "", ""},
	} {
		for route, body := range bodies {
			t.Run(route+" "+tc.name, func(t *testing.T) {
				code := tc.instanceOnly
				if route == "/m2m_tokens/verify" {
					code = tc.m2m
				}
				res := do(t, http.MethodPost, s.URL+route, tc.auth, body)
				if code == "" {
					m2mObject(t, res)
					return
				}
				e := requireClerkError(t, res, http.StatusUnauthorized, code)
				if code == "machine_secret_key_invalid" {
					assert.Equal(t, "The provided Machine Secret Key is invalid. Make sure that your Machine Secret Key is correct.", e.Errors[0].Message)
				}
			})
		}
	}
}

// TestVerifyRoutesValidateBody: each verify route wants a JSON object with
// its one field, a non-empty string (OAuth's under either of its names).
func TestVerifyRoutesValidateBody(t *testing.T) {
	s := newServer(t)
	const m2mRoute = "/m2m_tokens/verify"
	for _, tc := range []struct {
		route, body, code, param string
	}{
		{m2mRoute, "", "bad_request", ""},
		{m2mRoute, "not json", "bad_request", ""},
		{m2mRoute, "null", "bad_request", ""},
		{m2mRoute, `["mt_x"]`, "bad_request", ""},
		{m2mRoute, `{}`, "form_param_missing", "token"},
		{m2mRoute, `{"token":""}`, "form_param_missing", "token"},
		{m2mRoute, `{"token":null}`, "form_param_missing", "token"},
		{m2mRoute, `{"token":42}`, "bad_request", "token"},
		{m2mRoute, `{"secret":"mt_x"}`, "form_param_unknown", "secret"},
		{m2mRoute, `{"token":"mt_x","extra":true}`, "form_param_unknown", "extra"},
		{apiKeyRoute, "", "bad_request", ""},
		{apiKeyRoute, `["ak_x"]`, "bad_request", ""},
		{apiKeyRoute, `{}`, "form_param_missing", "secret"},
		{apiKeyRoute, `{"secret":""}`, "form_param_missing", "secret"},
		{apiKeyRoute, `{"secret":null}`, "form_param_missing", "secret"},
		{apiKeyRoute, `{"secret":42}`, "bad_request", "secret"},
		{apiKeyRoute, `{"token":"ak_x"}`, "form_param_unknown", "token"},
		{apiKeyRoute, `{"secret":"ak_x","name":"x"}`, "form_param_unknown", "name"},
		{oauthRoute, "null", "bad_request", ""},
		{oauthRoute, `{}`, "form_param_missing", "access_token"},
		{oauthRoute, `{"access_token":""}`, "form_param_missing", "access_token"},
		{oauthRoute, `{"secret":""}`, "form_param_missing", "secret"},
		{oauthRoute, `{"access_token":["oat_x"]}`, "bad_request", "access_token"},
		{oauthRoute, `{"secret":true}`, "bad_request", "secret"},
		{oauthRoute, `{"access_token":"oat_x","secret":"oat_x"}`, "bad_request", "secret"},
		{oauthRoute, `{"token":"oat_x"}`, "form_param_unknown", "token"},
	} {
		t.Run(tc.route+" "+tc.body, func(t *testing.T) {
			e := requireClerkError(t, post(t, s, tc.route, tc.body), http.StatusBadRequest, tc.code)
			if tc.param != "" {
				assert.Equal(t, tc.param, e.Errors[0].Meta["param_name"])
			}
		})
	}
}

// TestVersionedAndUnversionedPaths: each verify route answers under both
// its spellings, counted together whichever is asked about, and apart from
// the other routes.
func TestVersionedAndUnversionedPaths(t *testing.T) {
	s := newServer(t)
	token, _ := s.CreateM2MToken(s.NewMachine("m"), backendtest.TokenOptions{})
	apiKey, _ := s.CreateAPIKey(userID, backendtest.APIKeyOptions{})
	oauth, _ := s.CreateOAuthToken(userID, backendtest.OAuthOptions{})
	for route, body := range map[string]string{"/m2m_tokens/verify": verifyBody(token), apiKeyRoute: bodyOf("secret", apiKey), oauthRoute: bodyOf("access_token", oauth)} {
		m2mObject(t, post(t, s, route, body))
		m2mObject(t, post(t, s, "/v1"+route, body))
		assert.Equal(t, 2, s.Calls(route))
		assert.Equal(t, 2, s.Calls("/v1"+route))
	}
	assert.Equal(t, 0, s.Calls("/v1/jwks"))
	assert.Len(t, s.Requests(), 6)

	s.ResetCalls()
	assert.Equal(t, 0, s.Calls("/m2m_tokens/verify"))
	assert.Empty(t, s.Requests())
}

func TestUnknownRouteAndWrongMethod(t *testing.T) {
	s := newServer(t)
	requireClerkError(t, do(t, http.MethodGet, s.URL+"/nope", bearer(s.SecretKey()), ""), http.StatusNotFound, "resource_not_found")
	requireClerkError(t, do(t, http.MethodGet, s.URL+"/jwks", bearer(s.SecretKey()), ""), http.StatusNotFound, "resource_not_found")
	for _, route := range []string{"/m2m_tokens/verify", "/m2m_tokens", apiKeyRoute, oauthRoute} {
		requireClerkError(t, do(t, http.MethodGet, s.URL+route, bearer(s.SecretKey()), ""), http.StatusMethodNotAllowed, "method_not_allowed")
	}
	requireClerkError(t, do(t, http.MethodPost, s.URL+"/v1/jwks", bearer(s.SecretKey()), ""), http.StatusMethodNotAllowed, "method_not_allowed")
	assert.Equal(t, 1, s.Calls("/nope"))
}

func TestJWKSAuthentication(t *testing.T) {
	s := newServer(t)
	m := s.NewMachine("m")
	requireClerkError(t, do(t, http.MethodGet, s.URL+"/v1/jwks", "", ""), http.StatusUnauthorized, "unauthorized")
	requireClerkError(t, do(t, http.MethodGet, s.URL+"/v1/jwks", bearer(m.SecretKey), ""), http.StatusUnauthorized, "clerk_key_invalid")
	requireClerkError(t, do(t, http.MethodGet, s.URL+"/v1/jwks", bearer("sk_test_other"), ""), http.StatusUnauthorized, "clerk_key_invalid")

	private := do(t, http.MethodGet, s.URL+"/v1/jwks", bearer(s.SecretKey()), "")
	require.Equal(t, http.StatusOK, private.status)
	assert.Equal(t, []string{"application/json"}, private.header.Values("Content-Type"))
	assert.NotEmpty(t, private.header.Get("Clerk-Trace-Id"))
	public := do(t, http.MethodGet, s.URL+"/.well-known/jwks.json", "", "")
	require.Equal(t, http.StatusOK, public.status)
	assert.Equal(t, private.body, public.body)

	var set struct{ Keys []map[string]string }
	require.NoError(t, json.Unmarshal(private.body, &set))
	require.Len(t, set.Keys, 1)
	assert.Equal(t, "sig", set.Keys[0]["use"])
	assert.Equal(t, "RSA", set.Keys[0]["kty"])
	assert.Equal(t, "RS256", set.Keys[0]["alg"])
	assert.Equal(t, "AQAB", set.Keys[0]["e"])
	assert.Equal(t, s.KeyID(), set.Keys[0]["kid"])
	assert.Equal(t, 4, s.Calls("/v1/jwks"))
	assert.Equal(t, 1, s.Calls("/.well-known/jwks.json"))
}

// fetchJWKS parses the fake's JWKS with jwx.
func fetchJWKS(t *testing.T, s *backendtest.Server) jwk.Set {
	t.Helper()
	res := do(t, http.MethodGet, s.URL+"/v1/jwks", bearer(s.SecretKey()), "")
	require.Equal(t, http.StatusOK, res.status)
	set, err := jwk.Parse(res.body)
	require.NoError(t, err)
	return set
}

func verifiesWith(set jwk.Set, token string) bool {
	_, err := jws.Verify([]byte(token), jws.WithKeySet(set))
	return err == nil
}

// segments decodes the header and payload of a compact JWS.
func segments(t *testing.T, token string) (header, payload map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	require.Len(t, parts, 3)
	for i, dst := range []*map[string]any{&header, &payload} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		require.NoError(t, err)
		d := json.NewDecoder(strings.NewReader(string(b)))
		d.UseNumber()
		require.NoError(t, d.Decode(dst))
	}
	return header, payload
}

func TestMintM2MJWTOptions(t *testing.T) {
	s := newServer(t)
	s.SetClock(func() time.Time { return fixedNow })
	m := s.NewMachine("m")
	set := fetchJWKS(t, s)

	t.Run("no expiry, no scopes", func(t *testing.T) {
		_, payload := segments(t, s.MintM2MJWT(m, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{NoExpiry: true}}))
		assert.NotContains(t, payload, "exp")
		assert.Equal(t, []any{}, payload["aud"])
		assert.Equal(t, "", payload["scopes"])
	})
	t.Run("expired", func(t *testing.T) {
		_, payload := segments(t, s.MintM2MJWT(m, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{TTL: -time.Hour}}))
		assert.Equal(t, seconds(fixedNow.Add(-time.Hour)), payload["exp"])
	})
	t.Run("category", func(t *testing.T) {
		header, _ := segments(t, s.MintM2MJWT(m, backendtest.JWTOptions{Category: "cl_B7d4PD111AAA"}))
		assert.Equal(t, "cl_B7d4PD111AAA", header["cat"])
		token := s.MintM2MJWT(m, backendtest.JWTOptions{OmitCategory: true})
		header, _ = segments(t, token)
		assert.NotContains(t, header, "cat")
		assert.True(t, verifiesWith(set, token))
	})
	t.Run("header and payload overrides", func(t *testing.T) {
		token := s.MintM2MJWT(m, backendtest.JWTOptions{
			Header:  map[string]any{"typ": "at+jwt", "kid": nil, "x-extra": 1},
			Payload: map[string]any{"sub": "user_123", "iss": nil, "azp": "https://app.example"},
		})
		header, payload := segments(t, token)
		assert.Equal(t, map[string]any{"alg": "RS256", "typ": "at+jwt", "cat": "cl_B7d4PD333AAA", "x-extra": json.Number("1")}, header)
		assert.Equal(t, "user_123", payload["sub"])
		assert.Equal(t, "https://app.example", payload["azp"])
		assert.NotContains(t, payload, "iss")
		assert.True(t, verifyPKCS1(t, s, token, crypto.SHA256))
	})
	t.Run("RS512", func(t *testing.T) {
		token := s.MintM2MJWT(m, backendtest.JWTOptions{Header: map[string]any{"alg": "RS512"}})
		header, _ := segments(t, token)
		assert.Equal(t, "RS512", header["alg"])
		_, err := jws.Verify([]byte(token), jws.WithKey(jwa.RS512, publicKey(t, s)))
		assert.NoError(t, err)
	})
	t.Run("alg none is written verbatim", func(t *testing.T) {
		token := s.MintM2MJWT(m, backendtest.JWTOptions{Header: map[string]any{"alg": "none"}})
		header, _ := segments(t, token)
		assert.Equal(t, "none", header["alg"])
		assert.Equal(t, s.KeyID(), header["kid"])
		assert.True(t, verifyPKCS1(t, s, token, crypto.SHA256))
	})
}

func publicKey(t *testing.T, s *backendtest.Server) *rsa.PublicKey {
	t.Helper()
	block, rest := pem.Decode([]byte(s.PublicKeyPEM()))
	require.NotNil(t, block)
	assert.Equal(t, "PUBLIC KEY", block.Type)
	assert.Empty(t, strings.TrimSpace(string(rest)))
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	require.NoError(t, err)
	rsaPub, ok := pub.(*rsa.PublicKey)
	require.True(t, ok)
	assert.Equal(t, 2048, rsaPub.N.BitLen())
	return rsaPub
}

// verifyPKCS1 checks the signature of a compact JWS by hand.
func verifyPKCS1(t *testing.T, s *backendtest.Server, token string, hash crypto.Hash) bool {
	t.Helper()
	i := strings.LastIndex(token, ".")
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	require.NoError(t, err)
	var digest []byte
	switch hash {
	case crypto.SHA256:
		d := sha256.Sum256([]byte(token[:i]))
		digest = d[:]
	case crypto.SHA384:
		d := sha512.Sum384([]byte(token[:i]))
		digest = d[:]
	}
	return rsa.VerifyPKCS1v15(publicKey(t, s), hash, digest, sig) == nil
}

func TestRotateKey(t *testing.T) {
	s := newServer(t)
	m := s.NewMachine("m")
	oldKid, oldPEM := s.KeyID(), s.PublicKeyPEM()
	oldToken := s.MintM2MJWT(m, backendtest.JWTOptions{})

	s.RotateKey(true)
	newKid := s.KeyID()
	assert.NotEqual(t, oldKid, newKid)
	assert.Regexp(t, `^ins_[A-Za-z0-9]{27}$`, newKid)
	assert.NotEqual(t, oldPEM, s.PublicKeyPEM())
	newToken := s.MintM2MJWT(m, backendtest.JWTOptions{})

	set := fetchJWKS(t, s)
	assert.Equal(t, 2, set.Len())
	_, ok := set.LookupKeyID(oldKid)
	assert.True(t, ok)
	assert.True(t, verifiesWith(set, oldToken))
	assert.True(t, verifiesWith(set, newToken))

	s.RotateKey(false)
	set = fetchJWKS(t, s)
	assert.Equal(t, 1, set.Len())
	_, ok = set.LookupKeyID(s.KeyID())
	assert.True(t, ok)
	assert.False(t, verifiesWith(set, oldToken))
	assert.False(t, verifiesWith(set, newToken))
	assert.True(t, verifiesWith(set, s.MintM2MJWT(m, backendtest.JWTOptions{})))
}

func TestAddJWK(t *testing.T) {
	s := newServer(t)
	enc := `{"kty":"RSA","use":"enc","alg":"RSA-OAEP","kid":"enc-1","n":"sXch","e":"AQAB"}`
	ec := `{"kty":"EC","crv":"P-256","kid":"ec-1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}`
	s.AddJWK(json.RawMessage(enc))
	s.AddJWK(json.RawMessage(ec))

	for _, path := range []string{"/v1/jwks", "/.well-known/jwks.json"} {
		res := do(t, http.MethodGet, s.URL+path, bearer(s.SecretKey()), "")
		var set struct{ Keys []json.RawMessage }
		require.NoError(t, json.Unmarshal(res.body, &set))
		require.Len(t, set.Keys, 3)
		assert.JSONEq(t, enc, string(set.Keys[1]))
		assert.JSONEq(t, ec, string(set.Keys[2]))
	}
	assert.Panics(t, func() { s.AddJWK(json.RawMessage("{")) })
}

func TestSignRaw(t *testing.T) {
	s := newServer(t)
	enc := func(b string) string { return base64.RawURLEncoding.EncodeToString([]byte(b)) }
	t.Run("verbatim bytes", func(t *testing.T) {
		header, payload := `{"alg":"RS256","alg":"RS384", "kid":"x"}`, `{"sub":"mch_a","sub":"mch_b"}`
		token := s.SignRaw(json.RawMessage(header), []byte(payload))
		assert.True(t, strings.HasPrefix(token, enc(header)+"."+enc(payload)+"."), token)
		assert.True(t, verifyPKCS1(t, s, token, crypto.SHA384), "the last alg wins, as in encoding/json")
	})
	t.Run("marshalled values", func(t *testing.T) {
		token := s.SignRaw(map[string]any{"alg": "RS384"}, map[string]any{"n": 1})
		assert.True(t, strings.HasPrefix(token, enc(`{"alg":"RS384"}`)+"."+enc(`{"n":1}`)+"."), token)
		assert.True(t, verifyPKCS1(t, s, token, crypto.SHA384))
		_, err := jws.Verify([]byte(token), jws.WithKey(jwa.RS384, publicKey(t, s)))
		assert.NoError(t, err)
	})
	t.Run("segments as given", func(t *testing.T) {
		token := s.SignSegments("eyJhbGciOiJSUzI1NiJ9", "e30=")
		assert.True(t, strings.HasPrefix(token, "eyJhbGciOiJSUzI1NiJ9.e30=."))
		assert.True(t, verifyPKCS1(t, s, token, crypto.SHA256))
	})
	t.Run("header that is not an object", func(t *testing.T) {
		token := s.SignRaw(json.RawMessage(`"x"`), json.RawMessage(`{}`))
		assert.True(t, verifyPKCS1(t, s, token, crypto.SHA256))
	})
}

func TestFaults(t *testing.T) {
	s := newServer(t)
	token, _ := s.CreateM2MToken(s.NewMachine("m"), backendtest.TokenOptions{})
	call := func(t *testing.T) response { return verify(t, s, s.SecretKey(), token) }
	normal := call(t)
	require.Equal(t, http.StatusOK, normal.status)

	t.Run("status with Retry-After", func(t *testing.T) {
		t.Cleanup(s.ClearFaults)
		s.SetFault(backendtest.Fault{Path: "/m2m_tokens/verify", Status: http.StatusTooManyRequests, RetryAfter: "7"})
		res := call(t)
		requireClerkError(t, res, http.StatusTooManyRequests, "too_many_requests")
		assert.Equal(t, "7", res.header.Get("Retry-After"))
		s.SetFault(backendtest.Fault{Path: "/v1/m2m_tokens/verify", Status: http.StatusServiceUnavailable})
		res = call(t)
		requireClerkError(t, res, http.StatusServiceUnavailable, "service_unavailable")
		assert.Empty(t, res.header.Get("Retry-After"), "SetFault replaced the fault of the same route")
	})
	t.Run("times then clears itself", func(t *testing.T) {
		t.Cleanup(s.ClearFaults)
		s.SetFault(backendtest.Fault{Path: "/m2m_tokens/verify", Status: http.StatusBadGateway, Times: 2})
		assert.Equal(t, http.StatusBadGateway, call(t).status)
		assert.Equal(t, http.StatusBadGateway, call(t).status)
		assert.Equal(t, http.StatusOK, call(t).status)
	})
	t.Run("route and global faults", func(t *testing.T) {
		t.Cleanup(s.ClearFaults)
		s.SetFault(backendtest.Fault{Path: "/v1/jwks", Status: http.StatusInternalServerError})
		assert.Equal(t, http.StatusOK, call(t).status)
		assert.Equal(t, http.StatusInternalServerError, do(t, http.MethodGet, s.URL+"/v1/jwks", bearer(s.SecretKey()), "").status)
		s.SetFault(backendtest.Fault{Status: http.StatusServiceUnavailable})
		assert.Equal(t, http.StatusServiceUnavailable, call(t).status)
		assert.Equal(t, http.StatusInternalServerError, do(t, http.MethodGet, s.URL+"/v1/jwks", "", "").status, "a route's own fault wins")
		s.ClearFaults()
		assert.Equal(t, http.StatusOK, call(t).status)
	})
	t.Run("one credential's faults", func(t *testing.T) {
		t.Cleanup(s.ClearFaults)
		other, _ := s.CreateM2MToken(s.NewMachine("other"), backendtest.TokenOptions{})
		apiKey, _ := s.CreateAPIKey("user_1", backendtest.APIKeyOptions{})
		s.SetFault(backendtest.Fault{Credential: token, Status: http.StatusTooManyRequests, RetryAfter: "3"})
		s.SetFault(backendtest.Fault{Path: "/api_keys/verify", Credential: apiKey, Body: `{}`})
		s.SetFault(backendtest.Fault{Path: "/m2m_tokens/verify", Status: http.StatusBadGateway})
		res := call(t)
		requireClerkError(t, res, http.StatusTooManyRequests, "too_many_requests")
		assert.Equal(t, "3", res.header.Get("Retry-After"), "a credential's fault comes before its route's")
		assert.Equal(t, http.StatusBadGateway, verify(t, s, s.SecretKey(), other).status, "another credential gets the route's fault")
		keyBody, _ := json.Marshal(map[string]string{"secret": apiKey})
		res = do(t, http.MethodPost, s.URL+"/v1/api_keys/verify", bearer(s.SecretKey()), string(keyBody))
		assert.Equal(t, `{}`, string(res.body), "the credential is found under the route's own field")
		res = do(t, http.MethodPost, s.URL+"/m2m_tokens/verify", bearer(s.SecretKey()), verifyBody(apiKey))
		requireClerkError(t, res, http.StatusBadGateway, "bad_gateway")
	})
	t.Run("garbage, truncated, content type", func(t *testing.T) {
		t.Cleanup(s.ClearFaults)
		s.SetFault(backendtest.Fault{Garbage: true})
		res := call(t)
		assert.Equal(t, http.StatusOK, res.status)
		assert.Equal(t, "application/json", res.header.Get("Content-Type"))
		assert.False(t, json.Valid(res.body))

		s.SetFault(backendtest.Fault{Truncated: true})
		res = call(t)
		assert.Equal(t, http.StatusOK, res.status)
		assert.False(t, json.Valid(res.body))
		assert.Len(t, res.body, len(normal.body)/2)
		assert.True(t, strings.HasPrefix(string(normal.body), `{"object":"machine_to_machine_token"`))
		assert.True(t, strings.HasPrefix(string(res.body), `{"object":"machine_to_machine_token"`))

		s.SetFault(backendtest.Fault{ContentType: "text/html; charset=utf-8"})
		res = call(t)
		assert.Equal(t, http.StatusOK, res.status)
		assert.Equal(t, "text/html; charset=utf-8", res.header.Get("Content-Type"))
		assert.True(t, json.Valid(res.body))
	})
	t.Run("body, slow or not", func(t *testing.T) {
		t.Cleanup(s.ClearFaults)
		s.SetFault(backendtest.Fault{Path: "/.well-known/jwks.json", Body: `{"keys":[]}`})
		res := do(t, http.MethodGet, s.URL+"/.well-known/jwks.json", "", "")
		assert.Equal(t, http.StatusOK, res.status)
		assert.Equal(t, `{"keys":[]}`, string(res.body))
		assert.Equal(t, "application/json", res.header.Get("Content-Type"))

		s.SetFault(backendtest.Fault{Body: `{"keys":[]}`, SlowBody: 20 * time.Millisecond})
		start := time.Now()
		res = call(t)
		assert.GreaterOrEqual(t, time.Since(start), 10*20*time.Millisecond)
		assert.Equal(t, `{"keys":[]}`, string(res.body))
	})
	t.Run("delay", func(t *testing.T) {
		t.Cleanup(s.ClearFaults)
		s.SetFault(backendtest.Fault{Delay: 150 * time.Millisecond, Times: 1})
		start := time.Now()
		res := call(t)
		assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
		assert.Equal(t, normal.status, res.status)
		s.SetFault(backendtest.Fault{Delay: 50 * time.Millisecond, Status: http.StatusServiceUnavailable})
		requireClerkError(t, call(t), http.StatusServiceUnavailable, "service_unavailable")
	})
	t.Run("hang ends when the client gives up", func(t *testing.T) {
		t.Cleanup(s.ClearFaults)
		s.SetFault(backendtest.Fault{Hang: true, Times: 1})
		transport := &http.Transport{}
		defer transport.CloseIdleConnections()
		client := &http.Client{Timeout: 100 * time.Millisecond, Transport: transport}
		s.ResetLoad()
		_, err := client.Post(s.URL+"/m2m_tokens/verify", "application/json", strings.NewReader(verifyBody(token)))
		require.Error(t, err)
		// The handler (and its connection) must go away without Close: it
		// sees the client leave, and its request ends.
		require.Eventually(t, func() bool {
			load := s.Load()
			return load.Abandoned == 1 && load.Requests == 0
		}, time.Minute, 5*time.Millisecond, "hanging handler still running")
		assert.Equal(t, http.StatusOK, call(t).status)
	})
}

func TestCloseUnblocksHangs(t *testing.T) {
	for name, f := range map[string]backendtest.Fault{
		"hang":      {Hang: true},
		"delay":     {Delay: time.Hour},
		"slow body": {SlowBody: time.Hour},
	} {
		t.Run(name, func(t *testing.T) {
			s := backendtest.New()
			s.SetFault(f)
			done := make(chan error, 1)
			go func() {
				res, err := http.Post(s.URL+"/m2m_tokens/verify", "application/json", strings.NewReader(`{}`))
				if err == nil {
					_, err = io.ReadAll(res.Body)
					res.Body.Close()
				}
				done <- err
			}()
			require.Eventually(t, func() bool { return s.Calls("/m2m_tokens/verify") == 1 }, 2*time.Second, 5*time.Millisecond)
			closed := make(chan struct{})
			go func() { s.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(2 * time.Second):
				t.Fatal("Close blocked on a hanging request")
			}
			select {
			case err := <-done:
				assert.Error(t, err, "the client must not see a complete answer")
			case <-time.After(2 * time.Second):
				t.Fatal("client still blocked after Close")
			}
		})
	}
}

func TestCloseClientConnections(t *testing.T) {
	s := newServer(t)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	// reused reports whether a JWKS request went over a connection opened
	// before it.
	reused := func() bool {
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, s.URL+"/.well-known/jwks.json", nil)
		require.NoError(t, err)
		res, err := client.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return reused
	}
	assert.False(t, reused(), "the first request opens a connection")
	assert.True(t, reused(), "which is kept alive")
	s.CloseClientConnections()
	assert.False(t, reused(), "a closed connection is not reused")
}

func TestRequestsAreRecorded(t *testing.T) {
	s := newServer(t)
	m := s.NewMachine("m")
	s.SetFault(backendtest.Fault{Status: http.StatusServiceUnavailable, Times: 1})

	req, err := http.NewRequest(http.MethodPost, s.URL+"/v1/m2m_tokens/verify", strings.NewReader(`{"token":"mt_x"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", bearer(m.SecretKey))
	req.Header.Set("Clerk-API-Version", "2025-04-10")
	req.Header.Set("User-Agent", "caddy-clerk-m2m/test")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	do(t, http.MethodGet, s.URL+"/.well-known/jwks.json", "", "")

	reqs := s.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, http.MethodPost, reqs[0].Method)
	assert.Equal(t, "/v1/m2m_tokens/verify", reqs[0].Path)
	assert.Equal(t, bearer(m.SecretKey), reqs[0].Header.Get("Authorization"))
	assert.Equal(t, "2025-04-10", reqs[0].Header.Get("Clerk-API-Version"))
	assert.Equal(t, "caddy-clerk-m2m/test", reqs[0].Header.Get("User-Agent"))
	assert.Equal(t, `{"token":"mt_x"}`, string(reqs[0].Body))
	assert.Equal(t, http.MethodGet, reqs[1].Method)
	assert.Equal(t, "/.well-known/jwks.json", reqs[1].Path)
	assert.Empty(t, reqs[1].Header.Get("Authorization"))

	reqs[0].Body[0] = 'X'
	reqs[0].Header.Set("Authorization", "changed")
	assert.Equal(t, `{"token":"mt_x"}`, string(s.Requests()[0].Body), "Requests returns copies")
	assert.Equal(t, bearer(m.SecretKey), s.Requests()[0].Header.Get("Authorization"))
}

func create(t *testing.T, s *backendtest.Server, path, key, body string) response {
	t.Helper()
	return do(t, http.MethodPost, s.URL+path, bearer(key), body)
}

// created decodes a 201 answer to a create request, checking the wire format.
func created(t *testing.T, s *backendtest.Server, path, key, body string) map[string]any {
	t.Helper()
	res := create(t, s, path, key, body)
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	res.status = http.StatusOK // for m2mObject, which checks the rest
	return m2mObject(t, res)
}

func TestCreateM2MToken(t *testing.T) {
	s := newServer(t)
	s.SetClock(func() time.Time { return fixedNow })
	sender, receiver := s.NewMachine("sender"), s.NewMachine("receiver")
	s.GrantScopes(sender, receiver.ID)
	s.GrantScopes(sender, receiver.ID) // granting twice changes nothing

	t.Run("auth", func(t *testing.T) {
		e := requireClerkError(t, create(t, s, "/m2m_tokens", s.SecretKey(), `{}`), http.StatusUnauthorized, "machine_secret_key_invalid")
		assert.Equal(t, "The provided Machine Secret Key is invalid. Make sure that your Machine Secret Key is correct.", e.Errors[0].Message)
		requireClerkError(t, create(t, s, "/m2m_tokens", "ak_unknown", `{}`), http.StatusUnauthorized, "machine_secret_key_invalid")
		requireClerkError(t, do(t, http.MethodPost, s.URL+"/m2m_tokens", "", `{}`), http.StatusUnauthorized, "unauthorized")
	})
	t.Run("opaque", func(t *testing.T) {
		obj := created(t, s, "/m2m_tokens", sender.SecretKey, `{"claims":{"big":12345678901234567890},"seconds_until_expiration":60}`)
		assert.Regexp(t, `^mt_[0-9a-f]{32}$`, obj["token"])
		assert.Regexp(t, `^mt_[0-9a-f]{32}$`, obj["id"])
		assert.Equal(t, "machine_to_machine_token", obj["object"])
		assert.Equal(t, sender.ID, obj["subject"])
		assert.Equal(t, []any{receiver.ID}, obj["scopes"])
		assert.Equal(t, map[string]any{"big": json.Number("12345678901234567890")}, obj["claims"])
		assert.Equal(t, ms(fixedNow.Add(time.Minute)), obj["expiration"])
		assert.Nil(t, obj["last_used_at"])

		verified := m2mObject(t, verify(t, s, receiver.SecretKey, obj["token"].(string)))
		assert.Equal(t, obj["id"], verified["id"])
		assert.NotContains(t, verified, "token")
	})
	t.Run("defaults", func(t *testing.T) {
		obj := created(t, s, "/v1/m2m_tokens", sender.SecretKey, "")
		assert.Nil(t, obj["expiration"], "no seconds_until_expiration: never expires")
		assert.Nil(t, obj["claims"])
		assert.Regexp(t, `^mt_`, obj["token"])
	})
	t.Run("jwt", func(t *testing.T) {
		obj := created(t, s, "/m2m_tokens", sender.SecretKey, `{"token_format":"jwt","claims":{"role":"svc"},"seconds_until_expiration":300,"min_remaining_ttl_seconds":240}`)
		jwt := obj["token"].(string)
		assert.True(t, verifiesWith(fetchJWKS(t, s), jwt))
		header, payload := segments(t, jwt)
		assert.Equal(t, "cl_B7d4PD333AAA", header["cat"])
		assert.Equal(t, obj["id"], payload["jti"])
		assert.Equal(t, sender.ID, payload["sub"])
		assert.Equal(t, []any{receiver.ID}, payload["aud"])
		assert.Equal(t, receiver.ID, payload["scopes"])
		assert.Equal(t, "svc", payload["role"])
		assert.Equal(t, json.Number(fmt.Sprint(fixedNow.Add(5*time.Minute).Unix())), payload["exp"])
		requireClerkError(t, verify(t, s, s.SecretKey(), jwt), http.StatusNotFound, "resource_not_found")
	})
	t.Run("validation", func(t *testing.T) {
		for _, tc := range []struct{ body, code string }{
			{`{"min_remaining_ttl_seconds":1.5}`, "bad_request"},
			{`{"token_format":"paseto"}`, "bad_request"},
			{`{"token_format":1}`, "bad_request"},
			{`{"seconds_until_expiration":0}`, "bad_request"},
			{`{"seconds_until_expiration":"60"}`, "bad_request"},
			{`{"claims":[1]}`, "bad_request"},
			{`{"min_remaining_ttl_seconds":-1}`, "bad_request"},
			{`{"scopes":["mch_x"]}`, "form_param_unknown"},
			{`[]`, "bad_request"},
		} {
			requireClerkError(t, create(t, s, "/m2m_tokens", sender.SecretKey, tc.body), http.StatusBadRequest, tc.code)
		}
	})
	assert.Equal(t, s.Calls("/v1/m2m_tokens"), s.Calls("/m2m_tokens"))
	assert.Equal(t, 15, s.Calls("/m2m_tokens"))
}

// TestCreateWithMinRemainingTTL: asked for a token with at least some life
// left, Clerk hands back the newest live opaque token of the machine with
// those claims rather than minting another.
func TestCreateWithMinRemainingTTL(t *testing.T) {
	s := newServer(t)
	now := fixedNow
	s.SetClock(func() time.Time { return now })
	m := s.NewMachine("sender")
	mint := func(body string) map[string]any { return created(t, s, "/m2m_tokens", m.SecretKey, body) }
	first := mint(`{"seconds_until_expiration":3600}`)
	now = now.Add(time.Minute)
	second := mint(`{"seconds_until_expiration":3600}`)
	assert.NotEqual(t, first["token"], second["token"], "without min_remaining_ttl_seconds, always a new token")

	now = now.Add(10 * time.Minute) // the second has 50 minutes left
	reused := mint(`{"seconds_until_expiration":3600,"min_remaining_ttl_seconds":3000}`)
	assert.Equal(t, second["token"], reused["token"], "the newest live token")
	assert.Equal(t, second["id"], reused["id"])
	assert.Equal(t, second["expiration"], reused["expiration"])
	fresh := mint(`{"seconds_until_expiration":3600,"min_remaining_ttl_seconds":3001}`)
	assert.NotEqual(t, second["token"], fresh["token"], "not enough life left: a new token")

	now = now.Add(time.Minute)
	other := mint(`{"seconds_until_expiration":3600,"claims":{"job":"sync"},"min_remaining_ttl_seconds":60}`)
	assert.NotEqual(t, fresh["token"], other["token"], "other claims: a new token")
	again := mint(`{"seconds_until_expiration":3600,"claims":{"job":"sync"},"min_remaining_ttl_seconds":60}`)
	assert.Equal(t, other["token"], again["token"])

	s.RevokeM2MToken(again["id"].(string))
	afterRevoke := mint(`{"seconds_until_expiration":3600,"claims":{"job":"sync"},"min_remaining_ttl_seconds":60}`)
	assert.NotEqual(t, again["token"], afterRevoke["token"], "never a revoked token")

	jwt := mint(`{"token_format":"jwt","seconds_until_expiration":3600,"min_remaining_ttl_seconds":60}`)
	assert.Regexp(t, `^eyJ`, jwt["token"], "JWTs are not stored, so never handed back")

	forever := mint(`{}`)
	now = now.Add(24 * time.Hour)
	assert.Equal(t, forever["token"], mint(`{"min_remaining_ttl_seconds":86400}`)["token"], "a token that never expires lives long enough")
}

// expectStatus sends one request and checks its status; unlike do it may
// be called from any goroutine.
func expectStatus(t *testing.T, want int, url, key, body string) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if !assert.NoError(t, err) {
		return
	}
	req.Header.Set("Authorization", bearer(key))
	res, err := http.DefaultClient.Do(req)
	if !assert.NoError(t, err) {
		return
	}
	defer res.Body.Close()
	_, err = io.Copy(io.Discard, res.Body)
	assert.NoError(t, err)
	assert.Equal(t, want, res.StatusCode)
}

func TestConcurrentUse(t *testing.T) {
	s := newServer(t)
	receiver := s.NewMachine("receiver")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			m := s.NewMachine(fmt.Sprint("sender-", i))
			s.GrantScopes(m, receiver.ID)
			for range 10 {
				token, id := s.CreateM2MToken(m, backendtest.TokenOptions{Scopes: []string{receiver.ID}})
				expectStatus(t, http.StatusOK, s.URL+"/m2m_tokens/verify", receiver.SecretKey, verifyBody(token))
				s.RevokeM2MToken(id)
				assert.NotEmpty(t, s.MintM2MJWT(m, backendtest.JWTOptions{}))
				expectStatus(t, http.StatusCreated, s.URL+"/m2m_tokens", m.SecretKey, `{}`)
				secret, id := s.CreateAPIKey(userID, backendtest.APIKeyOptions{})
				expectStatus(t, http.StatusOK, s.URL+apiKeyRoute, s.SecretKey(), bodyOf("secret", secret))
				s.RevokeAPIKey(id)
				oauth, id := s.CreateOAuthToken(userID, backendtest.OAuthOptions{})
				expectStatus(t, http.StatusOK, s.URL+oauthRoute, s.SecretKey(), bodyOf("access_token", oauth))
				s.RevokeOAuthToken(id)
				assert.NotEmpty(t, s.MintOAuthJWT(userID, backendtest.OAuthJWTOptions{}))
				assert.NotEmpty(t, s.MintSessionJWT(userID, backendtest.SessionOptions{}))
				assert.NotEmpty(t, s.MintTemplateJWT(userID, nil))
				s.SetFault(backendtest.Fault{Path: "/nothing", Status: 500})
				_ = s.Calls("/m2m_tokens/verify")
				_ = s.Requests()
			}
			if i == 0 {
				s.RotateKey(true)
				s.SetClock(time.Now)
			}
			_ = s.KeyID() + s.PublicKeyPEM()
		})
	}
	wg.Wait()
	for _, route := range []string{"/m2m_tokens/verify", apiKeyRoute, oauthRoute} {
		assert.Equal(t, 80, s.Calls(route))
	}
}
