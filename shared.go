package clerkm2m

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
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
// that calls its Backend API and the key set that verifies its JWTs,
// fetched from the Backend API with a secret key, else from the Frontend
// API named by a publishable key.
type instance struct {
	keysURL    string // the API the keys are fetched from, for the jwks_age metric
	metrics    bool   // reported in the caddy_clerk_m2m_* metrics
	httpClient *http.Client
	keys       *verify.RemoteKeys // nil without a secret or publishable key
}

// instanceSettings are what makes two handlers' instances the same one.
type instanceSettings struct {
	apiURL      string
	secretKey   string // fetches the keys from the Backend API; "" with jwt_key
	frontendURL string // fetches them without a secret key; "" with jwt_key
	metrics     bool   // key fetches and calls to Clerk are counted
	timeout     time.Duration
	maxStale    time.Duration
}

// poolKey names the instance without holding the secret key itself.
func (s instanceSettings) poolKey() string {
	sum := sha256.Sum256([]byte(s.secretKey))
	return strings.Join([]string{s.apiURL, hex.EncodeToString(sum[:]), s.keysFromFrontend(), strconv.FormatBool(s.metrics),
		s.timeout.String(), s.maxStale.String()}, "|")
}

// keysFromFrontend is the Frontend API to fetch keys from, when there is no
// secret key to fetch them from the Backend API.
func (s instanceSettings) keysFromFrontend() string {
	if s.secretKey != "" {
		return ""
	}
	return s.frontendURL
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
	inst := &instance{metrics: s.metrics, httpClient: backend.NewHTTPClient()}
	fetcher, keysURL, err := s.jwksFetcher(inst.httpClient)
	if err != nil || fetcher == nil {
		return inst, err
	}
	opts := verify.JWKSOptions{Timeout: s.timeout, MaxStale: s.maxStale, Logger: jwksLogger(logger)}
	if s.metrics {
		opts.OnFetch = observeJWKSFetch
	}
	inst.keys, inst.keysURL = verify.NewRemoteKeys(fetcher, opts), keysURL
	return inst, nil
}

// jwksFetcher fetches the signing keys from the Backend API with the secret
// key, else from the Frontend API, and says which; nil when neither is
// configured (as with jwt_key).
func (s instanceSettings) jwksFetcher(httpClient *http.Client) (verify.JWKSFetcher, string, error) {
	opts := backend.Options{UserAgent: userAgent(), HTTPClient: httpClient}
	if s.metrics {
		opts.Observe = observeClerkRequest
	}
	switch {
	case s.secretKey != "":
		opts.URL, opts.SecretKey = s.apiURL, s.secretKey
		client, err := backend.New(opts)
		return client, s.apiURL, err
	case s.frontendURL != "":
		opts.URL = s.frontendURL
		client, err := backend.New(opts)
		return frontendJWKS{client}, s.frontendURL, err
	default:
		return nil, "", nil
	}
}

// frontendJWKS fetches the public key set of the Frontend API.
type frontendJWKS struct{ *backend.Client }

func (f frontendJWKS) JWKS(ctx context.Context) (*backend.JWKS, error) { return f.FrontendJWKS(ctx) }

// start begins the instance's background work, once.
func (i *instance) start(logger *zap.Logger) {
	if i.keys != nil {
		i.keys.SetLogger(jwksLogger(logger))
		i.keys.Start()
	}
}

// jwksLogger is where an instance's key source logs.
func jwksLogger(logger *zap.Logger) *zap.Logger { return logger.Named("jwks") }

// Destruct stops the instance's background work and closes its idle
// connections, when the last configuration using it is unloaded.
func (i *instance) Destruct() error {
	if i.keys != nil {
		i.keys.Stop()
	}
	i.httpClient.CloseIdleConnections()
	return nil
}
