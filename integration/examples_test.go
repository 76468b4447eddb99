package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/freeport"
)

// startExample runs an example as it is, but for its global options (the
// test's replace them), in front of the echo upstream, against a fake
// Clerk: the keys come from the environment, as the examples say, and so
// do the variables in vars. name is the example's path under examples/.
func startExample(t *testing.T, name string, vars map[string]string) *env {
	t.Helper()
	e := newEnv(t)
	e.clerk.GrantScopes(e.caller, e.gateway.ID) // for the tokens a sidecar mints
	secretFile := filepath.Join(t.TempDir(), "clerk_secret_key")
	require.NoError(t, os.WriteFile(secretFile, []byte(e.clerk.SecretKey()+"\n"), 0o600))
	for key, value := range map[string]string{
		"CLERK_SECRET_KEY": e.clerk.SecretKey(), "CLERK_MACHINE_SECRET_KEY": e.gateway.SecretKey, "CLERK_API_URL": e.clerk.URL,
		"CLERK_JWT_KEY": e.clerk.PublicKeyPEM(), "CLERK_SECRET_KEY_FILE": secretFile,
		"PORT": strconv.Itoa(httpPort), "UPSTREAM": e.upstream, "BILLING": e.upstream, "PARTNERS": e.upstream, "APP": e.upstream,
		"MACHINE_ID": e.gateway.ID, "BILLING_MACHINE_ID": e.gateway.ID,
		"GATEWAY_MACHINE_SECRET_KEY": e.gateway.SecretKey, "GATEWAY_MACHINE_ID": e.gateway.ID,
		"QUICKSTART_ADDR": gatewayAddress(), "QUICKSTART_HOST": "127.0.0.1", "QUICKSTART_UPSTREAM": e.upstream,
		"A_SIDECAR": freeAddr(t), "B_GATEWAY": gatewayAddress(), "B_SERVICE": e.upstream,
		"A_MACHINE_SECRET_KEY": e.caller.SecretKey, "B_MACHINE_SECRET_KEY": e.gateway.SecretKey, "B_MACHINE_ID": e.gateway.ID,
	} {
		t.Setenv(key, value)
	}
	for key, value := range vars {
		t.Setenv(key, value)
	}
	e.load(globals("") + withoutGlobalOptions(readExample(t, name)))
	return e
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ports, err := freeport.Ports(1)
	require.NoError(t, err)
	return freeport.Addr(ports[0])
}

// readExample reads examples/<name>.
func readExample(t *testing.T, name string) string {
	t.Helper()
	source, err := os.ReadFile(filepath.Join("..", "examples", name))
	require.NoError(t, err)
	return string(source)
}

// globalOptions is a Caddyfile's block of global options.
var globalOptions = regexp.MustCompile(`(?ms)^\{\n.*?^\}\n`)

// withoutGlobalOptions drops a Caddyfile's global options, if any.
func withoutGlobalOptions(caddyfile string) string {
	return globalOptions.ReplaceAllString(caddyfile, "")
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
