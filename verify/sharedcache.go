package verify

import (
	"context"
	"errors"
	"io/fs"
	"time"
)

// VerdictStore is a second level of remembered verdicts, behind the
// in-memory cache, that several processes share (a Caddy cluster's
// storage, for one): bytes under string keys. Values are written by
// SharedCache, authenticated and checked on every read, so the store need
// not be trusted to keep them intact; it only must not block for long when
// the context has ended.
type VerdictStore interface {
	// Get returns the value stored under key, or an error that is
	// fs.ErrNotExist when there is none.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put stores value under key. The value is of no use after expiry: a
	// store that can forget it then may.
	Put(ctx context.Context, key string, value []byte, expiry time.Time) error
}

// Bounds of a SharedCache.
const (
	// maxSharedReadTime caps the share of a call's budget (Options.Timeout)
	// that a lookup in the VerdictStore may take: a quarter of the budget,
	// at most this. A lookup that takes longer is given up, and Clerk asked.
	maxSharedReadTime = 250 * time.Millisecond

	// DefaultSharedCacheWrites bounds the writes to the VerdictStore in
	// flight at once. Writes happen after Clerk answered, at most one per
	// call to Clerk: a verdict that finds every slot taken is not shared
	// (and counted as dropped).
	DefaultSharedCacheWrites = 8

	// sharedWriteTimeout bounds one write to the VerdictStore.
	sharedWriteTimeout = 5 * time.Second

	// maxSharedReads bounds the reads of the VerdictStore in flight, those
	// given up on but not yet returned included (a store may ignore its
	// context): past it, lookups are skipped, and Clerk asked.
	maxSharedReads = 64
)

// Operations of a SharedCache, as its OnError names them.
const (
	SharedCacheRead  = "read"
	SharedCacheWrite = "write"
)

// Errors a SharedCache reports to OnError besides the store's own.
var (
	// ErrSharedWriteDropped: a verdict was not shared because as many
	// writes as allowed were in flight.
	ErrSharedWriteDropped = errors.New("as many writes to the shared cache as allowed are in flight: a verdict was not shared")
	// ErrSharedReadTimeout: a lookup was given up because the store did
	// not answer in time, or skipped because as many reads as allowed were
	// still in flight.
	ErrSharedReadTimeout = errors.New("the shared cache did not answer in time")
	// ErrSharedEntryRejected: an entry was malformed, too large, or failed
	// its authentication (written without the secret, or for another
	// configuration); it is treated as absent.
	ErrSharedEntryRejected = errors.New("an entry of the shared cache failed its check and was ignored")
)

// SharedCacheOptions tune a SharedCache. Zero values take the defaults.
type SharedCacheOptions struct {
	// MaxWrites bounds the writes in flight. Default
	// DefaultSharedCacheWrites.
	MaxWrites int

	// OnError, if set, is told of every failed operation: SharedCacheRead
	// or SharedCacheWrite, and why (the store's error, or one of the
	// ErrShared… errors). For logs and metrics; it must be quick.
	OnError func(op string, err error)
}

// SharedCache shares the verdicts on opaque credentials of Verifiers in
// several processes through a VerdictStore: a Verifier with a SharedCache
// (Options.SharedCache) looks a credential up there after its in-memory
// cache and before asking Clerk, once for all the requests presenting it
// at the same time, within a small share of its Timeout; and shares there,
// in the background, what Clerk verified. Only successes are shared, until
// the credential's expiry or CacheTTL after Clerk's answer, whichever
// comes first; a process that reads a verdict never keeps it longer.
// Refusals are not shared: another process asks Clerk, which refuses
// again.
//
// Keys and entries are derived from, and authenticated with,
// Options.SharedCacheSecret (HKDF-SHA256, HMAC-SHA256): a store holds no
// credential, no secret and no unkeyed hash of either, and a writer
// without the secret cannot plant a verdict. Verifiers that verify opaque
// credentials differently (another Clerk instance or key, another audience
// or clock skew) never read each other's entries.
//
// Trouble with the store never blocks a request nor lets one through: a
// failed or slow lookup is a miss, and Clerk is asked.
type SharedCache struct {
	store   VerdictStore
	reads   chan struct{} // one token per read in flight
	writes  chan struct{} // one token per write in flight
	onError func(op string, err error)
}

// NewSharedCache returns a SharedCache over store.
func NewSharedCache(store VerdictStore, opts SharedCacheOptions) *SharedCache {
	if opts.MaxWrites <= 0 {
		opts.MaxWrites = DefaultSharedCacheWrites
	}
	if opts.OnError == nil {
		opts.OnError = func(string, error) {}
	}
	return &SharedCache{store: store, reads: make(chan struct{}, maxSharedReads), writes: make(chan struct{}, opts.MaxWrites),
		onError: opts.OnError}
}

// readBudget is the share of a call's budget a lookup may take.
func readBudget(timeout time.Duration) time.Duration { return min(timeout/4, maxSharedReadTime) }

// get reads key within budget. The read runs apart, so that a store that
// ignores its context still costs the request no more than budget, and
// holds a read slot until it returns. A miss is nil, whatever its cause.
func (s *SharedCache) get(ctx context.Context, key string, budget time.Duration) []byte {
	if !tryTake(s.reads) {
		s.onError(SharedCacheRead, ErrSharedReadTimeout)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		defer func() { <-s.reads }()
		data, err := s.store.Get(ctx, key)
		done <- result{data, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && !errors.Is(r.err, fs.ErrNotExist) {
			s.onError(SharedCacheRead, r.err)
		}
		return r.data
	case <-ctx.Done():
		s.onError(SharedCacheRead, ErrSharedReadTimeout)
		return nil
	}
}

// put writes value under key in the background, if a write slot is free;
// else the verdict is not shared, and the drop reported.
func (s *SharedCache) put(key string, value []byte, expiry time.Time) {
	if !tryTake(s.writes) {
		s.onError(SharedCacheWrite, ErrSharedWriteDropped)
		return
	}
	go func() {
		defer func() { <-s.writes }()
		ctx, cancel := context.WithTimeout(context.Background(), sharedWriteTimeout)
		defer cancel()
		if err := s.store.Put(ctx, key, value, expiry); err != nil {
			s.onError(SharedCacheWrite, err)
		}
	}()
}
