package demo

import (
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestIsolated: the demos' config never persists, keeps its data in the
// folder given unless it names a storage, and nothing else in it changes.
func TestIsolated(t *testing.T) {
	for name, caddyfile := range map[string]string{
		"admin off":   "{\n\tadmin off\n}\nhttp://localhost:8080 {\n\trespond ok\n}\n",
		"admin as is": "http://localhost:8080 {\n\tclerk_m2m\n\trespond ok\n}\n",
		"own storage": "{\n\tstorage file_system /var/lib/caddy-cluster\n}\nhttp://localhost:8080 {\n\trespond ok\n}\n",
	} {
		t.Run(name, func(t *testing.T) {
			adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
			require.NoError(t, err)
			config, err := isolated(adapted, "/tmp/demo-data")
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
			if want["storage"] == nil {
				assert.Equal(t, map[string]any{"module": "file_system", "root": "/tmp/demo-data"}, got["storage"])
				delete(got, "storage")
			}
			assert.Equal(t, want, got)
		})
	}
}
