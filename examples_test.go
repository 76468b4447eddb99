package clerkm2m_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExamples keeps every example honest: it adapts without warnings,
// provisions and validates as `caddy validate` would (with no network),
// and `caddy fmt` leaves it unchanged.
func TestExamples(t *testing.T) {
	clearEnv(t)
	t.Setenv("CLERK_SECRET_KEY", "sk_test_examples")
	t.Setenv("CLERK_MACHINE_SECRET_KEY", "ak_examples")
	t.Setenv("CLERK_API_URL", "http://127.0.0.1:9") // nothing listens: validation must not call it
	files, err := filepath.Glob("examples/*Caddyfile")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			source, err := os.ReadFile(file)
			require.NoError(t, err)
			assert.Equal(t, string(source), string(caddyfile.Format(source)), "caddy fmt would change it")

			adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(source, map[string]any{"filename": file})
			require.NoError(t, err)
			assert.Empty(t, warnings)
			var cfg caddy.Config
			require.NoError(t, json.Unmarshal(adapted, &cfg))
			require.NoError(t, caddy.Validate(&cfg))
		})
	}
}
