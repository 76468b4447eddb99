package verify

import "time"

// Defaults of SharedOptions.
const (
	// DefaultMaxClerkCalls bounds the calls to Clerk in flight at once.
	// Clerk accepts 1,000 calls per 10 seconds from a production instance
	// (100 from a development one): at a typical 50 to 100 ms a call, 64 in
	// flight carry 640 to 1,280 calls a second, far beyond that, and still
	// over 100 a second when Clerk slows to half a second. Past it, more
	// calls at once would only be refused by Clerk or wait on it, while
	// each holds a connection, a file descriptor and a few goroutines.
	DefaultMaxClerkCalls = 64

	// DefaultCacheMaxBytes bounds the memory of the verdicts remembered:
	// 64 MiB holds some 20,000 verdicts on JWTs, or 50,000 on opaque tokens
	// without claims (counted at about 3 and 1 KiB), while verdicts with
	// outsized claims, which any machine of the instance can mint, evict
	// each other instead of growing the process.
	DefaultCacheMaxBytes = 64 << 20
)

// SharedOptions tune a Shared. Zero values take the defaults.
type SharedOptions struct {
	// MaxClerkCalls bounds the calls to Clerk in flight at once for all the
	// Verifiers that share the Shared. A credential that needs one more is
	// refused at once with ReasonCallsLimited; credentials answered from
	// the cache, and JWTs, need none. Default DefaultMaxClerkCalls.
	MaxClerkCalls int

	// CacheMaxBytes bounds the memory the remembered verdicts hold, as
	// estimated from each one's strings, scopes and claims (and a fixed
	// overhead): past it, the verdicts least used lately are forgotten.
	// Default DefaultCacheMaxBytes.
	CacheMaxBytes int64

	now func() time.Time // the clock; time.Now unless a test sets it
}

// Shared is what the Verifiers of one Clerk instance share: one cache of
// verdicts, bounded in bytes, and the calls to Clerk in flight, bounded in
// number and made once per credential for all of them. A Verifier answers
// only from the verdicts of Verifiers that verify alike (the same accepted
// types, keys, Backend, clock skew, cache TTL, authorized parties, audience
// and issuer), so sharing never lets one configuration's verdict answer for
// another's. It is safe for concurrent use.
type Shared struct {
	cache *verdictCache
	calls *clerkCalls
}

// NewShared returns a Shared. It starts nothing: the cache looks for
// expired verdicts only while it holds some.
func NewShared(opts SharedOptions) *Shared {
	if opts.MaxClerkCalls <= 0 {
		opts.MaxClerkCalls = DefaultMaxClerkCalls
	}
	if opts.CacheMaxBytes <= 0 {
		opts.CacheMaxBytes = DefaultCacheMaxBytes
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	return &Shared{cache: newVerdictCache(opts.CacheMaxBytes, opts.now), calls: newClerkCalls(opts.MaxClerkCalls)}
}

// Close forgets every verdict and stops looking for expired ones. The
// Verifiers that use the Shared still verify, but remember nothing more.
func (s *Shared) Close() { s.cache.close() }
