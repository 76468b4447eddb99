package demo

import (
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWithoutAutosave: the demos' config never persists, and nothing else
// in it changes.
func TestWithoutAutosave(t *testing.T) {
	for name, caddyfile := range map[string]string{
		"admin off":   "{\n\tadmin off\n}\nhttp://localhost:8080 {\n\trespond ok\n}\n",
		"admin as is": "http://localhost:8080 {\n\tclerk_m2m\n\trespond ok\n}\n",
	} {
		t.Run(name, func(t *testing.T) {
			adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
			require.NoError(t, err)
			config, err := withoutAutosave(adapted)
			require.NoError(t, err)

			var got, want map[string]any
			require.NoError(t, json.Unmarshal(config, &got))
			require.NoError(t, json.Unmarshal(adapted, &want))
			admin, _ := got["admin"].(map[string]any)
			assert.Equal(t, map[string]any{"persist": false}, admin["config"])
			delete(admin, "config")
			if len(admin) == 0 {
				delete(got, "admin")
			}
			assert.Equal(t, want, got)
		})
	}
}
