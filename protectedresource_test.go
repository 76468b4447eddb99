package clerkm2m

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/oauthcheck"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
)

const (
	mcpResource    = "https://mcp.example.com/mcp"
	mcpMetadataURL = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
)

// publishableKeyOf is a publishable key whose Frontend API is host.
func publishableKeyOf(host string) string {
	return "pk_live_" + base64.StdEncoding.EncodeToString([]byte(host+"$"))
}

// mcpHandler is a handler of OAuth JWTs, verified with no network call,
// that requires the scope mcp:tools, configured by with.
func mcpHandler(t *testing.T, clerk *backendtest.Server, with func(*Handler)) *Handler {
	t.Helper()
	testenv.ClearClerk(t)
	h := &Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, JWTKey: clerk.PublicKeyPEM(),
		PublishableKey: publishableKeyOf("clerk.example.com"), Accept: []string{"oauth_token"},
		RequireScopes: []string{"mcp:tools"}, ProtectedResource: &ProtectedResource{Resource: mcpResource}}
	if with != nil {
		with(h)
	}
	require.NoError(t, provision(t, h))
	return h
}

// roundTrip sends one request through h, and returns the answer and the
// error h returned (the status of a refusal is the error's).
func roundTrip(h *Handler, req *http.Request) (*httptest.ResponseRecorder, error) {
	w := httptest.NewRecorder()
	err := h.ServeHTTP(w, asCaddyWould(req, caddy.NewReplacer()), caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		w.WriteHeader(http.StatusTeapot) // the upstream
		return nil
	}))
	return w, err
}

// statusOfAnswer is the status the request is answered with.
func statusOfAnswer(w *httptest.ResponseRecorder, err error) int {
	var handlerErr caddyhttp.HandlerError
	if errors.As(err, &handlerErr) {
		return handlerErr.StatusCode
	}
	return w.Code
}

// TestResourceMetadataIsServed: the metadata is served, unauthenticated
// and to any origin, at the path RFC 9728 builds from the resource and at
// the root; it holds RFC 9728's members only, of their types.
func TestResourceMetadataIsServed(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	h := mcpHandler(t, clerk, nil)
	for _, path := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} {
		w, err := roundTrip(h, httptest.NewRequest(http.MethodGet, path, nil))
		require.NoError(t, err, path)
		require.Equal(t, http.StatusOK, w.Code, path)
		assert.Equal(t, "application/json", w.Header().Get("Content-Type"))
		assert.Equal(t, "*", w.Header().Get("Access-Control-Allow-Origin"))
		require.NoError(t, oauthcheck.CheckResourceMetadata(w.Body.Bytes()), path)
		assert.JSONEq(t, `{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://clerk.example.com"],`+
			`"scopes_supported":["mcp:tools"],"bearer_methods_supported":["header"]}`, w.Body.String(), path)
	}

	w, err := roundTrip(h, httptest.NewRequest(http.MethodOptions, "/.well-known/oauth-protected-resource/mcp", nil))
	require.NoError(t, err)
	assert.Equal(t, http.StatusNoContent, w.Code, "a CORS preflight")
	assert.Equal(t, "*", w.Header().Get("Access-Control-Allow-Origin"))
	assert.Contains(t, w.Header().Get("Access-Control-Allow-Methods"), "GET")
	assert.Contains(t, w.Header().Get("Access-Control-Allow-Headers"), "MCP-Protocol-Version")

	w, err = roundTrip(h, httptest.NewRequest(http.MethodHead, "/.well-known/oauth-protected-resource/mcp", nil))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, w.Code)
	assert.Empty(t, w.Body.String())

	w, err = roundTrip(h, httptest.NewRequest(http.MethodPost, "/.well-known/oauth-protected-resource/mcp", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, statusOfAnswer(w, err))
	assert.Equal(t, "GET, HEAD, OPTIONS", w.Header().Get("Allow"))

	for _, path := range []string{"/.well-known/oauth-protected-resource/mcp/", "/.well-known/oauth-protected-resource/other", "/mcp"} {
		w, err := roundTrip(h, httptest.NewRequest(http.MethodGet, path, nil))
		assert.Equal(t, http.StatusUnauthorized, statusOfAnswer(w, err), "%s is gated as any other path", path)
	}
}

// TestResourceMetadataFields: where the metadata is for a resource at the
// origin, and what the configuration may set in it.
func TestResourceMetadataFields(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	for _, tc := range []struct {
		name     string
		resource ProtectedResource
		require  []string
		url      string // where the challenges point
		document string
	}{
		{"at the origin", ProtectedResource{Resource: "https://mcp.example.com"}, nil,
			"https://mcp.example.com/.well-known/oauth-protected-resource",
			`{"resource":"https://mcp.example.com","authorization_servers":["https://clerk.example.com"],"bearer_methods_supported":["header"]}`},
		{"at the origin, with its slash", ProtectedResource{Resource: "https://mcp.example.com/"}, nil,
			"https://mcp.example.com/.well-known/oauth-protected-resource",
			`{"resource":"https://mcp.example.com/","authorization_servers":["https://clerk.example.com"],"bearer_methods_supported":["header"]}`},
		{"everything set", ProtectedResource{Resource: "http://127.0.0.1:8080/tools/mcp", AuthorizationServers: []string{"https://auth.example.com"},
			ScopesSupported: []string{"read", "write"}, ResourceName: "Tools", ResourceDocumentation: "https://docs.example.com/mcp"}, []string{"read"},
			"http://127.0.0.1:8080/.well-known/oauth-protected-resource/tools/mcp",
			`{"resource":"http://127.0.0.1:8080/tools/mcp","authorization_servers":["https://auth.example.com"],"scopes_supported":["read","write"],` +
				`"bearer_methods_supported":["header"],"resource_name":"Tools","resource_documentation":"https://docs.example.com/mcp"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mcpHandler(t, clerk, func(h *Handler) { h.ProtectedResource, h.RequireScopes = &tc.resource, tc.require })
			assert.Equal(t, tc.url, h.settings.resource.url)
			assert.JSONEq(t, tc.document, string(h.settings.resource.document))
			assert.NoError(t, oauthcheck.CheckResourceMetadata(h.settings.resource.document))
			assert.Contains(t, h.settings.verify.Audience, tc.resource.Resource, "the resource is an audience")
		})
	}
}

// TestEveryRefusalPointsAtTheMetadata: every 401 and 403 of a protected
// resource carries a challenge that parses as RFC 9110 auth-params, with
// resource_metadata naming the metadata; and that is all that changes:
// the challenge is the one the same route gives without it, and that
// parameter.
func TestEveryRefusalPointsAtTheMetadata(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	gated := mcpHandler(t, clerk, nil)
	plain := mcpHandler(t, clerk, func(h *Handler) { h.ProtectedResource, h.Audience = nil, []string{mcpResource} })
	oauth := func(audience []string, scopes []string, ttl time.Duration) string {
		return "Bearer " + clerk.MintOAuthJWT(testUserID, backendtest.OAuthJWTOptions{OAuthOptions: backendtest.OAuthOptions{
			Audience: audience, Scopes: scopes, TTL: ttl}})
	}
	for _, tc := range []struct {
		name, authorization string
		status              int
		error               string
	}{
		{"no credential", "", http.StatusUnauthorized, ""},
		{"garbage", "Bearer oat_0123456789abcdef0123456789abcdef.x", http.StatusUnauthorized, "invalid_token"},
		{"for another resource", oauth([]string{"https://other.example.com/mcp"}, []string{"mcp:tools"}, 0), http.StatusUnauthorized, "invalid_token"},
		{"for no resource", oauth(nil, []string{"mcp:tools"}, 0), http.StatusUnauthorized, "invalid_token"},
		{"expired", oauth([]string{mcpResource}, []string{"mcp:tools"}, -time.Hour), http.StatusUnauthorized, "invalid_token"},
		{"a type not accepted", "Bearer " + clerk.MintM2MJWT(clerk.NewMachine("caller"), backendtest.JWTOptions{}), http.StatusUnauthorized, "invalid_token"},
		{"without the scope", oauth([]string{mcpResource}, []string{"email"}, 0), http.StatusForbidden, "insufficient_scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/mcp", nil)
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			w, err := roundTrip(gated, req)
			require.Equal(t, tc.status, statusOfAnswer(w, err))
			gatedChallenge := w.Header().Get("WWW-Authenticate")
			challenge, err := oauthcheck.ParseChallenge(gatedChallenge)
			require.NoError(t, err)
			assert.Equal(t, "Bearer", challenge.Scheme)
			assert.Equal(t, mcpMetadataURL, challenge.Params["resource_metadata"])
			assert.Equal(t, tc.error, challenge.Params["error"])
			if tc.status == http.StatusForbidden {
				assert.Equal(t, "mcp:tools", challenge.Params["scope"])
			}

			w, err = roundTrip(plain, req)
			require.Equal(t, tc.status, statusOfAnswer(w, err))
			assert.Equal(t, w.Header().Get("WWW-Authenticate")+`, resource_metadata="`+mcpMetadataURL+`"`, gatedChallenge,
				"nothing else changes")
		})
	}

	req := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	req.Header.Set("Authorization", oauth([]string{mcpResource}, []string{"mcp:tools"}, 0))
	w, err := roundTrip(gated, req)
	require.NoError(t, err)
	assert.Equal(t, http.StatusTeapot, w.Code, "a token for the resource, with the scope, reaches the upstream")
}

const testUserID = "user_2yVd5dVGkLTrDhvYBqm5kLm0jLA"

// TestProtectedResourceConfigurationErrors: what cannot be a protected
// resource is refused when the configuration loads, saying why.
func TestProtectedResourceConfigurationErrors(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	testenv.ClearClerk(t)
	for name, tc := range map[string]struct {
		change func(*Handler)
		want   string
	}{
		"no URI":                {func(h *Handler) { h.ProtectedResource.Resource = "" }, "needs the resource's URI"},
		"plain http":            {func(h *Handler) { h.ProtectedResource.Resource = "http://mcp.example.com/mcp" }, "not an absolute https URL"},
		"relative":              {func(h *Handler) { h.ProtectedResource.Resource = "/mcp" }, "not an absolute https URL"},
		"a query":               {func(h *Handler) { h.ProtectedResource.Resource = mcpResource + "?tenant=a" }, "no credentials, fragment or query"},
		"a fragment":            {func(h *Handler) { h.ProtectedResource.Resource = mcpResource + "#x" }, "no credentials, fragment or query"},
		"credentials":           {func(h *Handler) { h.ProtectedResource.Resource = "https://u:p@mcp.example.com/mcp" }, "no credentials, fragment or query"},
		"unquotable":            {func(h *Handler) { h.ProtectedResource.Resource = `https://mcp"x.example.com/mcp` }, "cannot be quoted"},
		"no server":             {func(h *Handler) { h.PublishableKey = "" }, "set publishable_key"},
		"a bad publishable key": {func(h *Handler) { h.PublishableKey = "pk_test_bm90IGEga2V5" }, "publishable_key:"},
		"a bad server":          {func(h *Handler) { h.ProtectedResource.AuthorizationServers = []string{"clerk.example.com"} }, "authorization_servers:"},
		"bad documentation":     {func(h *Handler) { h.ProtectedResource.ResourceDocumentation = "ftp://docs.example.com" }, "resource_documentation:"},
		"no OAuth tokens":       {func(h *Handler) { h.Accept = []string{"session_token"} }, "add oauth_token to accept"},
		"an unset variable":     {func(h *Handler) { h.ProtectedResource.Resource = "{env.CLERK_M2M_TEST_UNSET}" }, "protected_resource is set to"},
	} {
		t.Run(name, func(t *testing.T) {
			h := &Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, PublishableKey: publishableKeyOf("clerk.example.com"),
				Accept: []string{"oauth_token"}, ProtectedResource: &ProtectedResource{Resource: mcpResource}}
			tc.change(h)
			err := provision(t, h)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestProtectedResourceMakesNoNetworkCall: the authorization server is
// derived from the publishable key, not fetched; loading asks the Frontend
// API nothing.
func TestProtectedResourceMakesNoNetworkCall(t *testing.T) {
	testenv.ClearClerk(t)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls.Add(1) }))
	defer srv.Close()
	h := &Handler{SecretKey: "sk_test_x", APIURL: srv.URL, PublishableKey: publishableKeyOf(strings.TrimPrefix(srv.URL, "http://")),
		Accept: []string{"oauth_token"}, ProtectedResource: &ProtectedResource{Resource: mcpResource}}
	require.NoError(t, provision(t, h))
	var document struct {
		AuthorizationServers []string `json:"authorization_servers"`
	}
	require.NoError(t, json.Unmarshal(h.settings.resource.document, &document))
	assert.Equal(t, []string{srv.URL}, document.AuthorizationServers, "a loopback Frontend API is plain http")
	assert.Zero(t, calls.Load())
}
