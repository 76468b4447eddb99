package verify

import (
	"context"
	"errors"
	"fmt"
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

// What the durations and bounds of PoolOptions may be.
var (
	timeoutRule = durationRule{name: "timeout", def: defaultTimeout, most: time.Hour,
		whyMost: "a request would wait that long for Clerk, holding a connection and a call of max_clerk_calls",
		why0:    "would give Clerk no time to answer"}
	keysMaxStaleRule = durationRule{name: "jwks_max_stale", def: defaultKeysMaxStale, most: 24 * time.Hour,
		whyMost: "keys Clerk may have rotated out, a compromised one say, would verify JWTs that long while Clerk cannot be reached"}
	maxClerkCallsRule = countRule[int]{name: "max_clerk_calls", def: defaultMaxClerkCalls, most: 1000,
		whyMost: "more calls than Clerk takes in 10 seconds from a production instance bound no connection that matters"}
	maxClerkRateRule  = countRule[int]{name: "max_clerk_rate", def: defaultMaxClerkRate}
	cacheMaxBytesRule = countRule[int64]{name: "cache_max_bytes", def: defaultCacheMaxBytes}
)

// PoolOptions tune a Pool. Zero values take the defaults; a duration that
// is set to 0 means none where none makes sense, and is refused elsewhere.
type PoolOptions struct {
	// Timeout is the budget of one call to Clerk, retries included: a
	// verification of an opaque credential, or a fetch of the signing
	// keys. 0 is refused, and so is more than an hour. Default 5s.
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
	// 64, and 20 a second; more than 1,000 calls in flight is refused (see
	// Setup.Cautions for a rate past Clerk's). After Clerk answers 429, no call is made
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
	// again. 0: never past their refresh; more than 24 hours is refused.
	// Default 1h.
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
	timeout, err := timeoutRule.read(opts.Timeout)
	if err != nil {
		return nil, err
	}
	keysStale, err := keysMaxStaleRule.read(opts.KeysMaxStale)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(
		maxClerkCallsRule.read(&opts.MaxClerkCalls),
		maxClerkRateRule.read(&opts.MaxClerkRate),
		cacheMaxBytesRule.read(&opts.CacheMaxBytes),
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

// countRule is what a bound of the options may be: its name, its default
// (when not set, 0), and its ceiling (none when 0) with why there is one.
type countRule[N int | int64] struct {
	name      string
	def, most N
	whyMost   string
}

// read checks the bound n: the default when it is not set, the value
// otherwise; a negative value, or one over the ceiling, is refused.
func (r countRule[N]) read(n *N) error {
	switch {
	case *n < 0:
		return fmt.Errorf("%s must not be negative", r.name)
	case r.most > 0 && *n > r.most:
		return fmt.Errorf("%s %d is over its most, %d: %s", r.name, *n, r.most, r.whyMost)
	case *n == 0:
		*n = r.def
	}
	return nil
}

// durationRule is what an optional duration of the options may be: its
// name, its default (when not set, nil), its ceiling with why there is
// one, and what 0 means: none, or nothing that could work (why0 says so,
// and 0 is refused).
type durationRule struct {
	name          string
	def, most     time.Duration
	whyMost, why0 string
}

// read checks the duration d: the default when it is not set, the value
// otherwise; a negative value, one over the ceiling, and 0 where it means
// nothing that could work are refused.
func (r durationRule) read(d *time.Duration) (time.Duration, error) {
	switch {
	case d == nil:
		return r.def, nil
	case *d < 0:
		return 0, fmt.Errorf("%s must not be negative", r.name)
	case *d > r.most:
		return 0, fmt.Errorf("%s %v is over its most, %v: %s", r.name, *d, r.most, r.whyMost)
	case *d == 0 && r.why0 != "":
		return 0, fmt.Errorf("%s 0 %s: set a duration, or leave %s out for %v", r.name, r.why0, r.name, r.def)
	}
	return *d, nil
}
