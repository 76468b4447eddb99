package integration

import (
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGatingPartOfASite runs the two layouts of the README's "Gate part of
// a site" through Caddy, with paths the gated matcher does not match:
// with the upstream inside the gated block, none reaches the service
// without a credential; with clerk_m2m under a matcher beside a site-wide
// reverse_proxy, all of them do (the pitfall the README warns against).
func TestGatingPartOfASite(t *testing.T) {
	e := newEnv(t)
	for name, value := range map[string]string{
		"CLERK_SECRET_KEY": e.clerk.SecretKey(), "CLERK_MACHINE_SECRET_KEY": e.gateway.SecretKey, "CLERK_API_URL": e.clerk.URL,
	} {
		t.Setenv(name, value)
	}
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	start := strings.Index(string(readme), "### Gate part of a site")
	require.GreaterOrEqual(t, start, 0, "the README shows the layouts")
	section := string(readme)[start:]
	layouts := regexp.MustCompile("(?s)```caddyfile\n(.*?)```").FindAllStringSubmatch(section, 2)
	require.Len(t, layouts, 2)
	run := func(layout string) {
		e.load(globals("") + strings.NewReplacer("api.example.com", "http://{{GATEWAY}}", "localhost:9000", "{{UPSTREAM}}").Replace(layout))
	}
	slipping := []string{"/api", "/api;x/secret", "/api%00/x"}

	t.Run("the upstream inside the gated block", func(t *testing.T) {
		run(layouts[0][1])
		resp, _ := e.request("/api/x")
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		for _, path := range slipping {
			resp, _ := e.request(path)
			assert.Equal(t, http.StatusNotFound, resp.StatusCode, "%s does not reach the service", path)
		}
	})

	t.Run("the pitfall: a gated matcher beside a site-wide upstream", func(t *testing.T) {
		require.Contains(t, layouts[1][1], "UNSAFE")
		run(layouts[1][1])
		resp, _ := e.request("/api/x")
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "what the matcher matches is gated")
		for _, path := range slipping {
			resp, _ := e.request(path)
			assert.Equal(t, http.StatusOK, resp.StatusCode, "%s reaches the service without a credential", path)
		}
	})
}
