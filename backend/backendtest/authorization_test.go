package backendtest_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

const (
	redirectURI = "http://127.0.0.1:9/callback"
	resource    = "https://mcp.example.com/mcp"
	verifier    = "a-code-verifier-of-at-least-43-characters-0123456789"
)

// noRedirects is a client that hands back redirects instead of following
// them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// register registers a client with the token endpoint authentication
// method given, and returns the registration.
func register(t *testing.T, s *backendtest.Server, method string) map[string]any {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"client_name": "test", "redirect_uris": []string{redirectURI}, "token_endpoint_auth_method": method})
	res := do(t, http.MethodPost, s.URL+"/oauth/register", "", string(body))
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	var client map[string]any
	require.NoError(t, json.Unmarshal(res.body, &client))
	return client
}

// approve asks the authorization endpoint, and returns where it sends the
// browser back to.
func approve(t *testing.T, s *backendtest.Server, params url.Values) *url.URL {
	t.Helper()
	res, err := noRedirects.Get(s.URL + "/oauth/authorize?" + params.Encode())
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusFound, res.StatusCode)
	back, err := url.Parse(res.Header.Get("Location"))
	require.NoError(t, err)
	return back
}

// authorizeParams are an authorization request of client for resource,
// with the PKCE challenge of verifier.
func authorizeParams(client map[string]any, scope string) url.Values {
	sum := sha256.Sum256([]byte(verifier))
	return url.Values{"response_type": {"code"}, "client_id": {client["client_id"].(string)}, "redirect_uri": {redirectURI},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
		"state": {"st"}, "scope": {scope}, "resource": {resource}}
}

// exchange posts form to the token endpoint, as a public client.
func exchange(t *testing.T, s *backendtest.Server, form url.Values) (int, map[string]any) {
	t.Helper()
	res, err := http.Post(s.URL+"/oauth/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	require.NoError(t, err)
	defer res.Body.Close()
	var answer map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&answer))
	return res.StatusCode, answer
}

func codeForm(client map[string]any, code string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {redirectURI}, "client_id": {client["client_id"].(string)}, "resource": {resource}}
}

func TestPublishableKeyNamesTheFake(t *testing.T) {
	s := newServer(t)
	key, err := backend.ParsePublishableKey(s.PublishableKey())
	frontend := key.URL()
	require.NoError(t, err)
	assert.Equal(t, s.URL, frontend)
}

func TestAuthorizationServerMetadata(t *testing.T) {
	s := newServer(t)
	res := do(t, http.MethodGet, s.URL+"/.well-known/oauth-authorization-server", "", "")
	require.Equal(t, http.StatusOK, res.status)
	var metadata map[string]any
	require.NoError(t, json.Unmarshal(res.body, &metadata))
	assert.Equal(t, s.URL, metadata["issuer"])
	for field, path := range map[string]string{"authorization_endpoint": "/oauth/authorize", "token_endpoint": "/oauth/token",
		"registration_endpoint": "/oauth/register", "jwks_uri": "/.well-known/jwks.json"} {
		assert.Equal(t, s.URL+path, metadata[field])
	}
	assert.Equal(t, []any{"code"}, metadata["response_types_supported"])
	assert.Equal(t, []any{"S256"}, metadata["code_challenge_methods_supported"])
}

// TestAuthorizationCodeFlow: a public client registers, is approved at
// once, and exchanges the code for an opaque access token that Clerk's
// verify route describes: the user, the client, the scopes asked for, and
// the resource as its audience.
func TestAuthorizationCodeFlow(t *testing.T) {
	s := newServer(t)
	client := register(t, s, "none")
	assert.Nil(t, client["client_secret"], "a public client gets no secret")
	back := approve(t, s, authorizeParams(client, "email profile"))
	assert.Equal(t, "st", back.Query().Get("state"))
	code := back.Query().Get("code")
	require.NotEmpty(t, code)

	status, answer := exchange(t, s, codeForm(client, code))
	require.Equal(t, http.StatusOK, status, answer)
	assert.Equal(t, "Bearer", answer["token_type"])
	assert.Equal(t, "email profile", answer["scope"])
	token := answer["access_token"].(string)
	require.True(t, strings.HasPrefix(token, "oat_"))

	res := do(t, http.MethodPost, s.URL+"/oauth_applications/access_tokens/verify", bearer(s.SecretKey()), `{"access_token":"`+token+`"}`)
	require.Equal(t, http.StatusOK, res.status, string(res.body))
	var verified map[string]any
	require.NoError(t, json.Unmarshal(res.body, &verified))
	assert.Equal(t, s.OAuthUserID(), verified["subject"])
	assert.Equal(t, client["client_id"], verified["client_id"])
	assert.Equal(t, []any{"email", "profile"}, verified["scopes"])
	assert.Equal(t, []any{resource}, verified["aud"])

	status, answer = exchange(t, s, codeForm(client, code))
	assert.Equal(t, http.StatusBadRequest, status, "a code is exchanged once")
	assert.Equal(t, "invalid_grant", answer["error"])
}

// TestAuthorizationOptions: the user, the scopes granted and the format of
// the token are the test's to choose.
func TestAuthorizationOptions(t *testing.T) {
	s := newServer(t)
	s.SetAuthorization(backendtest.AuthorizationOptions{UserID: "user_other", Scopes: []string{}, JWT: true})
	client := register(t, s, "none")
	status, answer := exchange(t, s, codeForm(client, approve(t, s, authorizeParams(client, "email")).Query().Get("code")))
	require.Equal(t, http.StatusOK, status, answer)
	assert.NotContains(t, answer, "scope", "no scope granted")
	payload := jwtPayload(t, answer["access_token"].(string))
	assert.Equal(t, "user_other", payload["sub"])
	assert.Equal(t, []any{resource}, payload["aud"])
	assert.Equal(t, client["client_id"], payload["client_id"])
	assert.Equal(t, "", payload["scope"])
}

func jwtPayload(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	require.Len(t, parts, 3)
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var payload map[string]any
	require.NoError(t, json.Unmarshal(raw, &payload))
	return payload
}

// TestConfidentialClients: a client registered with a secret must
// authenticate at the token endpoint by the method it registered.
func TestConfidentialClients(t *testing.T) {
	s := newServer(t)
	for _, method := range []string{"client_secret_basic", "client_secret_post"} {
		t.Run(method, func(t *testing.T) {
			client := register(t, s, method)
			secret := client["client_secret"].(string)
			tokenRequest := func(authenticate func(*http.Request, url.Values)) int {
				form := codeForm(client, approve(t, s, authorizeParams(client, "")).Query().Get("code"))
				form.Del("client_id")
				req, err := http.NewRequest(http.MethodPost, s.URL+"/oauth/token", nil)
				require.NoError(t, err)
				authenticate(req, form)
				body := form.Encode()
				req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				res, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				res.Body.Close()
				return res.StatusCode
			}
			right := func(req *http.Request, form url.Values) {
				if method == "client_secret_basic" {
					req.SetBasicAuth(client["client_id"].(string), secret)
				} else {
					form.Set("client_id", client["client_id"].(string))
					form.Set("client_secret", secret)
				}
			}
			assert.Equal(t, http.StatusOK, tokenRequest(right))
			assert.Equal(t, http.StatusUnauthorized, tokenRequest(func(*http.Request, url.Values) {}), "no authentication")
			assert.Equal(t, http.StatusUnauthorized, tokenRequest(func(req *http.Request, form url.Values) {
				secret += "x"
				right(req, form)
			}), "a wrong secret")
		})
	}
}

// TestAuthorizationRefusals: what OAuth 2.1 and RFC 8707 refuse, the fake
// refuses.
func TestAuthorizationRefusals(t *testing.T) {
	s := newServer(t)
	client := register(t, s, "none")

	res, err := noRedirects.Get(s.URL + "/oauth/authorize?" + url.Values{"client_id": {"client_unknown"}, "redirect_uri": {redirectURI}}.Encode())
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusBadRequest, res.StatusCode, "an unknown client is never redirected to")
	params := authorizeParams(client, "")
	params.Set("redirect_uri", "https://elsewhere.example.com/callback")
	res, err = noRedirects.Get(s.URL + "/oauth/authorize?" + params.Encode())
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusBadRequest, res.StatusCode, "nor a redirect URI it did not register")

	for name, change := range map[string]func(url.Values){
		"no PKCE":         func(p url.Values) { p.Del("code_challenge") },
		"PKCE plain":      func(p url.Values) { p.Set("code_challenge_method", "plain") },
		"implicit flow":   func(p url.Values) { p.Set("response_type", "token") },
		"relative target": func(p url.Values) { p.Set("resource", "/mcp") },
		"two resources":   func(p url.Values) { p.Add("resource", "https://other.example.com") },
		"fragment in one": func(p url.Values) { p.Set("resource", resource+"#x") },
	} {
		params := authorizeParams(client, "")
		change(params)
		back := approve(t, s, params)
		assert.NotEmpty(t, back.Query().Get("error"), name)
		assert.Empty(t, back.Query().Get("code"), name)
	}

	for _, c := range []struct {
		name, error string
		change      func(url.Values)
	}{
		{"wrong verifier", "invalid_grant", func(f url.Values) { f.Set("code_verifier", verifier+"x") }},
		{"other redirect URI", "invalid_grant", func(f url.Values) { f.Set("redirect_uri", "http://127.0.0.1:9/other") }},
		{"other resource", "invalid_target", func(f url.Values) { f.Set("resource", "https://other.example.com/mcp") }},
		{"other client", "invalid_client", func(f url.Values) { f.Set("client_id", register(t, s, "none")["client_id"].(string)) }},
		{"refresh token grant", "unsupported_grant_type", func(f url.Values) { f.Set("grant_type", "refresh_token") }},
		{"unknown code", "invalid_grant", func(f url.Values) { f.Set("code", "code_unknown") }},
	} {
		form := codeForm(client, approve(t, s, authorizeParams(client, "")).Query().Get("code"))
		c.change(form)
		_, answer := exchange(t, s, form)
		assert.Equal(t, c.error, answer["error"], c.name)
		assert.NotContains(t, answer, "access_token", c.name)
	}
}
