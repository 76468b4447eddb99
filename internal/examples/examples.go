// Package examples checks the example Caddyfiles. Each example is checked
// by the tests of the build of Caddy that runs it: the main module's tests
// check those the main build (./cmd/caddy) runs, and the module that builds
// Caddy with the other modules an example's xcaddy line names
// (integration/redis) checks those.
package examples

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// thisModule is the module the examples are for.
const thisModule = "github.com/caddy-clerk/clerk-m2m"

// withModule is a module an xcaddy line builds in.
var withModule = regexp.MustCompile(`--with (\S+)`)

// ExtraModules lists what an example's `xcaddy build` line builds into
// Caddy besides this module, as written (module@version): nothing for an
// example the main build runs, nor for a build of this module from a
// folder (=.).
func ExtraModules(source []byte) []string {
	var modules []string
	for line := range strings.Lines(string(source)) {
		if !strings.Contains(line, "xcaddy build") {
			continue
		}
		for _, with := range withModule.FindAllStringSubmatch(line, -1) {
			if module := strings.FieldsFunc(with[1], isVersionOrPath)[0]; module != thisModule {
				modules = append(modules, with[1])
			}
		}
	}
	return modules
}

// isVersionOrPath tells where the module's path ends in an xcaddy
// --with: at its version (@v1.2.3) or at the folder that replaces it (=.).
func isVersionOrPath(r rune) bool { return r == '@' || r == '=' }

// Name is examples/<name>.Caddyfile's or examples/<name>/Caddyfile's name.
func Name(file string) string {
	if filepath.Base(file) == "Caddyfile" && filepath.Base(filepath.Dir(file)) != "examples" {
		return filepath.Base(filepath.Dir(file))
	}
	return strings.TrimSuffix(filepath.Base(file), ".Caddyfile")
}

// Check keeps an example honest: `caddy fmt` leaves it unchanged; it adapts
// without warnings to the JSON in goldenDir (its JSON form, for those who
// configure Caddy in JSON; UPDATE_GOLDEN=1 rewrites it), where each key of
// shown reads as its value (a test's own file or address, as the example's
// defaults have it) and none of secrets appears; and it provisions and
// validates as `caddy validate` would, with the modules of the test binary.
func Check(t *testing.T, file, goldenDir string, shown map[string]string, secrets ...string) {
	t.Helper()
	source, err := os.ReadFile(file)
	require.NoError(t, err)
	adapted := Adapt(t, string(source), string(source), file)
	var pretty bytes.Buffer
	require.NoError(t, json.Indent(&pretty, adapted, "", "\t"))
	text := pretty.String() + "\n"
	for value, as := range shown {
		text = strings.ReplaceAll(text, value, as)
	}
	golden := filepath.Join(goldenDir, Name(file)+".json")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		require.NoError(t, os.WriteFile(golden, []byte(text), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err, "no JSON golden; run with UPDATE_GOLDEN=1")
	assert.Equal(t, string(want), text)
	for _, secret := range secrets {
		assert.NotContains(t, string(adapted), secret, "no secret in the adapted JSON")
	}
	Validate(t, adapted)
}

// Adapt adapts a Caddyfile as caddy adapt does and returns its JSON,
// checking that caddy fmt leaves what is shown of it (shown: whole, or the
// part of it a document shows) as it is, and that it adapts without a
// warning. filename, if any, is the file it was read from.
func Adapt(t *testing.T, shown, whole, filename string) []byte {
	t.Helper()
	assert.Equal(t, shown, string(caddyfile.Format([]byte(shown))), "caddy fmt would change it")
	var options map[string]any
	if filename != "" {
		options = map[string]any{"filename": filename}
	}
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(whole), options)
	require.NoError(t, err)
	assert.Empty(t, warnings)
	return adapted
}

// Validate loads a JSON configuration as caddy validate does (provisions
// it, starting nothing), with the modules of the test binary.
func Validate(t *testing.T, config []byte) {
	t.Helper()
	var cfg caddy.Config
	require.NoError(t, json.Unmarshal(config, &cfg))
	require.NoError(t, caddy.Validate(&cfg))
}
