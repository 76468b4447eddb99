package clerkm2m

import (
	"net/http"
	"net/url"
	"runtime/debug"

	"go.uber.org/zap"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// modulePath is this module's Go import path, used to find its version.
const modulePath = "github.com/caddy-clerk/clerk-m2m"

// newMintClient is the one place a client of Clerk's API that mints M2M
// tokens is made (verify makes those that verify): every call carries the
// module's User-Agent, authenticates with the machine's secret key, goes
// over httpClient, and is told to observe.
func newMintClient(apiURL, machineSecretKey string, httpClient *http.Client, observe func(backend.Attempt)) (*backend.Client, error) {
	return backend.New(backend.Options{
		URL:              apiURL,
		MachineSecretKey: machineSecretKey,
		UserAgent:        userAgent(),
		HTTPClient:       httpClient,
		Observe:          observe,
	})
}

// userAgent is sent to Clerk: the module's name and version.
func userAgent() string {
	version := "dev"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == modulePath && dep.Version != "" && dep.Version != "(devel)" {
				version = dep.Version
			}
		}
	}
	return "caddy-clerk-m2m/" + version
}

// warnIfCleartext warns when the secret key would cross a network in the
// clear: http is fine on loopback (a local proxy or a test), nowhere else.
func warnIfCleartext(logger *zap.Logger, apiURL string) {
	u, err := url.Parse(apiURL)
	if err != nil || u.Scheme != "http" {
		return
	}
	if backend.IsLoopbackHost(u.Hostname()) {
		return
	}
	logger.Warn("api_url uses plain http: the secret key crosses the network unencrypted", zap.String("api_url", apiURL))
}
