// Package mcp proves examples/mcp.Caddyfile with the official MCP SDK on
// both ends: its Streamable HTTP server, which has no auth code, behind
// the Caddy that ./cmd/caddy builds, and its client in front, given only
// the gateway's URL, against the fake Clerk as the authorization server.
// It also holds the module's protected resource metadata to Clerk's
// @clerk/mcp-tools for what both should say alike. The npm packages are
// pinned by node/package-lock.json; `npm ci --prefix integration/mcp/node`
// installs them.
package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
	"github.com/caddy-clerk/clerk-m2m/internal/freeport"
	"github.com/caddy-clerk/clerk-m2m/internal/oauthcheck"
	"github.com/caddy-clerk/clerk-m2m/internal/testproc"
)

// nodeDir holds the Node side: package.json, its lock file, the scripts.
const nodeDir = "node"

// nodeTimeout bounds one run of a Node script.
const nodeTimeout = 60 * time.Second

// requireNode skips the test when Node or the pinned packages are missing,
// saying how to install them, and fails instead under CI=true, where
// .ci/run installs them. Tests never install anything themselves.
func requireNode(t *testing.T) {
	t.Helper()
	problem := ""
	if _, err := exec.LookPath("node"); err != nil {
		problem = "node is not installed (Node 20 or later runs the MCP SDK)"
	} else if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "@modelcontextprotocol", "sdk", "package.json")); err != nil {
		problem = "the MCP SDK is not installed: run `npm ci --prefix integration/mcp/node` (bash .ci/run does)"
	}
	if problem == "" {
		problem = stalePackages()
	}
	if problem == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("the MCP suite cannot run: %s", problem)
	}
	t.Skipf("skipping the MCP suite: %s", problem)
}

// stalePackages says which installed package is not the version
// package.json pins, if any.
func stalePackages() string {
	var manifest struct{ Dependencies map[string]string }
	data, err := os.ReadFile(filepath.Join(nodeDir, "package.json"))
	if err == nil {
		err = json.Unmarshal(data, &manifest)
	}
	if err != nil {
		return err.Error()
	}
	for name, pinned := range manifest.Dependencies {
		var installed struct{ Version string }
		data, err := os.ReadFile(filepath.Join(nodeDir, "node_modules", name, "package.json"))
		if err == nil {
			err = json.Unmarshal(data, &installed)
		}
		if err != nil || installed.Version != pinned {
			return fmt.Sprintf("%s %s is pinned, not installed: run `npm ci --prefix integration/mcp/node`", name, pinned)
		}
	}
	return ""
}

// runNode runs a script of nodeDir with input as JSON on its standard
// input, and decodes the JSON it prints into out.
func runNode(t *testing.T, script string, input, out any) {
	t.Helper()
	data, err := json.Marshal(input)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir, cmd.Stdin = nodeDir, bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	require.NoError(t, err, "node %s: %s", script, stderr.String())
	require.NoError(t, json.Unmarshal(stdout, out), "node %s printed %s", script, stdout)
}

// startUpstream runs the MCP server on a loopback port, and returns its
// address.
func startUpstream(t *testing.T) string {
	t.Helper()
	var address string
	proc, err := freeport.Retry(1, func(ports []int) (*testproc.Process, error) {
		address = freeport.Addr(ports[0])
		cmd := exec.Command("node", "server.mjs")
		cmd.Dir, cmd.Env = nodeDir, append(os.Environ(), "PORT="+strconv.Itoa(ports[0]))
		return testproc.Start("mcp server", cmd, listening(address), 30*time.Second)
	})
	require.NoError(t, err)
	t.Cleanup(proc.Stop)
	return address
}

// listening is a readiness check: address takes connections.
func listening(address string) func() bool {
	return func() bool {
		conn, err := net.DialTimeout("tcp", address, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}
}

// gateway is examples/mcp.Caddyfile running in front of an upstream.
type gateway struct {
	url      string // the MCP server's URL, as clients are given it
	resource string // the resource's URI: the same
}

// startExample runs examples/mcp.Caddyfile as it is, with the values of
// the variables it reads, on loopback, in front of upstream, against
// clerk.
func startExample(t *testing.T, clerk *backendtest.Server, upstream string) gateway {
	t.Helper()
	example, err := os.ReadFile(filepath.Join("..", "..", "examples", "mcp.Caddyfile"))
	require.NoError(t, err)
	var g gateway
	caddyproc.Start(t, func(p caddyproc.Ports) string {
		g.url = fmt.Sprintf("http://127.0.0.1:%d/mcp", p.HTTP)
		g.resource = g.url
		return fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\tdefault_bind 127.0.0.1\n}\n\n", p.Admin) +
			substitute(t, string(example), map[string]string{"PORT": strconv.Itoa(p.HTTP), "MCP_RESOURCE": g.resource, "UPSTREAM": upstream})
	}, "CLERK_SECRET_KEY="+clerk.SecretKey(), "CLERK_API_URL="+clerk.URL, "CLERK_PUBLISHABLE_KEY="+clerk.PublishableKey())
	return g
}

// substitute does what Caddy does with {$NAME} and {$NAME:default} when
// it adapts a Caddyfile, for the variables given, each of which must be
// there.
func substitute(t *testing.T, caddyfile string, vars map[string]string) string {
	t.Helper()
	for name, value := range vars {
		pattern := regexp.MustCompile(`\{\$` + name + `(:[^}]*)?\}`)
		require.Regexp(t, pattern, caddyfile, "the example reads %s", name)
		caddyfile = pattern.ReplaceAllLiteralString(caddyfile, value)
	}
	return caddyfile
}

// clientRun is what the SDK's client did (see node/client.mjs).
type clientRun struct {
	Attempts []struct {
		Connected        bool   `json:"connected"`
		Error            string `json:"error"`
		Message          string `json:"message"`
		AuthorizationURL string `json:"authorizationUrl"`
	} `json:"attempts"`
	Wire []struct {
		Method          string `json:"method"`
		URL             string `json:"url"`
		Status          int    `json:"status"`
		WWWAuthenticate string `json:"wwwAuthenticate"`
	} `json:"wire"`
	ProtocolVersion string   `json:"protocolVersion"`
	Tools           []string `json:"tools"`
	Whoami          struct {
		Clerk         map[string]string `json:"clerk"`
		Authorization bool              `json:"authorization"`
	} `json:"whoami"`
	ClientID string `json:"clientId"`
	Failed   string `json:"failed"`
}

// connect runs the SDK's client against g, starting with the tokens
// given (none: a first session), sending forged identity headers of its
// own with every MCP request.
func connect(t *testing.T, g gateway, accessToken string) clientRun {
	t.Helper()
	input := map[string]any{"url": g.url, "maxAttempts": 3,
		"headers": map[string]string{"X-Clerk-User-Id": "user_forged", "X-Clerk-Scopes": "admin"}}
	if accessToken != "" {
		input["tokens"] = map[string]string{"access_token": accessToken, "token_type": "Bearer"}
	}
	var run clientRun
	runNode(t, "client.mjs", input, &run)
	require.Empty(t, run.Failed)
	return run
}

// TestMCPClientThroughCaddy: the SDK's client, given only the gateway's
// URL, discovers Clerk's authorization server through the metadata Caddy
// serves, gets a token for the resource, and calls the SDK's server,
// which learns the caller from Caddy and nothing a client forged. A token
// for another resource, or without the scopes, is refused with the
// challenge the SDK reads: it authorizes again, for this resource and
// with the scopes the challenge names, and gets through.
func TestMCPClientThroughCaddy(t *testing.T) {
	requireNode(t)
	clerk := backendtest.New()
	defer clerk.Close()
	g := startExample(t, clerk, startUpstream(t))
	metadataURL := strings.Replace(g.url, "/mcp", "/.well-known/oauth-protected-resource/mcp", 1)

	for _, format := range []string{"opaque", "jwt"} {
		t.Run("a first session, "+format+" tokens", func(t *testing.T) {
			clerk.SetAuthorization(backendtest.AuthorizationOptions{JWT: format == "jwt"})
			clerk.ResetCalls()
			run := connect(t, g, "")
			require.Len(t, run.Attempts, 2, "the first attempt is sent to authorize, the second connects")
			assert.Equal(t, "UnauthorizedError", run.Attempts[0].Error)
			assert.True(t, run.Attempts[1].Connected)
			authorization := assertAuthorization(t, run.Attempts[0].AuthorizationURL, clerk, g.resource, "profile email")

			first := run.Wire[0]
			assert.Equal(t, []string{"POST", g.url, "401"}, []string{first.Method, first.URL, strconv.Itoa(first.Status)},
				"initialize, without a token")
			challenge, err := oauthcheck.ParseChallenge(first.WWWAuthenticate)
			require.NoError(t, err)
			assert.Equal(t, metadataURL, challenge.Params["resource_metadata"])
			assert.Equal(t, metadataURL, run.Wire[1].URL, "the client follows resource_metadata")
			assert.Equal(t, 200, run.Wire[1].Status)
			assert.Equal(t, clerk.URL+"/.well-known/oauth-authorization-server", run.Wire[2].URL, "to the authorization server it names")
			assert.Equal(t, clerk.URL+"/oauth/register", run.Wire[3].URL, "where it registers")

			assert.Equal(t, "2025-11-25", run.ProtocolVersion)
			t.Logf("MCP protocol version negotiated: %s", run.ProtocolVersion)
			assert.Equal(t, []string{"whoami"}, run.Tools)
			assert.Equal(t, map[string]string{"x-clerk-user-id": clerk.OAuthUserID(), "x-clerk-client-id": run.ClientID,
				"x-clerk-scopes": "profile email"}, run.Whoami.Clerk, "the upstream sees the caller as Clerk knows it, nothing forged")
			assert.Equal(t, authorization.Get("client_id"), run.ClientID)
			assert.False(t, run.Whoami.Authorization, "the token stays at the gateway")
			assertTokenRequest(t, clerk, g.resource)
			asked := gatewayRequests(clerk)
			assert.Subset(t, []string{"/oauth_applications/access_tokens/verify", "/v1/jwks"}, asked,
				"the gateway asks Clerk to verify, never for the authorization server's metadata: that is the client's to fetch")
			if format == "opaque" {
				assert.Contains(t, asked, "/oauth_applications/access_tokens/verify")
			}
		})
	}

	t.Run("a token for another resource", func(t *testing.T) {
		clerk.SetAuthorization(backendtest.AuthorizationOptions{})
		other, _ := clerk.CreateOAuthToken(clerk.OAuthUserID(), backendtest.OAuthOptions{
			Audience: []string{"https://other.example.com/mcp"}, Scopes: []string{"profile", "email"}})
		run := connect(t, g, other)
		challenge := refusal(t, run, 401)
		assert.Equal(t, "invalid_token", challenge.Params["error"])
		assert.Contains(t, challenge.Params["error_description"], "audience")
		assert.Equal(t, metadataURL, challenge.Params["resource_metadata"])
		// With no refresh token, the SDK drops the token and authorizes
		// again, for this resource.
		require.Len(t, run.Attempts, 2)
		assert.Equal(t, "UnauthorizedError", run.Attempts[0].Error)
		assertAuthorization(t, run.Attempts[0].AuthorizationURL, clerk, g.resource, "profile email")
		assert.True(t, run.Attempts[1].Connected)
		assert.Equal(t, clerk.OAuthUserID(), run.Whoami.Clerk["x-clerk-user-id"])
	})

	t.Run("a token without the scopes", func(t *testing.T) {
		narrow, _ := clerk.CreateOAuthToken(clerk.OAuthUserID(), backendtest.OAuthOptions{
			Audience: []string{g.resource}, Scopes: []string{"profile"}})
		run := connect(t, g, narrow)
		challenge := refusal(t, run, 403)
		assert.Equal(t, "insufficient_scope", challenge.Params["error"])
		assert.Equal(t, "profile email", challenge.Params["scope"])
		assert.Equal(t, metadataURL, challenge.Params["resource_metadata"])
		// The SDK authorizes again, asking for the scopes the challenge
		// names.
		require.Len(t, run.Attempts, 2)
		assertAuthorization(t, run.Attempts[0].AuthorizationURL, clerk, g.resource, "profile email")
		assert.True(t, run.Attempts[1].Connected)
		assert.Equal(t, "profile email", run.Whoami.Clerk["x-clerk-scopes"])
	})
}

// refusal is the challenge of the first MCP request of run, which was
// refused with status.
func refusal(t *testing.T, run clientRun, status int) oauthcheck.Challenge {
	t.Helper()
	require.NotEmpty(t, run.Wire)
	require.Equal(t, status, run.Wire[0].Status)
	challenge, err := oauthcheck.ParseChallenge(run.Wire[0].WWWAuthenticate)
	require.NoError(t, err)
	return challenge
}

// assertAuthorization checks the authorization request the SDK made: to
// the fake Clerk, for the resource (RFC 8707), with the scopes, and PKCE;
// and returns its parameters.
func assertAuthorization(t *testing.T, authorizationURL string, clerk *backendtest.Server, resource, scope string) url.Values {
	t.Helper()
	u, err := url.Parse(authorizationURL)
	require.NoError(t, err)
	assert.Equal(t, clerk.URL+"/oauth/authorize", u.Scheme+"://"+u.Host+u.Path)
	q := u.Query()
	assert.Equal(t, resource, q.Get("resource"), "the resource indicator is the metadata's resource")
	assert.Equal(t, scope, q.Get("scope"))
	assert.Equal(t, "S256", q.Get("code_challenge_method"))
	return q
}

// gatewayRequests are the paths Caddy asked the fake Clerk for.
func gatewayRequests(clerk *backendtest.Server) []string {
	var paths []string
	for _, r := range clerk.Requests() {
		if strings.HasPrefix(r.Header.Get("User-Agent"), "caddy-clerk-m2m/") {
			paths = append(paths, r.Path)
		}
	}
	return paths
}

// assertTokenRequest checks that the client asked the token endpoint for
// a token for the resource.
func assertTokenRequest(t *testing.T, clerk *backendtest.Server, resource string) {
	t.Helper()
	var asked []string
	for _, r := range clerk.Requests() {
		if r.Path == "/oauth/token" {
			form, err := url.ParseQuery(string(r.Body))
			require.NoError(t, err)
			asked = append(asked, form.Get("resource"))
		}
	}
	assert.Equal(t, []string{resource}, asked)
}
