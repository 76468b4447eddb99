package integration

import (
	"cmp"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	exampleset "github.com/caddy-clerk/clerk-m2m/internal/examples"
)

// TestClientsCannotSpoofIdentityHeaders runs the README's recommended
// configuration, examples/Caddyfile, as it is (plus test globals), and
// checks that only the gateway's own identity headers reach the service.
func TestClientsCannotSpoofIdentityHeaders(t *testing.T) {
	e := startExample(t, "Caddyfile", nil)
	clerk, gateway, caller := e.clerk, e.gateway, e.caller
	forged := func(token string) func(*http.Request) {
		return func(req *http.Request) {
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			req.Header.Set("X-Clerk-Machine-Id", "mch_forged")
			req.Header.Add("X-Clerk-Machine-Id", "mch_forged_again")
			req.Header.Set("X-Clerk-Org-Id", "org_forged")
			req.Header.Set("x-clerk-role", "admin")
			req.Header.Set("X-CLERK-CLAIMS", `{"admin":true}`)
		}
	}
	granted := backendtest.TokenOptions{Scopes: []string{gateway.ID}, TTL: time.Hour}
	opaque, _ := clerk.CreateM2MToken(caller, granted)
	jwt := clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: granted})

	t.Run("as recommended", func(t *testing.T) {
		for name, token := range map[string]string{"opaque": opaque, "JWT": jwt} {
			resp, seen := e.send("/", forged(token))
			require.Equal(t, http.StatusOK, resp.StatusCode, name)
			assert.Equal(t, map[string]string{
				"X-Clerk-Machine-Id": caller.ID,
				"X-Clerk-Scopes":     gateway.ID,
				"X-Clerk-Claims":     seen["X-Clerk-Claims"],
			}, seen, "only the gateway's own X-Clerk-* headers, and no Authorization, reach the service")
			assert.NotContains(t, seen["X-Clerk-Claims"], "admin")
		}
		resp, _ := e.send("/", forged(""))
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "forged headers are no credential")
		assert.Equal(t, `Bearer realm="clerk"`, resp.Header.Get("WWW-Authenticate"))
	})

	t.Run("with optional and no token", func(t *testing.T) {
		e.load(globals("") + allOptional(readExample(t, "Caddyfile")))
		resp, seen := e.send("/", forged(""))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, map[string]string{"X-Clerk-Machine-Id": "", "X-Clerk-Scopes": "", "X-Clerk-Claims": ""}, seen,
			"an anonymous request carries empty identity headers, whatever the client sent")
	})
}

// exampleRoute is a route of an example: where it is, and the credentials
// it lets through.
type exampleRoute struct {
	site        string   // the variable naming the site's address; "" for the gateway's
	path        string   // a path of the route
	credentials []string // the names of the credentials (of exampleCredentials) it accepts
	anonymous   int      // its status for a request without credential (0: 401)
}

// The credentials of the examples' routes, by what the routes accept.
var (
	machineCredentials = []string{"opaque M2M token", "M2M JWT"}
	partnerCredentials = []string{"API key", "opaque OAuth token", "OAuth JWT"}
	browserCredentials = []string{"session token in the header", "session token in the cookie"}
	mcpCredentials     = []string{"opaque OAuth token for the MCP server", "OAuth JWT for the MCP server"}
)

// exampleRoutes are the routes of every example that can be reached.
var exampleRoutes = map[string][]exampleRoute{
	"Caddyfile": {{path: "/", credentials: machineCredentials}},
	"multi-service.Caddyfile": {
		{path: "/billing/x", credentials: machineCredentials},
		{path: "/partners/x", credentials: partnerCredentials},
		{path: "/app/x", credentials: browserCredentials},
		{path: "/status", credentials: slices.Concat(machineCredentials, partnerCredentials, browserCredentials), anonymous: http.StatusOK},
	},
	"networkless.Caddyfile":     {{path: "/", credentials: []string{"M2M JWT"}}},
	"problem-details.Caddyfile": {{path: "/", credentials: machineCredentials}},
	"cors.Caddyfile":            {{path: "/invoices", credentials: browserCredentials}},
	"secrets.Caddyfile":         {{path: "/", credentials: machineCredentials}},
	"fleet.Caddyfile":           {{path: "/", credentials: machineCredentials}},
	"mcp.Caddyfile":             {{path: "/mcp", credentials: mcpCredentials}},
	"quickstart/Caddyfile":      {{path: "/", credentials: machineCredentials}},
	"two-services/Caddyfile": {
		{site: "A_SIDECAR", path: "/invoices", anonymous: http.StatusOK}, // the sidecar brings the credential
		{path: "/invoices", credentials: machineCredentials},
	},
}

// exampleCredentials puts a valid credential of each kind the examples
// accept on a request: granted to the gateway's machine, with the scope,
// origin and audience the examples require.
func exampleCredentials(e *env) map[string]func(*http.Request) {
	bearer := func(token string) func(*http.Request) {
		return func(req *http.Request) { req.Header.Set("Authorization", "Bearer "+token) }
	}
	partners := []string{"partners:read"}
	app := backendtest.SessionOptions{AuthorizedParty: "https://app.example.com"}
	apiKey, _ := e.clerk.CreateAPIKey(testUser, backendtest.APIKeyOptions{Scopes: partners})
	oauth, _ := e.clerk.CreateOAuthToken(testUser, backendtest.OAuthOptions{Scopes: partners, TTL: time.Hour})
	mcp := backendtest.OAuthOptions{Scopes: []string{"profile", "email"}, Audience: []string{os.Getenv("MCP_RESOURCE")}}
	mcpOAuth, _ := e.clerk.CreateOAuthToken(testUser, mcp)
	return map[string]func(*http.Request){
		"opaque M2M token":                      bearer(e.fresh()),
		"M2M JWT":                               bearer(e.jwt()),
		"API key":                               bearer(apiKey),
		"opaque OAuth token":                    bearer(oauth),
		"OAuth JWT":                             bearer(e.clerk.MintOAuthJWT(testUser, backendtest.OAuthJWTOptions{OAuthOptions: backendtest.OAuthOptions{Scopes: partners}})),
		"opaque OAuth token for the MCP server": bearer(mcpOAuth),
		"OAuth JWT for the MCP server":          bearer(e.clerk.MintOAuthJWT(testUser, backendtest.OAuthJWTOptions{OAuthOptions: mcp})),
		"session token in the header":           bearer(e.clerk.MintSessionJWT(testUser, app)),
		"session token in the cookie": func(req *http.Request) {
			req.AddCookie(&http.Cookie{Name: "__session", Value: e.clerk.MintSessionJWT(testUser, app)})
			req.AddCookie(&http.Cookie{Name: "__client_uat", Value: "1700000000"})
		},
	}
}

// forgedHeaders are X-Clerk-* headers a client sends to pass for the
// gateway's: every one the examples set, some they do not, in any case.
func forgedHeaders(t *testing.T) http.Header {
	t.Helper()
	forged := http.Header{}
	for _, name := range []string{"X-Clerk-Role", "X-Clerk-Admin", "X-Clerk-Claims", "X-Clerk-Scopes"} {
		forged.Add(name, "forged "+name)
	}
	for name := range exampleRoutes {
		for _, header := range regexp.MustCompile(`X-Clerk-[A-Za-z-]+`).FindAllString(readExample(t, name), -1) {
			forged.Set(header, "forged "+header)
			forged[strings.ToLower(header)] = []string{"forged again " + header} // sent as written, read canonical
		}
	}
	return forged
}

// TestNoExampleForwardsForgedIdentityHeaders runs every example the main
// build runs against the fake Clerk and sends forged X-Clerk-* headers
// through every one of its routes, with each valid credential the route
// accepts, with none, and with every clerk_m2m of the example made
// optional: the service behind never sees a forged value. (An example
// whose xcaddy line builds in other modules is run by the tests of the
// module that builds that Caddy.)
func TestNoExampleForwardsForgedIdentityHeaders(t *testing.T) {
	files, err := filepath.Glob("../examples/*Caddyfile")
	require.NoError(t, err)
	nested, err := filepath.Glob("../examples/*/Caddyfile")
	require.NoError(t, err)
	var examples []string
	for _, file := range slices.Concat(files, nested) {
		if name := strings.TrimPrefix(file, "../examples/"); len(exampleset.ExtraModules([]byte(readExample(t, name)))) == 0 {
			examples = append(examples, name)
		}
	}
	require.ElementsMatch(t, slices.Collect(maps.Keys(exampleRoutes)), examples, "every example's routes are listed")
	forged := forgedHeaders(t)

	send := func(t *testing.T, e *env, route exampleRoute, credential func(*http.Request)) (int, map[string]string) {
		t.Helper()
		resp, seen := e.send(route.path, func(req *http.Request) {
			if route.site != "" {
				req.URL.Host = os.Getenv(route.site)
			}
			for name, values := range forged {
				req.Header[name] = values
			}
			if credential != nil {
				credential(req)
			}
		})
		for header, value := range seen {
			// "forged " with its space, which no credential holds: a JWT's
			// base64url may spell "forged" by chance.
			assert.NotContains(t, value, "forged ", "%s reached the service", header)
		}
		return resp.StatusCode, seen
	}
	for _, name := range examples {
		t.Run(name, func(t *testing.T) {
			e := startExample(t, name, nil)
			credentials := exampleCredentials(e)
			for _, route := range exampleRoutes[name] {
				for _, credential := range route.credentials {
					status, _ := send(t, e, route, credentials[credential])
					assert.Equal(t, http.StatusOK, status, "%s with a valid %s", route.path, credential)
				}
				status, _ := send(t, e, route, nil)
				assert.Equal(t, cmp.Or(route.anonymous, http.StatusUnauthorized), status, "%s without a credential", route.path)
			}

			e.load(globals("") + allOptional(withoutGlobalOptions(readExample(t, name))))
			for _, route := range exampleRoutes[name] {
				status, _ := send(t, e, route, nil)
				assert.Equal(t, http.StatusOK, status, "%s under optional, without a credential", route.path)
			}
		})
	}
}

// clerkM2MDirective is a clerk_m2m directive's line, with a block or not.
var clerkM2MDirective = regexp.MustCompile(`(?m)^([ \t]*)clerk_m2m( \{)?$`)

// allOptional makes every clerk_m2m of a Caddyfile optional.
func allOptional(caddyfile string) string {
	caddyfile = regexp.MustCompile(`(?m)^[ \t]*optional\n`).ReplaceAllString(caddyfile, "")
	return clerkM2MDirective.ReplaceAllStringFunc(caddyfile, func(line string) string {
		indent := clerkM2MDirective.FindStringSubmatch(line)[1]
		if strings.HasSuffix(line, "{") {
			return line + "\n" + indent + "\toptional"
		}
		return line + " {\n" + indent + "\toptional\n" + indent + "}"
	})
}
