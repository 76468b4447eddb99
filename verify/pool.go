package verify

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// The defaults of PoolOptions.
const (
	// defaultTimeout is the budget of one call to Clerk, retries included.
	defaultTimeout = 5 * time.Second

	// defaultMaxClerkCalls bounds the calls to Clerk in flight at once,
	// each of which holds a connection, a file descriptor and a few
	// goroutines. What Clerk is asked a second is bounded by MaxClerkRate,
	// not by this: at 50 to 100 ms a call, 64 in flight could make 640 to
	// 1,280 calls a second, and still over 100 when Clerk slows to half a
	// second, so the rate, not this bound, is what is reached first while
	// Clerk answers; this one holds when Clerk slows down or hangs.
	defaultMaxClerkCalls = 64

	// defaultCacheMaxBytes bounds the memory of the verdicts remembered:
	// 64 MiB holds some 28,000 verdicts on M2M JWTs, or 85,000 on opaque
	// tokens without claims (counted at about 2.4 and 0.8 KB, holding 1.5
	// and 0.5: TestVerdictMemory), while verdicts with outsized claims,
	// which any machine of the instance can mint, evict each other instead
	// of growing the process.
	defaultCacheMaxBytes = 64 << 20

	// defaultKeysMaxStale is how long the last good signing keys keep
	// being used through failed refreshes.
	defaultKeysMaxStale = time.Hour

	// sweepInterval is how often a running Pool looks through all the
	// verdicts it holds for expired ones (those at the front of its order
	// are dropped whenever one is added).
	sweepInterval = time.Minute
)

// PoolOptions tune a Pool. Zero values take the defaults; a duration that
// is set to 0 means none where none makes sense, and is refused elsewhere.
type PoolOptions struct {
	// Timeout is the budget of one call to Clerk, retries included: a
	// verification of an opaque credential, or a fetch of the signing
	// keys. Default 5s.
	Timeout *time.Duration

	// MaxClerkCalls bounds the calls to Clerk in flight at once, for all
	// the Verifiers of the Pool, and the connections to Clerk; MaxClerkRate
	// the calls a second that verify credentials, counted over 10 seconds
	// as Clerk counts its limit (20 a second: 200 in each 10 seconds, which
	// a burst may spend at once). Both are shared between clients
	// (Options.ClientOf) by one rule: once half of it is in use, a client
	// that already holds its fair share (the bound divided by one more than
	// the number of clients holding some) is refused, so that one client,
	// alone, takes about half, and cannot take the room a client that comes
	// next needs. A credential that needs a call beyond either bound, or
	// the client's share of it, is refused at once with ReasonCallsLimited;
	// credentials answered from the cache, and JWTs, need none. Defaults
	// 64, and 20 a second. After Clerk answers 429, no call is made
	// (fetches of the signing keys included) until its Retry-After has
	// passed, or 10s when it gives none: meanwhile a credential that needs
	// one is refused with ReasonRateLimited, and RetryAfter the time left.
	MaxClerkCalls, MaxClerkRate int

	// CacheMaxBytes bounds the memory the remembered verdicts hold, as
	// estimated from each one's strings, scopes and claims (and a fixed
	// overhead): past it, the verdicts least used lately are forgotten.
	// Default 64 MiB.
	CacheMaxBytes int64

	// KeysMaxStale is how long Clerk's signing keys keep being used when
	// they cannot be refreshed (they are renewed every 4 minutes); after
	// that, JWTs are refused with ReasonUnavailable until Clerk answers
	// again. Default 1h; 0: never past their refresh.
	KeysMaxStale *time.Duration

	// UserAgent is sent with every call to Clerk.
	UserAgent string

	// OnClerkRequest, if set, is told of every HTTP request to Clerk, and
	// OnKeysFetch of how every fetch of the signing keys ended (nil: it
	// brought usable keys) and from which URL. For logs and metrics; they
	// must be quick.
	OnClerkRequest func(backend.Attempt)
	OnKeysFetch    func(url string, err error)

	now func() time.Time // the clock; time.Now unless a test sets it
}

// Pool is what the Verifiers of one Clerk instance share: the connections
// to Clerk, bounded in number; the signing keys of the instance; one
// cache of verdicts, bounded in bytes; and the calls to Clerk in flight,
// bounded in number and made once per credential for all of them. A
// Verifier answers only from the verdicts of Verifiers that verify alike
// (the same accepted types, keys, clock skew, cache TTL, authorized
// parties, audience and issuer), so sharing never lets one configuration's
// verdict answer for another's. It is safe for concurrent use.
type Pool struct {
	opts       PoolOptions
	timeout    time.Duration
	keysStale  time.Duration
	httpClient *http.Client
	cache      *verdictCache
	calls      *clerkCalls
	budget     *clerkBudget

	mu      sync.Mutex
	sources map[string]*remoteKeys // by where they are fetched from, and with which key
	running context.Context        // Run's, while it runs
	workers sync.WaitGroup         // the refreshers Run started
}

// NewPool checks opts and returns a Pool. It starts nothing and makes no
// network call: signing keys are fetched when first needed, and kept fresh
// while Run runs.
func NewPool(opts PoolOptions) (*Pool, error) {
	timeout, err := durationOption("timeout", opts.Timeout, defaultTimeout, false)
	if err != nil {
		return nil, err
	}
	keysStale, err := durationOption("jwks_max_stale", opts.KeysMaxStale, defaultKeysMaxStale, true)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(
		countOption("max_clerk_calls", &opts.MaxClerkCalls, defaultMaxClerkCalls),
		countOption("max_clerk_rate", &opts.MaxClerkRate, defaultMaxClerkRate),
		countOption("cache_max_bytes", &opts.CacheMaxBytes, defaultCacheMaxBytes),
	); err != nil {
		return nil, err
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	return &Pool{
		opts:       opts,
		timeout:    timeout,
		keysStale:  keysStale,
		httpClient: backend.NewHTTPClient(opts.MaxClerkCalls),
		cache:      newVerdictCache(opts.CacheMaxBytes, opts.now),
		calls:      newClerkCalls(opts.MaxClerkCalls),
		budget:     newClerkBudget(opts.MaxClerkRate, opts.now),
		sources:    map[string]*remoteKeys{},
	}, nil
}

// Run keeps the Pool's signing keys fresh (fetched at once, then renewed
// before they age) and its cache clean of expired verdicts, until ctx
// ends; then it stops every fetch under way, forgets every verdict and
// closes the idle connections, and returns. The Verifiers of the Pool
// still verify after, but remember nothing more. Run it once.
func (p *Pool) Run(ctx context.Context) {
	p.mu.Lock()
	p.running = ctx
	for _, source := range p.sources {
		p.workers.Go(func() { source.run(ctx) })
	}
	p.mu.Unlock()
	sweeps := time.NewTicker(sweepInterval)
	defer sweeps.Stop()
	for ctx.Err() == nil {
		select {
		case <-sweeps.C:
			p.cache.sweep()
		case <-ctx.Done():
		}
	}
	p.mu.Lock()
	p.running = nil // no refresher starts from now on: the wait below is for all of them
	p.mu.Unlock()
	p.workers.Wait()
	p.cache.close()
	p.httpClient.CloseIdleConnections()
}

// client returns a client of Clerk's API at url that calls with the keys
// given, over the Pool's connections.
func (p *Pool) client(url, secretKey, machineSecretKey string) (*backend.Client, error) {
	return backend.New(backend.Options{
		URL:              url,
		SecretKey:        secretKey,
		MachineSecretKey: machineSecretKey,
		UserAgent:        p.opts.UserAgent,
		HTTPClient:       p.httpClient,
		Observe:          p.opts.OnClerkRequest,
	})
}

// remoteKeys returns the Pool's signing keys fetched by fetcher from url,
// within the Pool's budget, made on first use; client names who fetches
// them (its fingerprint). Keys made while Run runs are kept fresh from
// then on.
func (p *Pool) remoteKeys(url string, client *backend.Client, fetcher jwksFetcher) *remoteKeys {
	p.mu.Lock()
	defer p.mu.Unlock()
	name := url + " " + client.Fingerprint()
	if source, ok := p.sources[name]; ok {
		return source
	}
	source := newRemoteKeys(budgetedKeys{fetcher, p.budget}, remoteKeysOptions{url: url, timeout: p.timeout, maxStale: p.keysStale,
		onFetch: p.opts.OnKeysFetch, now: p.opts.now})
	p.sources[name] = source
	if p.running != nil && p.running.Err() == nil {
		p.workers.Go(func() { source.run(p.running) })
	}
	return source
}

// countOption checks a bound named name: def when it is not set (0), the
// value otherwise; a negative value is refused.
func countOption[N int | int64](name string, n *N, def N) error {
	switch {
	case *n < 0:
		return errors.New(name + " must be positive")
	case *n == 0:
		*n = def
	}
	return nil
}

// durationOption reads an optional duration named name: def when it is
// not set, the value otherwise; 0 is refused unless zeroIsNone, and a
// negative value always.
func durationOption(name string, d *time.Duration, def time.Duration, zeroIsNone bool) (time.Duration, error) {
	switch {
	case d == nil:
		return def, nil
	case *d < 0 || *d == 0 && !zeroIsNone:
		return 0, errors.New(name + " must be positive")
	}
	return *d, nil
}
