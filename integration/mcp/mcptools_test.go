package mcp

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
	"github.com/caddy-clerk/clerk-m2m/internal/oauthcheck"
)

// resourceCase is one configuration of a protected resource, given alike
// to the module and to @clerk/mcp-tools: a publishable key (its prefix,
// and the Frontend API host it names) and the resource's URI.
type resourceCase struct {
	prefix, host, resource string
	scopes                 string // the route's require_scopes; mcp-tools has no such setting
}

// resourceCases cover the forms of publishable keys (development and
// production, padded or not in base64, a loopback host) and of resources
// (with a path, at the origin).
var resourceCases = []resourceCase{
	{"pk_test_", "example-clerk.accounts.dev", "https://mcp.example.com/mcp", "profile email"},
	{"pk_live_", "clerk.example.com", "https://mcp.example.com", ""},
	{"pk_live_", "clerk.acme.io", "https://api.acme.io/v1/tools/mcp", ""},
	{"pk_test_", "127.0.0.1:4000", "https://mcp.example.com/mcp", "email"},
}

// publishableKey is the case's key in the form Clerk's dashboard gives,
// without base64's padding.
func (c resourceCase) publishableKey() string {
	return c.prefix + base64.RawStdEncoding.EncodeToString([]byte(c.host+"$"))
}

// loopback reports whether the key names a Frontend API on loopback.
func (c resourceCase) loopback() bool { return strings.HasPrefix(c.host, "127.") }

// MarshalJSON is the case as mcptools.mjs reads it.
func (c resourceCase) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"publishableKey": c.publishableKey(), "resource": c.resource})
}

// mcpToolsRun is what node/mcptools.mjs reports.
type mcpToolsRun struct {
	Version   string                       `json:"version"`
	Documents []map[string]json.RawMessage `json:"documents"`
	Answers   map[string]struct {
		Status          int    `json:"status"`
		WWWAuthenticate string `json:"wwwAuthenticate"`
		Body            string `json:"body"`
	} `json:"answers"`
}

// compare runs a Caddy that serves each case on a path of its own,
// /case<i>/..., against a fake Clerk, and mcp-tools on the cases given,
// with its Hono adapter set up for the first.
func compare(t *testing.T, cases []resourceCase) (*caddyproc.Process, mcpToolsRun) {
	t.Helper()
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	caddy := caddyproc.Start(t, differentialCaddyfile, "CLERK_SECRET_KEY="+clerk.SecretKey(), "CLERK_API_URL="+clerk.URL)
	var tools mcpToolsRun
	runNode(t, "mcptools.mjs", map[string]any{"documents": cases, "site": cases[0].resource}, &tools)
	return caddy, tools
}

func differentialCaddyfile(p caddyproc.Ports) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin 127.0.0.1:%d\n\tdefault_bind 127.0.0.1\n}\n\nhttp://127.0.0.1:%d {\n", p.Admin, p.HTTP)
	for i, c := range resourceCases {
		scopes := ""
		if c.scopes != "" {
			scopes = "\t\t\trequire_scopes " + c.scopes + "\n"
		}
		fmt.Fprintf(&b, "\thandle_path /case%d/* {\n\t\tclerk_m2m {\n"+
			"\t\t\tpublishable_key %s\n\t\t\taccept oauth_token\n\t\t\tprotected_resource %s\n%s\t\t}\n\t\trespond through\n\t}\n",
			i, c.publishableKey(), c.resource, scopes)
	}
	b.WriteString("\thandle {\n\t\trespond 404\n\t}\n}\n")
	return b.String()
}

// TestMetadataAgainstMCPTools holds the module's protected resource
// metadata to what @clerk/mcp-tools generates for the same publishable
// key and resource: the same resource and authorization server, and every
// other member that differs listed, with the RFC that decides, in the
// README's table of differences (and each member listed there differing).
func TestMetadataAgainstMCPTools(t *testing.T) {
	requireNode(t)
	caddy, tools := compare(t, resourceCases)

	differing := map[string]bool{}
	for i, c := range resourceCases {
		status, body := get(t, fmt.Sprintf("%s/case%d/.well-known/oauth-protected-resource%s", caddy.URL(), i, resourcePath(c.resource)))
		require.Equal(t, http.StatusOK, status, body)
		require.NoError(t, oauthcheck.CheckResourceMetadata([]byte(body)), "the module's document is RFC 9728's")
		var module map[string]json.RawMessage
		require.NoError(t, json.Unmarshal([]byte(body), &module))
		theirs := tools.Documents[i]
		assert.JSONEq(t, string(theirs["resource"]), string(module["resource"]), "the same resource for the same configuration")
		assert.JSONEq(t, `["https://`+c.host+`"]`, string(theirs["authorization_servers"]), c.host)
		if c.loopback() { // a loopback Frontend API has no https to offer
			assert.JSONEq(t, `["http://`+c.host+`"]`, string(module["authorization_servers"]), c.host)
		} else {
			assert.JSONEq(t, string(theirs["authorization_servers"]), string(module["authorization_servers"]), "the same authorization server")
		}
		for name := range joinKeys(module, theirs) {
			if !jsonEqual(module[name], theirs[name]) {
				differing[name] = true
			}
		}
	}
	assert.Error(t, oauthcheck.CheckResourceMetadata(mustJSON(t, tools.Documents[0])), "mcp-tools' document holds members RFC 9728 does not define")

	table, version := differencesTable(t)
	assert.Equal(t, tools.Version, version, "the README's table is of the version the lock file pins")
	assert.ElementsMatch(t, table, slices.Sorted(maps.Keys(differing)),
		"the README lists exactly the members that differ from @clerk/mcp-tools' document")
}

// TestAnswersAgainstMCPTools: where mcp-tools' Hono adapter, as its README
// sets it up, and the module point clients alike, and how they answer
// otherwise, as the README says: the module quotes resource_metadata and
// challenges every refusal; the document at the root names the resource.
func TestAnswersAgainstMCPTools(t *testing.T) {
	requireNode(t)
	caddy, tools := compare(t, resourceCases[:1])
	const metadataURL = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"

	theirs := tools.Answers["noToken"]
	require.Equal(t, http.StatusUnauthorized, theirs.Status)
	_, err := oauthcheck.ParseChallenge(theirs.WWWAuthenticate)
	assert.Error(t, err, "mcp-tools' challenge leaves the URL unquoted: %s", theirs.WWWAuthenticate)
	assert.Equal(t, "Bearer resource_metadata="+metadataURL, theirs.WWWAuthenticate, "it points where the module does")
	challenge := moduleChallenge(t, caddy.URL()+"/case0/mcp", "")
	assert.Equal(t, metadataURL, challenge.Params["resource_metadata"], "quoted, it parses")

	theirs = tools.Answers["refusedToken"]
	assert.Equal(t, http.StatusUnauthorized, theirs.Status)
	assert.Empty(t, theirs.WWWAuthenticate, "mcp-tools challenges no refused token")
	challenge = moduleChallenge(t, caddy.URL()+"/case0/mcp", "oat_refused")
	assert.Equal(t, "invalid_token", challenge.Params["error"])
	assert.Equal(t, metadataURL, challenge.Params["resource_metadata"])

	var root struct{ Resource string }
	require.NoError(t, json.Unmarshal([]byte(tools.Answers["metadataAtRoot"].Body), &root))
	assert.Equal(t, "https://mcp.example.com/", root.Resource, "mcp-tools names the request's origin at the root")
	_, body := get(t, caddy.URL()+"/case0/.well-known/oauth-protected-resource")
	require.NoError(t, json.Unmarshal([]byte(body), &root))
	assert.Equal(t, resourceCases[0].resource, root.Resource, "the module names the resource it protects")
}

// TestMalformedPublishableKeys: mcp-tools makes an authorization server of
// any key; the module refuses the configuration.
func TestMalformedPublishableKeys(t *testing.T) {
	requireNode(t)
	malformed := "pk_test_" + base64.StdEncoding.EncodeToString([]byte("not-a-frontend-api"))
	var tools mcpToolsRun
	runNode(t, "mcptools.mjs", map[string]any{"documents": []map[string]string{{"publishableKey": malformed, "resource": "https://mcp.example.com/mcp"}},
		"site": "https://mcp.example.com/mcp"}, &tools)
	assert.JSONEq(t, `["https://not-a-frontend-api"]`, string(tools.Documents[0]["authorization_servers"]))

	config := filepath.Join(t.TempDir(), "Caddyfile")
	require.NoError(t, os.WriteFile(config, []byte(":8080 {\n\tclerk_m2m {\n\t\tsecret_key sk_test_x\n\t\tpublishable_key "+malformed+
		"\n\t\taccept oauth_token\n\t\tprotected_resource https://mcp.example.com/mcp\n\t}\n}\n"), 0o600))
	out, err := exec.Command(caddyproc.Binary(t), "validate", "--config", config, "--adapter", "caddyfile").CombinedOutput()
	require.Error(t, err, "caddy validate accepted a malformed publishable key")
	assert.Contains(t, string(out), "publishable_key: invalid publishable key")
}

// moduleChallenge POSTs to url, with a bearer token when one is given,
// and returns the module's challenge, which must parse.
func moduleChallenge(t *testing.T, url, token string) oauthcheck.Challenge {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	challenge, err := oauthcheck.ParseChallenge(res.Header.Get("WWW-Authenticate"))
	require.NoError(t, err)
	return challenge
}

// differencesTable reads the README's table of the members of the
// metadata that differ from @clerk/mcp-tools': the members named in its
// first column, and the version its header names.
func differencesTable(t *testing.T) (members []string, version string) {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	header := regexp.MustCompile("(?m)^\\| member \\| `@clerk/mcp-tools` ([0-9.]+) \\|.*\\n\\|[-|]+\\|\\n((?:\\|.*\\n)+)").FindSubmatch(readme)
	require.NotNil(t, header, "no table of members in the README")
	for _, row := range strings.Split(strings.TrimSpace(string(header[2])), "\n") {
		first := strings.Split(row, "|")[1]
		for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(first, -1) {
			members = append(members, m[1])
		}
	}
	return members, string(header[1])
}

// resourcePath is where RFC 9728 puts a resource's metadata after the
// well-known prefix: its path, but for a lone "/".
func resourcePath(resource string) string {
	_, path, _ := strings.Cut(strings.TrimPrefix(resource, "https://"), "/")
	if path == "" {
		return ""
	}
	return "/" + path
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(body)
}

func joinKeys(a, b map[string]json.RawMessage) map[string]bool {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	return keys
}

// jsonEqual compares two JSON values, either of which may be missing.
func jsonEqual(a, b json.RawMessage) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	return data
}
