package clerkm2m

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

// instances holds what the handlers of every loaded configuration share for
// one Clerk instance. It outlives configuration reloads, so that signing
// keys stay warm and connections to Clerk stay open across them.
var instances = caddy.NewUsagePool()

// instance is one Clerk instance as seen from this process: the HTTP client
// that calls its Backend API and, with a secret key, the key set that
// verifies its JWTs.
type instance struct {
	apiURL     string
	httpClient *http.Client
	keys       *verify.RemoteKeys // nil without a secret key
}

// instanceSettings are what makes two handlers' instances the same one.
type instanceSettings struct {
	apiURL    string
	secretKey string
	timeout   time.Duration
	maxStale  time.Duration
}

// poolKey names the instance without holding the secret key itself.
func (s instanceSettings) poolKey() string {
	sum := sha256.Sum256([]byte(s.secretKey))
	return strings.Join([]string{s.apiURL, hex.EncodeToString(sum[:]), s.timeout.String(), s.maxStale.String()}, "|")
}

// loadInstance returns the shared instance for s, creating it on first use.
// Each call must be matched by releaseInstance.
func loadInstance(s instanceSettings, logger *zap.Logger) (*instance, error) {
	shared, _, err := instances.LoadOrNew(s.poolKey(), func() (caddy.Destructor, error) {
		return newInstance(s, logger)
	})
	if err != nil {
		return nil, err
	}
	return shared.(*instance), nil
}

func releaseInstance(s instanceSettings) {
	_, _ = instances.Delete(s.poolKey())
}

func newInstance(s instanceSettings, logger *zap.Logger) (*instance, error) {
	inst := &instance{apiURL: s.apiURL, httpClient: backend.NewHTTPClient()}
	if s.secretKey == "" {
		return inst, nil
	}
	jwksClient, err := backend.New(backend.Options{
		URL: s.apiURL, SecretKey: s.secretKey, UserAgent: userAgent(), HTTPClient: inst.httpClient,
		Observe: observeClerkRequest,
	})
	if err != nil {
		return nil, err
	}
	inst.keys = verify.NewRemoteKeys(jwksClient, verify.JWKSOptions{
		Timeout:  s.timeout,
		MaxStale: s.maxStale,
		Logger:   logger.Named("jwks"),
		OnFetch:  observeJWKSFetch,
	})
	return inst, nil
}

// start begins the instance's background work, once.
func (i *instance) start() {
	if i.keys != nil {
		i.keys.Start()
	}
}

// Destruct stops the instance's background work and closes its idle
// connections, when the last configuration using it is unloaded.
func (i *instance) Destruct() error {
	if i.keys != nil {
		i.keys.Stop()
	}
	i.httpClient.CloseIdleConnections()
	return nil
}
