package clerkm2m

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/mint"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

// pool holds what the handlers of every loaded configuration share: for
// clerk_m2m, a Clerk instance's connections and signing keys (instance);
// for clerk_m2m_token, a machine's token source (tokenSource). It outlives
// configuration reloads, so that keys stay warm, tokens stay minted and
// connections to Clerk stay open across them. A value is named by its kind
// and the settings that make it the same, and held by the handlers that
// use it through leases; the last lease given back destroys it.
var pool = caddy.NewUsagePool()

// sharedValue is a value of the pool.
type sharedValue interface {
	caddy.Destructor
	sharedBy() *sharers
}

// sharers counts the handlers holding a shared value that are counted in
// the metrics (those without disable_metrics). Whether a handler is counted
// does not decide what it shares: a handler with disable_metrics uses the
// same signing keys, and the same minted token, as the counted handlers
// with its settings. The value's own work (fetching signing keys, minting
// tokens, the calls to Clerk they make, the age of the keys) serves all its
// holders alike, so it is counted while at least one counted handler holds
// the value, and not at all while none does. A handler's own work (its
// verifications, cache lookups and calls to verify credentials) follows
// its own setting alone.
type sharers struct {
	counted atomic.Int32
}

func (s *sharers) sharedBy() *sharers { return s }

// isCounted reports whether a counted handler holds the value.
func (s *sharers) isCounted() bool { return s.counted.Load() > 0 }

// observer observes the shared value's own work.
func (s *sharers) observer() observer {
	if s.isCounted() {
		return countingObserver{}
	}
	return quietObserver{}
}

// lease is a handler's hold on a shared value.
type lease struct {
	key     string
	counted *atomic.Int32 // the value's count of counted holders; nil for a handler that is not counted
}

// share returns the value of the pool named by kind and settings, made by
// create when no handler holds it yet, and the handler's lease on it;
// counted says whether the handler is counted in the metrics. The name
// holds a hash of the settings, never a secret key.
func share[T sharedValue](kind string, settings any, counted bool, create func() (T, error)) (T, *lease, error) {
	var none T
	data, err := json.Marshal(settings)
	if err != nil {
		return none, nil, err
	}
	sum := sha256.Sum256(data)
	key := kind + ":" + hex.EncodeToString(sum[:])
	value, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		made, err := create()
		if err != nil {
			return nil, err
		}
		return made, nil
	})
	if err != nil {
		return none, nil, err
	}
	shared := value.(T)
	held := &lease{key: key}
	if counted {
		held.counted = &shared.sharedBy().counted
		held.counted.Add(1)
	}
	return shared, held, nil
}

// release gives the lease back; the last one destroys the value.
func (l *lease) release() {
	if l.counted != nil {
		l.counted.Add(-1)
	}
	_, _ = pool.Delete(l.key)
}

// instance is one Clerk instance as seen from this process: the HTTP client
// that calls its Backend API, with at most max_clerk_calls connections;
// the key set that verifies its JWTs, fetched from the Backend API with a
// secret key, else from the Frontend API named by a publishable key; and
// what its verifiers share: the cache of verdicts, bounded in bytes, and
// the calls to Clerk in flight, bounded in number.
type instance struct {
	sharers
	keysURL    string // the API the keys are fetched from, for the jwks_age metric
	httpClient *http.Client
	keys       *verify.RemoteKeys // nil without a secret or publishable key
	verifiers  *verify.Shared
}

// instanceSettings are what makes two handlers' instances the same one.
// The bounds are among them: handlers that set different bounds do not
// share them, nor anything else.
type instanceSettings struct {
	APIURL        string        `json:"api_url"`
	SecretKey     string        `json:"secret_key,omitempty"`   // fetches the keys from the Backend API; "" with jwt_key
	FrontendURL   string        `json:"frontend_url,omitempty"` // fetches them when there is no secret key; "" with jwt_key
	Timeout       time.Duration `json:"timeout"`
	MaxStale      time.Duration `json:"max_stale"`
	MaxClerkCalls int           `json:"max_clerk_calls"`
	CacheMaxBytes int64         `json:"cache_max_bytes"`
}

// loadInstance returns the shared instance for s, making it on first use.
func loadInstance(s instanceSettings, counted bool, logger *zap.Logger) (*instance, *lease, error) {
	if s.SecretKey != "" {
		s.FrontendURL = "" // the secret key fetches the keys: the Frontend API is not asked
	}
	return share("instance", s, counted, func() (*instance, error) { return newInstance(s, logger) })
}

func newInstance(s instanceSettings, logger *zap.Logger) (*instance, error) {
	inst := &instance{
		httpClient: backend.NewHTTPClient(s.MaxClerkCalls),
		verifiers:  verify.NewShared(verify.SharedOptions{MaxClerkCalls: s.MaxClerkCalls, CacheMaxBytes: s.CacheMaxBytes}),
	}
	fetcher, keysURL, err := inst.jwksFetcher(s)
	if err != nil || fetcher == nil {
		return inst, err
	}
	inst.keys = verify.NewRemoteKeys(fetcher, verify.JWKSOptions{
		Timeout:  s.Timeout,
		MaxStale: s.MaxStale,
		Logger:   jwksLogger(logger),
		OnFetch:  func(err error) { inst.observer().jwksFetch(err) },
	})
	inst.keysURL = keysURL
	return inst, nil
}

// jwksFetcher fetches the signing keys from the Backend API with the secret
// key, else from the Frontend API, and says which; nil when neither is
// configured (as with jwt_key).
func (i *instance) jwksFetcher(s instanceSettings) (verify.JWKSFetcher, string, error) {
	observe := func(attempt backend.Attempt) { i.observer().clerkRequest(attempt) }
	switch {
	case s.SecretKey != "":
		client, err := newClerkClient(s.APIURL, clerkKeys{secret: s.SecretKey}, i.httpClient, observe)
		return client, s.APIURL, err
	case s.FrontendURL != "":
		client, err := newClerkClient(s.FrontendURL, clerkKeys{}, i.httpClient, observe)
		return frontendJWKS{client}, s.FrontendURL, err
	default:
		return nil, "", nil
	}
}

// start begins the instance's background work, once, logging to logger.
func (i *instance) start(logger *zap.Logger) {
	if i.keys != nil {
		i.keys.SetLogger(jwksLogger(logger))
		i.keys.Start()
	}
}

// jwksLogger is where an instance's key source logs.
func jwksLogger(logger *zap.Logger) *zap.Logger { return logger.Named("jwks") }

// Destruct stops the instance's background work, forgets its verdicts and
// closes its idle connections, when the last configuration using it is
// unloaded.
func (i *instance) Destruct() error {
	if i.keys != nil {
		i.keys.Stop()
	}
	i.verifiers.Close()
	i.httpClient.CloseIdleConnections()
	return nil
}

// tokenSource is a machine's token source, shared by the clerk_m2m_token
// handlers with the same settings, and the connections it mints over.
type tokenSource struct {
	sharers
	*mint.Source
	httpClient *http.Client
	logger     atomic.Pointer[zap.Logger]
	shortLived rate.Sometimes // paces the warning about tokens born near expiry
}

// tokenSourceSettings are what makes two handlers' token sources the same
// one: one per machine, Clerk API, token, renewal point and budget.
type tokenSourceSettings struct {
	APIURL           string                        `json:"api_url"`
	MachineSecretKey string                        `json:"machine_secret_key"`
	Token            backend.CreateM2MTokenOptions `json:"token"`
	RenewAt          float64                       `json:"renew_at"`
	Timeout          time.Duration                 `json:"timeout"`
}

// loadTokenSource returns the shared token source for s, making it on
// first use. It mints nothing.
func loadTokenSource(s tokenSourceSettings, counted bool, logger *zap.Logger) (*tokenSource, *lease, error) {
	return share("token_source", s, counted, func() (*tokenSource, error) {
		// One mint at a time (see mint.Source): the connections need no bound.
		src := &tokenSource{httpClient: backend.NewHTTPClient(0), shortLived: rate.Sometimes{First: 1, Interval: alertInterval}}
		src.logger.Store(logger)
		observe := func(attempt backend.Attempt) { src.observer().clerkRequest(attempt) }
		client, err := newClerkClient(s.APIURL, clerkKeys{machine: s.MachineSecretKey}, src.httpClient, observe)
		if err != nil {
			return nil, err
		}
		src.Source = mint.NewSource(client, mint.Options{
			Token:        s.Token,
			RenewAt:      s.RenewAt,
			Timeout:      s.Timeout,
			OnMint:       func(err error) { src.observer().mint(s.Token.Format, err) },
			OnShortLived: src.warnShortLived,
		})
		return src, nil
	})
}

// start has the source log where the configuration that starts says: the
// previous one's logs may close.
func (s *tokenSource) start(logger *zap.Logger) { s.logger.Store(logger) }

// warnShortLived says, once a minute while it lasts, that Clerk's tokens
// come back with less life than asked, and what that costs.
func (s *tokenSource) warnShortLived(asked, got time.Duration) {
	s.shortLived.Do(func() {
		s.logger.Load().Warn("Clerk's M2M tokens come back with less life than asked (a clock out of step with Clerk's, "+
			"or a cap on their lifetime): each is used until it expires, and a new one minted at most once per "+
			mint.DefaultMintInterval.String()+" (logged once a minute while it lasts)",
			zap.Duration("asked", asked), zap.Duration("got", got))
	})
}

// Destruct stops a mint under way and closes the idle connections, when
// the last configuration using the source is unloaded.
func (s *tokenSource) Destruct() error {
	s.Close()
	s.httpClient.CloseIdleConnections()
	return nil
}
