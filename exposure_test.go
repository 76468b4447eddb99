package clerkm2m

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExposedListeners(t *testing.T) {
	assert.Empty(t, exposedListeners([]string{"tcp/127.0.0.1:8081", "tcp/[::1]:8081", "127.0.0.2:80", "localhost:8081",
		"unix//run/sidecar.sock", "unix//run/sidecar.sock|0222"}))
	assert.Equal(t, []string{":8081", "tcp/0.0.0.0:8081", "tcp/[::]:8081", "10.0.0.5:8081", "example.com:80", "fd/3", "tcp/127.0.0.1:bad"},
		exposedListeners([]string{":8081", "tcp/0.0.0.0:8081", "tcp/[::]:8081", "10.0.0.5:8081", "example.com:80", "fd/3", "tcp/127.0.0.1:bad"}))
}

// TestSidecarsListenOnLoopbackOnly adapts every example and every
// Caddyfile of the README that has clerk_m2m_token, and checks that no
// such handler sits on a server that listens beyond loopback: it would
// hand the machine's authority to anyone who can reach the server.
func TestSidecarsListenOnLoopbackOnly(t *testing.T) {
	clearAdaptVariables(t)
	sources := map[string]string{}
	files, err := filepath.Glob("examples/*Caddyfile")
	require.NoError(t, err)
	nested, err := filepath.Glob("examples/*/Caddyfile")
	require.NoError(t, err)
	for _, file := range append(files, nested...) {
		sources[file] = readFile(t, file)
	}
	for i, block := range regexp.MustCompile("(?s)```caddyfile\n(.*?)```").FindAllStringSubmatch(readFile(t, "README.md"), -1) {
		if !strings.Contains(block[1], "[<matcher>]") { // a directive's syntax, not a configuration
			sources[fmt.Sprintf("README.md, Caddyfile block %d", i+1)] = block[1]
		}
	}
	sidecars := 0
	for name, source := range sources {
		if !strings.Contains(source, "clerk_m2m_token") {
			continue
		}
		adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(source), nil)
		require.NoError(t, err, name)
		var config struct {
			Apps struct {
				HTTP struct {
					Servers map[string]adaptedServer `json:"servers"`
				} `json:"http"`
			} `json:"apps"`
		}
		require.NoError(t, json.Unmarshal(adapted, &config), name)
		for server, s := range config.Apps.HTTP.Servers {
			if !s.mints() {
				continue
			}
			sidecars++
			assert.Empty(t, exposedListeners(s.Listen), "%s: server %s has clerk_m2m_token and listens beyond loopback", name, server)
		}
	}
	assert.GreaterOrEqual(t, sidecars, 2, "the two-services example and the README's sidecar were checked")
}

// adaptedServer is a server of an adapted configuration: its listeners and
// its routes, whose handlers are left as JSON.
type adaptedServer struct {
	Listen []string                `json:"listen"`
	Routes []adaptedRoute          `json:"routes"`
	Errors *adaptedRoutes          `json:"errors"`
	Named  map[string]adaptedRoute `json:"named_routes"`
}

type adaptedRoutes struct {
	Routes []adaptedRoute `json:"routes"`
}

type adaptedRoute struct {
	Handle []adaptedHandler `json:"handle"`
}

type adaptedHandler struct {
	Handler string         `json:"handler"`
	Routes  []adaptedRoute `json:"routes"` // of a subroute
	Errors  *adaptedRoutes `json:"errors"`
}

// mints reports whether a clerk_m2m_token handler is among the server's
// routes, at any depth.
func (s adaptedServer) mints() bool {
	routes := s.Routes
	if s.Errors != nil {
		routes = append(routes, s.Errors.Routes...)
	}
	for _, route := range s.Named {
		routes = append(routes, route)
	}
	return anyMints(routes)
}

func anyMints(routes []adaptedRoute) bool {
	for _, route := range routes {
		for _, h := range route.Handle {
			if h.Handler == "clerk_m2m_token" || anyMints(h.Routes) || h.Errors != nil && anyMints(h.Errors.Routes) {
				return true
			}
		}
	}
	return false
}
