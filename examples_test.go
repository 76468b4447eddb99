package clerkm2m_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// exampleEnv is the environment the examples read, with nothing set that
// a Caddyfile substitutes when adapted ({$VAR:default} takes its default
// only for a variable that is unset).
func exampleEnv(t *testing.T, clerk *backendtest.Server) (secretFile string) {
	t.Helper()
	clearEnv(t)
	secretFile = filepath.Join(t.TempDir(), "clerk_secret_key")
	require.NoError(t, os.WriteFile(secretFile, []byte(clerk.SecretKey()+"\n"), 0o600))
	for name, value := range map[string]string{
		"CLERK_SECRET_KEY": clerk.SecretKey(), "CLERK_MACHINE_SECRET_KEY": "ak_examples", "CLERK_API_URL": clerk.URL,
		"CLERK_JWT_KEY": clerk.PublicKeyPEM(), "GATEWAY_MACHINE_SECRET_KEY": "ak_gateway", "GATEWAY_MACHINE_ID": "mch_gateway",
		"A_MACHINE_SECRET_KEY": "ak_service_a", "B_MACHINE_SECRET_KEY": "ak_service_b", "B_MACHINE_ID": "mch_service_b",
	} {
		t.Setenv(name, value)
	}
	for _, name := range []string{"PORT", "UPSTREAM", "MACHINE_ID", "APP_ORIGIN", "BILLING", "PARTNERS", "APP",
		"BILLING_MACHINE_ID", "CLERK_SECRET_KEY_FILE", "A_SIDECAR", "B_GATEWAY", "B_SERVICE", "TOKEN_FORMAT"} {
		t.Setenv(name, "") // restored after the test...
		require.NoError(t, os.Unsetenv(name))
	}
	t.Setenv("CLERK_SECRET_KEY_FILE", secretFile) // secrets.Caddyfile reads the key from this file
	return secretFile
}

// defaultSecretFile is where secrets.Caddyfile reads the key by default;
// the goldens show it in place of the test's own file.
const defaultSecretFile = "/run/secrets/clerk_secret_key"

// TestExamples keeps every example honest: `caddy fmt` leaves it unchanged,
// it adapts without warnings to the JSON in testdata/examples (its JSON
// form, for those who configure Caddy in JSON), and it provisions and
// validates as `caddy validate` would, with no network call.
// UPDATE_GOLDEN=1 rewrites the JSON files.
func TestExamples(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	secretFile := exampleEnv(t, clerk)
	files, err := filepath.Glob("examples/*Caddyfile")
	require.NoError(t, err)
	files = append(files, "examples/two-services/Caddyfile")
	require.GreaterOrEqual(t, len(files), 7)
	for _, file := range files {
		t.Run(exampleName(file), func(t *testing.T) {
			source, err := os.ReadFile(file)
			require.NoError(t, err)
			assert.Equal(t, string(source), string(caddyfile.Format(source)), "caddy fmt would change it")

			adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(source, map[string]any{"filename": file})
			require.NoError(t, err)
			assert.Empty(t, warnings)
			var pretty bytes.Buffer
			require.NoError(t, json.Indent(&pretty, bytes.ReplaceAll(adapted, []byte(secretFile), []byte(defaultSecretFile)), "", "\t"))
			golden := filepath.Join("testdata", "examples", exampleName(file)+".json")
			if os.Getenv("UPDATE_GOLDEN") != "" {
				require.NoError(t, os.WriteFile(golden, append(pretty.Bytes(), '\n'), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "no JSON golden; run with UPDATE_GOLDEN=1")
			assert.Equal(t, string(want), pretty.String()+"\n")
			assert.NotContains(t, pretty.String(), clerk.SecretKey(), "no key in the adapted JSON")

			var cfg caddy.Config
			require.NoError(t, json.Unmarshal(adapted, &cfg))
			require.NoError(t, caddy.Validate(&cfg))
		})
	}
}

// exampleName is examples/<name>.Caddyfile's or examples/<name>/Caddyfile's
// name.
func exampleName(file string) string {
	if filepath.Base(file) == "Caddyfile" && filepath.Dir(file) != "examples" {
		return filepath.Base(filepath.Dir(file))
	}
	return strings.TrimSuffix(filepath.Base(file), ".Caddyfile")
}

// startExample runs an example as it is, plus test globals, in front of
// the echo upstream, against a fake Clerk.
func startExample(t *testing.T, name string, env map[string]string) *e2e {
	t.Helper()
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	exampleEnv(t, clerk)
	t.Setenv("PORT", "9080")
	t.Setenv("UPSTREAM", strings.TrimPrefix(echoUpstream(t).URL, "http://"))
	for key, value := range env {
		t.Setenv(key, value)
	}
	source, err := os.ReadFile(filepath.Join("examples", name))
	require.NoError(t, err)
	e := &e2e{t: t, clerk: clerk, gateway: clerk.NewMachine("gateway"), caller: clerk.NewMachine("caller"), tester: newTester(t)}
	t.Setenv("CLERK_MACHINE_SECRET_KEY", e.gateway.SecretKey)
	loadConfig(t, e.tester, testGlobals("")+string(source))
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
		req, err := http.NewRequest(http.MethodGet, gatewayURL+"/", nil)
		require.NoError(t, err)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		resp, err := e.tester.Client.Do(req)
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
