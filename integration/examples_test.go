package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// startExample runs an example as it is, plus test globals, in front of
// the echo upstream, against a fake Clerk: the keys come from the
// environment, as the examples say, and so do the variables in vars.
func startExample(t *testing.T, name string, vars map[string]string) *env {
	t.Helper()
	e := newEnv(t)
	for key, value := range map[string]string{
		"CLERK_SECRET_KEY": e.clerk.SecretKey(), "CLERK_MACHINE_SECRET_KEY": e.gateway.SecretKey, "CLERK_API_URL": e.clerk.URL,
		"CLERK_JWT_KEY": e.clerk.PublicKeyPEM(), "PORT": strconv.Itoa(httpPort), "UPSTREAM": e.upstream,
	} {
		t.Setenv(key, value)
	}
	for key, value := range vars {
		t.Setenv(key, value)
	}
	source, err := os.ReadFile(filepath.Join("..", "examples", name))
	require.NoError(t, err)
	e.load(globals("") + string(source))
	return e
}

func TestProblemDetailsExample(t *testing.T) {
	e := startExample(t, "problem-details.Caddyfile", nil)
	for authorization, want := range map[string]map[string]any{
		"": {"type": "https://errors.example.com/token_missing", "title": "Unauthorized", "status": 401.0,
			"detail": "Send a Clerk credential: Authorization: Bearer <token>."},
		"Bearer mt_0123456789abcdef0123456789abcdef": {"type": "https://errors.example.com/token_invalid", "status": 401.0,
			"title": "Unauthorized", "detail": "The credential is not valid for this service."},
		"Bearer ak_x": {"type": "https://errors.example.com/token_type_not_accepted", "status": 401.0,
			"title": "Unauthorized", "detail": "This service does not accept this kind of credential."},
	} {
		req, err := http.NewRequest(http.MethodGet, gatewayURL("/"), nil)
		require.NoError(t, err)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		resp, err := e.client.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
		assert.NotEmpty(t, resp.Header.Get("WWW-Authenticate"))
		var problem map[string]any
		require.NoError(t, json.Unmarshal(body, &problem), "%s", body)
		assert.Equal(t, want, problem)
	}
}

func TestCORSExample(t *testing.T) {
	e := startExample(t, "cors.Caddyfile", map[string]string{"APP_ORIGIN": "https://app.example.com"})
	resp, _ := e.send("/invoices", func(req *http.Request) {
		req.Method = http.MethodOptions
		req.Header.Set("Origin", "https://app.example.com")
		req.Header.Set("Access-Control-Request-Method", "POST")
	})
	assert.Equal(t, http.StatusNoContent, resp.StatusCode, "a preflight needs no credential")
	assert.Equal(t, "https://app.example.com", resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Contains(t, resp.Header.Get("Access-Control-Allow-Headers"), "Authorization")

	resp, _ = e.request("/invoices")
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Equal(t, "https://app.example.com", resp.Header.Get("Access-Control-Allow-Origin"), "the app can read the 401")

	user := "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr"
	session := e.clerk.MintSessionJWT(user, backendtest.SessionOptions{AuthorizedParty: "https://app.example.com"})
	resp, seen := e.send("/invoices", func(req *http.Request) {
		req.AddCookie(&http.Cookie{Name: "__session", Value: session})
		req.AddCookie(&http.Cookie{Name: "__client_uat", Value: "1700000000"})
	})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, user, seen["X-Clerk-User-Id"])
}
