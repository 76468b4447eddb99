package clerkm2m

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
)

// TestExposedSidecars walks adapted Caddyfiles as the App does when they
// start: a server beyond loopback is found when a clerk_m2m_token is among
// its handlers at any depth (handle, handle_errors, a named route, and the
// handle_response routes of reverse_proxy and intercept, which run
// handlers too), or when it proxies to a server that has one, however
// that server is reached (127.0.0.1, localhost, [::1], a unix socket,
// through another server); a server on loopback, or one that proxies
// elsewhere, is not.
func TestExposedSidecars(t *testing.T) {
	testenv.ClearClerk(t)
	t.Setenv("CLERK_MACHINE_SECRET_KEY", "ak_sidecar")
	const sidecar = "http://localhost:8081 {\n\tbind 127.0.0.1 [::1]\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n"
	for name, tc := range map[string]struct {
		caddyfile string
		want      []string // "<exposed listeners> → <listeners of the server that mints>"
	}{
		"a sidecar on every interface": {
			caddyfile: ":8080 {\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n",
			want:      []string{":8080 → :8080"},
		},
		"a sidecar on loopback": {caddyfile: sidecar},
		"a sidecar on a unix socket": {
			caddyfile: "http://localhost {\n\tbind unix//run/sidecar.sock|0222\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n",
		},
		"in handle": {
			caddyfile: ":8080 {\n\thandle /a/* {\n\t\tclerk_m2m_token\n\t\treverse_proxy upstream.internal:80\n\t}\n}\n",
			want:      []string{":8080 → :8080"},
		},
		"in handle_errors": {
			caddyfile: ":8080 {\n\terror 500\n\thandle_errors {\n\t\tclerk_m2m_token\n\t\treverse_proxy upstream.internal:80\n\t}\n}\n",
			want:      []string{":8080 → :8080"},
		},
		"in a named route": {
			caddyfile: "&(minting) {\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n\n:8080 {\n\tinvoke minting\n}\n",
			want:      []string{":8080 → :8080"},
		},
		"in reverse_proxy's handle_response": {
			caddyfile: ":8080 {\n\treverse_proxy auth.internal:80 {\n\t\t@ok status 2xx\n\t\thandle_response @ok {\n" +
				"\t\t\tclerk_m2m_token\n\t\t\treverse_proxy upstream.internal:80\n\t\t}\n\t}\n}\n",
			want: []string{":8080 → :8080"},
		},
		"in forward_auth's handle_response": {
			caddyfile: ":8080 {\n\tforward_auth auth.internal:80 {\n\t\turi /check\n\t\t@ok status 2xx\n\t\thandle_response @ok {\n" +
				"\t\t\tclerk_m2m_token\n\t\t\treverse_proxy upstream.internal:80\n\t\t}\n\t}\n}\n",
			want: []string{":8080 → :8080"},
		},
		"in intercept's handle_response": {
			caddyfile: ":8080 {\n\tintercept {\n\t\t@denied status 401\n\t\thandle_response @denied {\n" +
				"\t\t\tclerk_m2m_token\n\t\t\treverse_proxy upstream.internal:80\n\t\t}\n\t}\n\trespond 401\n}\n",
			want: []string{":8080 → :8080"},
		},
		"proxying to a loopback sidecar at 127.0.0.1": {
			caddyfile: sidecar + ":8080 {\n\treverse_proxy 127.0.0.1:8081\n}\n",
			want:      []string{":8080 → 127.0.0.1:8081 [::1]:8081"},
		},
		"proxying to a loopback sidecar at localhost, by URL": {
			caddyfile: sidecar + ":8080 {\n\treverse_proxy http://localhost:8081\n}\n",
			want:      []string{":8080 → 127.0.0.1:8081 [::1]:8081"},
		},
		"proxying to a loopback sidecar at [::1], among other upstreams": {
			caddyfile: sidecar + ":8080 {\n\treverse_proxy other.internal:80 [::1]:8081\n}\n",
			want:      []string{":8080 → 127.0.0.1:8081 [::1]:8081"},
		},
		"proxying to a sidecar on every interface, at localhost": {
			caddyfile: ":8081 {\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n\n:8080 {\n\treverse_proxy localhost:8081\n}\n",
			want:      []string{":8080 → :8081", ":8081 → :8081"},
		},
		"proxying to a sidecar on a unix socket": {
			caddyfile: "http://localhost {\n\tbind unix//run/sidecar.sock|0222\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n\n" +
				":8080 {\n\treverse_proxy unix//run/sidecar.sock\n}\n",
			want: []string{":8080 → unix//run/sidecar.sock|0222"},
		},
		"proxying to a loopback server that proxies to a sidecar": {
			caddyfile: sidecar + "http://localhost:8082 {\n\tbind 127.0.0.1\n\treverse_proxy 127.0.0.1:8081\n}\n\n" +
				":8080 {\n\treverse_proxy localhost:8082\n}\n",
			want: []string{":8080 → 127.0.0.1:8081 [::1]:8081"},
		},
		"proxying in handle_response to a sidecar": {
			caddyfile: sidecar + ":8080 {\n\treverse_proxy auth.internal:80 {\n\t\t@ok status 2xx\n\t\thandle_response @ok {\n" +
				"\t\t\treverse_proxy 127.0.0.1:8081\n\t\t}\n\t}\n}\n",
			want: []string{":8080 → 127.0.0.1:8081 [::1]:8081"},
		},
		"proxying elsewhere": {
			caddyfile: sidecar + ":8080 {\n\treverse_proxy 127.0.0.1:9090 127.0.0.2:8081 sidecar.internal:8081 unix//run/other.sock\n}\n",
		},
		"proxying to an upstream known per request": {
			caddyfile: sidecar + ":8080 {\n\treverse_proxy {http.request.header.X-Upstream}\n}\n",
		},
	} {
		t.Run(name, func(t *testing.T) {
			servers := provisionedServers(t, tc.caddyfile)
			var got []string
			for _, s := range exposedSidecars(servers) {
				got = append(got, strings.Join(s.listen, " ")+" → "+strings.Join(servers[s.mintsOn].Listen, " "))
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestReaches(t *testing.T) {
	for _, tc := range []struct {
		dial, listen string
		want         bool
	}{
		{"127.0.0.1:8081", "127.0.0.1:8081", true},
		{"127.0.0.1:8081", "tcp/127.0.0.1:8081", true},
		{"localhost:8081", "127.0.0.1:8081", true},
		{"localhost:8081", "[::1]:8081", true},
		{"[::1]:8081", "localhost:8081", true},
		{"127.0.0.1:8081", ":8081", true},
		{":8081", ":8081", true},
		{"[::1]:8081", "[::]:8081", true},
		{"127.0.0.1:8085", "127.0.0.1:8080-8090", true},
		{"unix//run/sidecar.sock", "unix//run/sidecar.sock|0222", true},
		{"127.0.0.1:8082", "127.0.0.1:8081", false},
		{"127.0.0.2:8081", "127.0.0.1:8081", false},
		{"10.0.0.5:8081", ":8081", false}, // perhaps this host: the configuration does not say
		{"127.0.0.1:8081", "unix//run/sidecar.sock", false},
		{"unix//run/other.sock", "unix//run/sidecar.sock", false},
		{"127.0.0.1:8081", "fd/3", false},
		{"{http.request.host}:8081", ":8081", false},
		{"127.0.0.1:bad", ":8081", false},
	} {
		assert.Equal(t, tc.want, reaches(tc.dial, tc.listen), "%s to %s", tc.dial, tc.listen)
	}
}

// provisionedServers adapts a Caddyfile and provisions its HTTP app as
// Caddy does before it starts a configuration (no listener is opened, no
// network call made), and returns its servers. They are cleaned up when
// the test ends.
func provisionedServers(t *testing.T, caddyfileText string) map[string]*caddyhttp.Server {
	t.Helper()
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
	require.NoError(t, err)
	var config struct {
		Apps map[string]json.RawMessage `json:"apps"`
	}
	require.NoError(t, json.Unmarshal(adapted, &config))
	app, err := newContext(t).LoadModuleByID("http", config.Apps["http"])
	require.NoError(t, err)
	return app.(*caddyhttp.App).Servers
}
