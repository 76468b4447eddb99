package clerkm2m

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

// instance is one Clerk instance as seen from this process: the Pool its
// verifiers share (its connections, signing keys, cache of verdicts and
// calls in flight, each bounded), kept across configuration reloads, and
// when its signing keys were last fetched, for the jwks_age metric.
type instance struct {
	sharers
	pool *verify.Pool

	logger  *zap.Logger // where fetch failures are logged; the configuration started last says
	started sync.Once
	stop    context.CancelFunc // ends Run; nil until started
	done    chan struct{}      // closed when Run has returned

	created time.Time // what the keys' age counts from while none have come

	mu      sync.Mutex
	fetched map[string]time.Time // by the URL the keys come from: when they last came, or created
}

// instanceSettings are what makes two handlers' instances the same one.
// The bounds are among them: handlers that set different bounds do not
// share them, nor anything else.
type instanceSettings struct {
	APIURL         string         `json:"api_url"`
	SecretKey      string         `json:"secret_key,omitempty"`      // fetches the keys from the Backend API; "" with jwt_key
	PublishableKey string         `json:"publishable_key,omitempty"` // fetches them when there is no secret key; "" with jwt_key
	Timeout        *time.Duration `json:"timeout"`                   // nil: the default
	MaxStale       *time.Duration `json:"max_stale"`                 // nil: the default
	MaxClerkCalls  int            `json:"max_clerk_calls"`
	MaxClerkRate   int            `json:"max_clerk_rate"`
	CacheMaxBytes  int64          `json:"cache_max_bytes"`
}

// loadInstance returns the shared instance for s, making it on first use.
func loadInstance(s instanceSettings, counted bool, logger *zap.Logger) (*instance, *lease, error) {
	if s.SecretKey != "" {
		s.PublishableKey = "" // the secret key fetches the keys: the Frontend API is not asked
	}
	return share("instance", s, counted, func() (*instance, error) { return newInstance(s, logger) })
}

func newInstance(s instanceSettings, logger *zap.Logger) (*instance, error) {
	inst := &instance{logger: logger, created: time.Now(), fetched: map[string]time.Time{}}
	var err error
	inst.pool, err = verify.NewPool(verify.PoolOptions{
		Timeout:        s.Timeout,
		MaxClerkCalls:  s.MaxClerkCalls,
		MaxClerkRate:   s.MaxClerkRate,
		CacheMaxBytes:  s.CacheMaxBytes,
		KeysMaxStale:   s.MaxStale,
		UserAgent:      userAgent(),
		OnClerkRequest: func(attempt backend.Attempt) { inst.observer().clerkRequest(attempt) },
		OnKeysFetch:    inst.keysFetched,
	})
	return inst, err
}

// keysFetched counts a fetch of the signing keys, notes when keys last
// came, and logs a failure. A URL whose first fetch failed is noted too,
// as if keys had come when the instance was made: the age of the keys in
// use is then how long the gateway has been without them, and an alert on
// it fires for a gateway that never got any (a key Clerk rejects, say).
func (i *instance) keysFetched(url string, err error) {
	i.observer().jwksFetch(err)
	i.mu.Lock()
	defer i.mu.Unlock()
	if err == nil {
		i.fetched[url] = time.Now()
		return
	}
	if _, noted := i.fetched[url]; !noted {
		i.fetched[url] = i.created
	}
	if backend.KindOf(err) == backend.KindKeyRejected {
		i.logger.Error("Clerk rejected the secret key that fetches its signing keys: JWTs are refused with 500 misconfigured "+
			"once the last good keys, if any, are too old; check secret_key", zap.String("url", url), zap.Error(err))
		return
	}
	i.logger.Warn("fetching Clerk's signing keys failed; keeping the last good keys, if any",
		zap.String("url", url), zap.Error(err))
}

// keysAge returns how old the keys fetched from each URL are.
func (i *instance) keysAge(now time.Time) map[string]time.Duration {
	i.mu.Lock()
	defer i.mu.Unlock()
	ages := make(map[string]time.Duration, len(i.fetched))
	for url, at := range i.fetched {
		ages[url] = now.Sub(at)
	}
	return ages
}

// start begins the instance's background work, once, and has it log to
// logger from now on.
func (i *instance) start(logger *zap.Logger) {
	i.mu.Lock()
	i.logger = logger.Named("jwks")
	i.mu.Unlock()
	i.started.Do(func() {
		ctx, stop := context.WithCancel(context.Background())
		i.stop, i.done = stop, make(chan struct{})
		go func() {
			defer close(i.done)
			i.pool.Run(ctx)
		}()
	})
}

// Destruct stops the instance's background work, which forgets its
// verdicts and closes its idle connections, when the last configuration
// using it is unloaded.
func (i *instance) Destruct() error {
	i.started.Do(func() {}) // never started: nothing runs, nor will
	if i.stop != nil {
		i.stop()
		<-i.done
	}
	return nil
}
