package clerkm2m

import (
	"bytes"
	"encoding/json"
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
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
)

// exampleEnv is the environment the examples read, with nothing set that
// a Caddyfile substitutes when adapted ({$VAR:default} takes its default
// only for a variable that is unset).
func exampleEnv(t *testing.T, clerk *backendtest.Server) (secretFile string) {
	t.Helper()
	testenv.ClearClerk(t)
	secretFile = filepath.Join(t.TempDir(), "clerk_secret_key")
	require.NoError(t, os.WriteFile(secretFile, []byte(clerk.SecretKey()+"\n"), 0o600))
	for name, value := range map[string]string{
		"CLERK_SECRET_KEY": clerk.SecretKey(), "CLERK_MACHINE_SECRET_KEY": "ak_examples", "CLERK_API_URL": clerk.URL,
		"CLERK_JWT_KEY": clerk.PublicKeyPEM(), "GATEWAY_MACHINE_SECRET_KEY": "ak_gateway", "GATEWAY_MACHINE_ID": "mch_gateway",
		"A_MACHINE_SECRET_KEY": "ak_service_a", "B_MACHINE_SECRET_KEY": "ak_service_b", "B_MACHINE_ID": "mch_service_b",
	} {
		t.Setenv(name, value)
	}
	clearAdaptVariables(t)
	t.Setenv("CLERK_SECRET_KEY_FILE", secretFile) // secrets.Caddyfile reads the key from this file
	return secretFile
}

// clearAdaptVariables unsets, for the test, the variables the examples
// substitute when adapted, so that they adapt with their defaults.
func clearAdaptVariables(t *testing.T) {
	t.Helper()
	for _, name := range []string{"PORT", "UPSTREAM", "MACHINE_ID", "APP_ORIGIN", "BILLING", "PARTNERS", "APP",
		"BILLING_MACHINE_ID", "CLERK_SECRET_KEY_FILE", "CADDY_CLUSTER_STORAGE", "A_SIDECAR", "B_GATEWAY", "B_SERVICE", "TOKEN_FORMAT"} {
		t.Setenv(name, "") // restored after the test...
		require.NoError(t, os.Unsetenv(name))
	}
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
