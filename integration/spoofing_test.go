package integration

import (
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// TestClientsCannotSpoofIdentityHeaders runs the README's recommended
// configuration, examples/Caddyfile, as it is (plus test globals), and
// sends forged identity headers with every kind of request.
func TestClientsCannotSpoofIdentityHeaders(t *testing.T) {
	e := newEnv(t)
	clerk, gateway, caller := e.clerk, e.gateway, e.caller
	for name, value := range map[string]string{
		"PORT": strconv.Itoa(httpPort), "UPSTREAM": e.upstream, "MACHINE_ID": gateway.ID,
		"CLERK_SECRET_KEY": clerk.SecretKey(), "CLERK_MACHINE_SECRET_KEY": gateway.SecretKey, "CLERK_API_URL": clerk.URL,
	} {
		t.Setenv(name, value)
	}
	example, err := os.ReadFile("../examples/Caddyfile")
	require.NoError(t, err)

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
		e.load(globals("") + string(example))
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
		optional := strings.Replace(string(example), "\t\tstrip_authorization\n", "\t\tstrip_authorization\n\t\toptional\n", 1)
		require.NotEqual(t, string(example), optional)
		e.load(globals("") + optional)
		resp, seen := e.send("/", forged(""))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, map[string]string{"X-Clerk-Machine-Id": "", "X-Clerk-Scopes": "", "X-Clerk-Claims": ""}, seen,
			"an anonymous request carries empty identity headers, whatever the client sent")
	})
}
