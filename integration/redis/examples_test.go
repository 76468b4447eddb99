package redis

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
	"github.com/caddy-clerk/clerk-m2m/internal/examples"
	"github.com/caddy-clerk/clerk-m2m/internal/readme"
)

// TestTheExamplesOnRedis checks the examples whose xcaddy line builds in
// other modules, which the main module's tests leave to this one: this
// build of Caddy has each module at the version the line names; the
// example passes examples.Check (its JSON form in testdata/examples,
// validated against a live Redis; UPDATE_GOLDEN=1 rewrites it); and, run
// as it is on Redis, it lets a valid credential through with forged
// X-Clerk-* headers dropped, and refuses a request without one.
func TestTheExamplesOnRedis(t *testing.T) {
	f := newFleet(t)
	files, err := filepath.Glob("../../examples/*Caddyfile")
	require.NoError(t, err)
	built := builtModules(t)
	upstream := echoUpstream(t)
	env := []string{"CLERK_SECRET_KEY=" + f.clerk.SecretKey(), "CLERK_MACHINE_SECRET_KEY=" + f.service.SecretKey,
		"CLERK_API_URL=" + f.clerk.URL, "REDIS_ADDRESS=" + f.redis.address()}
	// The examples adapted and validated in this process read the same,
	// and take their defaults for the rest, as their JSON shows them.
	for _, variable := range append(env, "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir()) {
		name, value, _ := strings.Cut(variable, "=")
		t.Setenv(name, value)
	}
	for _, name := range []string{"PORT", "UPSTREAM", "MACHINE_ID", "RATE_LIMIT_EVENTS", "REDIS_PASSWORD", "CLERK_JWT_KEY", "CLERK_PUBLISHABLE_KEY"} {
		t.Setenv(name, "") // restored after the test...
		require.NoError(t, os.Unsetenv(name))
	}
	checked := 0
	for _, file := range files {
		source, err := os.ReadFile(file)
		require.NoError(t, err)
		modules := examples.ExtraModules(source)
		if len(modules) == 0 {
			continue // the main module's tests check it
		}
		checked++
		t.Run(examples.Name(file), func(t *testing.T) {
			for _, module := range modules {
				assert.Contains(t, built, module, "the xcaddy line's module, in the build")
			}
			examples.Check(t, file, "../../testdata/examples", map[string]string{f.redis.address(): "127.0.0.1:6379"},
				f.clerk.SecretKey(), f.service.SecretKey)
			validatesWithoutLayoutWarnings(t, string(source))

			gateway := caddyproc.StartBinary(t, caddyproc.BinaryOf(t, redisCaddy), func(p caddyproc.Ports) string { return withTestGlobals(string(source), p) },
				append(env, "UPSTREAM="+upstream, "MACHINE_ID="+f.service.ID, "RATE_LIMIT_EVENTS=1")...)
			token := f.token(f.callerA)
			status, seen := sendForged(t, f.client, gateway, token)
			require.Equal(t, http.StatusOK, status)
			assert.Equal(t, map[string]string{"X-Clerk-Machine-Id": f.callerA.ID}, seen,
				"only the gateway's identity header, no forged one and no Authorization, reach the service")
			again, _ := sendForged(t, f.client, gateway, token)
			if strings.Contains(string(source), "rate_limit {") {
				assert.Equal(t, http.StatusTooManyRequests, again, "the machine's budget (RATE_LIMIT_EVENTS=1) is spent")
			} else {
				assert.Equal(t, http.StatusOK, again)
			}

			anonymous, _ := gateway.Get(t, "/", "")
			assert.Equal(t, http.StatusUnauthorized, anonymous.StatusCode)
		})
	}
	assert.GreaterOrEqual(t, checked, 2, "fleet-redis and rate-limit")
}

// TestTheREADMEsCaddyfilesOnRedis checks the README's Caddyfiles whose
// xcaddy line builds in other modules, which the main module's README test
// leaves to this one: caddy fmt leaves each as it is, it adapts without a
// warning, and this build's caddy validate loads it, against a live Redis,
// without a layout warning.
func TestTheREADMEsCaddyfilesOnRedis(t *testing.T) {
	f := newFleet(t)
	for name, value := range map[string]string{"CLERK_MACHINE_SECRET_KEY": f.service.SecretKey, "CLERK_SECRET_KEY": f.clerk.SecretKey(),
		"CLERK_API_URL": f.clerk.URL, "REDIS_ADDRESS": f.redis.address(), "REDIS_PASSWORD": "",
		"XDG_DATA_HOME": t.TempDir(), "XDG_CONFIG_HOME": t.TempDir()} {
		t.Setenv(name, value)
	}
	blocks, err := readme.Read("../../README.md")
	require.NoError(t, err)
	checked := 0
	for _, block := range blocks {
		text, ok := block.Caddyfile()
		if !ok || len(examples.ExtraModules([]byte(block.Text))) == 0 {
			continue // the main module's README test checks it
		}
		checked++
		t.Run(fmt.Sprintf("line %d", block.Line), func(t *testing.T) {
			examples.Adapt(t, block.Text, text, "")
			validatesWithoutLayoutWarnings(t, text)
		})
	}
	assert.GreaterOrEqual(t, checked, 2, "the fleet on Redis and the budget per machine")
}

// validatesWithoutLayoutWarnings runs this build's caddy validate on a
// Caddyfile, with the test's environment, and checks that it passes
// without a warning of the clerk_m2m app: no clerk_m2m that cannot gate
// what it seems to, no sidecar that others can reach.
func validatesWithoutLayoutWarnings(t *testing.T, source string) {
	t.Helper()
	dir := t.TempDir()
	config := filepath.Join(dir, "Caddyfile")
	require.NoError(t, os.WriteFile(config, []byte(source), 0o600))
	cmd := exec.CommandContext(t.Context(), caddyproc.BinaryOf(t, redisCaddy), "validate", "--config", config, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for line := range strings.Lines(string(out)) {
		assert.False(t, strings.Contains(line, `"level":"warn"`) && strings.Contains(line, `"logger":"clerk_m2m"`), "caddy validate warns: %s", line)
	}
	assert.Contains(t, string(out), "Valid configuration")
}

// TestTheREADMEsXcaddyLinesNameWhatThisSuiteBuilds: every module, at
// every version, that an xcaddy line of the README adds is in the Caddy
// this suite tests.
func TestTheREADMEsXcaddyLinesNameWhatThisSuiteBuilds(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	modules := examples.ExtraModules(readme)
	require.NotEmpty(t, modules, "the README's fleet on Redis")
	built := builtModules(t)
	for _, module := range modules {
		assert.Contains(t, built, module)
	}
}

// sendForged sends token to gateway with forged X-Clerk-* headers, and
// returns the answer's status and, for a 200, the headers the service saw.
func sendForged(t *testing.T, client *http.Client, gateway *caddyproc.Process, token string) (int, map[string]string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, gateway.URL()+"/", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Clerk-Machine-Id", "mch_forged")
	req.Header.Set("x-clerk-role", "admin")
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var seen map[string]string
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&seen))
	}
	return resp.StatusCode, seen
}

// builtModules lists the modules of the Caddy the tests run, as
// module@version (go version -m).
func builtModules(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "version", "-m", caddyproc.BinaryOf(t, redisCaddy)).Output()
	require.NoError(t, err)
	var modules []string
	for _, dep := range regexp.MustCompile(`(?m)^\s+dep\s+(\S+)\s+(\S+)`).FindAllStringSubmatch(string(out), -1) {
		modules = append(modules, dep[1]+"@"+dep[2])
	}
	return modules
}

// withTestGlobals is an example with the test's global options added to
// its own: the admin endpoint and the site on the test's ports, every
// listener on loopback, no autosave.
func withTestGlobals(example string, p caddyproc.Ports) string {
	globals := fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\thttp_port %d\n\tdefault_bind 127.0.0.1\n\tpersist_config off\n", p.Admin, p.HTTP)
	example = strings.Replace(example, "\n{\n", "\n"+globals, 1)
	return regexp.MustCompile(`\{\$PORT(:[^}]*)?\}`).ReplaceAllString(example, strconv.Itoa(p.HTTP))
}

// echoUpstream answers with the X-Clerk-* and Authorization headers it
// received, as JSON, and returns its address.
func echoUpstream(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen := map[string]string{}
		for name, values := range r.Header {
			if strings.HasPrefix(name, "X-Clerk-") || name == "Authorization" {
				seen[name] = strings.Join(values, "|")
			}
		}
		_ = json.NewEncoder(w).Encode(seen)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}
