package verify

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// JWKSFetcher fetches an instance's key set. *backend.Client is one.
type JWKSFetcher interface {
	JWKS(ctx context.Context) (*backend.JWKS, error)
}

// DefaultMaxStale is how long the last good key set keeps being used
// through failed refreshes, when JWKSOptions does not say.
const DefaultMaxStale = time.Hour

// JWKSOptions tunes RemoteKeys. Zero values take the defaults.
type JWKSOptions struct {
	// Timeout is the budget of one fetch, retries included. Default
	// DefaultTimeout.
	Timeout time.Duration

	// MaxAge is how long a fetched set is used before it is refreshed.
	// Default 5 minutes, as in Clerk's SDKs.
	MaxAge time.Duration

	// MaxStale is how long past MaxAge the last good set keeps being used
	// while refreshes fail. After that, JWTs cannot be verified until
	// Clerk answers again. Default DefaultMaxStale.
	MaxStale time.Duration

	// RefetchInterval paces on-demand fetches (for a kid that is not in the
	// set, or while no set could be had): after a burst of three, one per
	// interval. It also spaces retries of a failing refresh. Default 5s.
	RefetchInterval time.Duration

	// Logger receives one line per fetch problem (see also SetLogger).
	// Default: no logging.
	Logger *zap.Logger

	// OnFetch, if set, is told how each fetch of the set ended (nil: it
	// brought usable keys). For metrics.
	OnFetch func(error)

	now   func() time.Time                     // the clock; time.Now unless a test sets it
	after func(time.Duration) <-chan time.Time // the refresher's pauses; time.After unless a test sets it
}

func (o *JWKSOptions) applyDefaults() {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 5 * time.Minute
	}
	if o.MaxStale <= 0 {
		o.MaxStale = DefaultMaxStale
	}
	if o.RefetchInterval <= 0 {
		o.RefetchInterval = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.after == nil {
		o.after = time.After
	}
}

// maxKeyIDLength bounds the "kid" that is looked up. Clerk's are instance
// ids ("ins_" and 27 characters).
const maxKeyIDLength = 128

// refetchBurst is how many on-demand fetches may happen back to back before
// RefetchInterval paces them: enough to pick up a key rotation right after a
// fetch, too few for made-up kids to hammer Clerk.
const refetchBurst = 3

// RemoteKeys is the key source backed by the instance's JWKS. It keeps one
// key set for one Clerk instance (never keys of another instance), fetches
// it on first use, refreshes it when it is older than MaxAge, refetches it
// when a token names a kid it does not hold, and keeps the last good set
// through failed refreshes for MaxStale. Concurrent fetches are coalesced
// into one. It never takes a key from a token.
type RemoteKeys struct {
	id       string // names this source, for scope
	fetcher  JWKSFetcher
	opts     JWKSOptions
	onDemand *rate.Limiter
	group    singleflight.Group

	// The background refresher: base bounds every fetch and ends with Stop.
	base      context.Context
	stopBase  context.CancelFunc
	startOnce sync.Once
	stopped   chan struct{} // closed when the refresher has returned

	logger atomic.Pointer[zap.Logger]

	mu          sync.RWMutex
	keys        map[string]*signingKey
	fetchedAt   time.Time // of keys; zero until a fetch succeeds
	lastAttempt time.Time
	lastErr     error
}

// NewRemoteKeys returns a key source that fetches from fetcher. It makes no
// network call until a key is asked for.
func NewRemoteKeys(fetcher JWKSFetcher, opts JWKSOptions) *RemoteKeys {
	opts.applyDefaults()
	base, stop := context.WithCancel(context.Background())
	r := &RemoteKeys{
		id:       rand.Text(),
		fetcher:  fetcher,
		opts:     opts,
		onDemand: rate.NewLimiter(rate.Every(opts.RefetchInterval), refetchBurst),
		base:     base,
		stopBase: stop,
		stopped:  make(chan struct{}),
	}
	r.logger.Store(opts.Logger)
	return r
}

// SetLogger sends the lines about fetch problems to logger from now on: a
// source that outlives the configuration that made it logs where the
// configuration in use says.
func (r *RemoteKeys) SetLogger(logger *zap.Logger) { r.logger.Store(logger) }

// Start fetches the set in the background right away and keeps it fresh:
// renewed at four fifths of MaxAge, retried with growing pauses (from
// RefetchInterval up to a minute) while fetches fail. It returns at once.
// Calling it again, or after Stop, does nothing.
func (r *RemoteKeys) Start() {
	r.startOnce.Do(func() {
		if r.base.Err() != nil {
			close(r.stopped)
			return
		}
		go r.keepFresh()
	})
}

// Stop ends the refresher and waits for it, and cancels any fetch under way
// (which is then neither logged nor reported as a failure). The source
// still answers from the set it holds, but fetches no more.
func (r *RemoteKeys) Stop() {
	r.stopBase()
	r.startOnce.Do(func() { close(r.stopped) })
	<-r.stopped
}

func (r *RemoteKeys) keepFresh() {
	defer close(r.stopped)
	failures := 0
	for {
		select {
		case <-r.base.Done():
			return
		case <-r.opts.after(r.untilNextRefresh(failures)):
		}
		if r.untilNextRefresh(0) > 0 {
			failures = 0 // refreshed on demand meanwhile: wait for the next renewal
			continue
		}
		if err := r.refresh(r.base, false); err != nil {
			failures++
		} else {
			failures = 0
		}
	}
}

// untilNextRefresh is how long the refresher waits: until the set is four
// fifths of MaxAge old (at once if there is none), or after failures, a
// pause doubling from RefetchInterval up to a minute.
func (r *RemoteKeys) untilNextRefresh(failures int) time.Duration {
	if failures > 0 {
		return min(r.opts.RefetchInterval<<min(failures-1, 10), time.Minute)
	}
	r.mu.RLock()
	fetchedAt := r.fetchedAt
	r.mu.RUnlock()
	if fetchedAt.IsZero() {
		return 0
	}
	return max(0, fetchedAt.Add(r.opts.MaxAge*4/5).Sub(r.opts.now()))
}

// Age returns how old the set in use is; false when none was fetched yet.
func (r *RemoteKeys) Age() (time.Duration, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.fetchedAt.IsZero() {
		return 0, false
	}
	return r.opts.now().Sub(r.fetchedAt), true
}

// current reports whether key is in the set in use, and the set is not
// past its stale limit.
func (r *RemoteKeys) current(key *signingKey) bool {
	now := r.opts.now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.keys[key.id] == key && now.Sub(r.fetchedAt) < r.opts.MaxAge+r.opts.MaxStale
}

// scope names this source and no other: the keys it holds change with
// its fetches, and only the Verifiers that use it see the same ones.
func (r *RemoteKeys) scope() string { return "jwks " + r.id }

// key returns the key named kid, fetching the set when needed.
func (r *RemoteKeys) key(ctx context.Context, kid string) (*signingKey, error) {
	if kid == "" || len(kid) > maxKeyIDLength {
		return nil, invalid("", "the token does not name a usable signing key")
	}
	now := r.opts.now()
	key, age := r.lookup(kid, now)
	switch {
	case key != nil && age < r.opts.MaxAge:
		return key, nil
	case key != nil && age < r.opts.MaxAge+r.opts.MaxStale:
		// Due for a refresh: serve the key now, refresh behind the request.
		r.refreshInBackground(now)
		return key, nil
	}
	if err := r.refresh(ctx, true); err != nil && ctx.Err() != nil {
		return nil, &Error{Reason: ReasonUnavailable, Description: "Clerk's signing keys could not be fetched in time", Err: err}
	}
	now = r.opts.now()
	if key, age = r.lookup(kid, now); key != nil && age < r.opts.MaxAge+r.opts.MaxStale {
		return key, nil
	}
	return nil, r.missing(now)
}

// lookup returns the key named kid and the age of the set holding it.
func (r *RemoteKeys) lookup(kid string, now time.Time) (*signingKey, time.Duration) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.keys[kid], now.Sub(r.fetchedAt)
}

// missing explains why no key could be returned: the set is fine and has no
// such kid (the token is invalid), or there is no usable set (Clerk is
// unavailable). The kids that do exist are never revealed: they are instance
// ids.
func (r *RemoteKeys) missing(now time.Time) *Error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.keys != nil && now.Sub(r.fetchedAt) < r.opts.MaxAge+r.opts.MaxStale {
		return invalid("", "no Clerk signing key matches the token's kid")
	}
	cause := r.lastErr
	if cause == nil {
		cause = errors.New("no key set fetched yet")
	}
	return &Error{
		Reason:      ReasonUnavailable,
		Description: "Clerk's signing keys are not available",
		RetryAfter:  r.opts.RefetchInterval,
		Err:         cause,
	}
}

// refreshInBackground starts a refresh unless one failed too recently.
func (r *RemoteKeys) refreshInBackground(now time.Time) {
	r.mu.RLock()
	recent := now.Sub(r.lastAttempt) < r.opts.RefetchInterval
	r.mu.RUnlock()
	if !recent {
		go func() { _ = r.refresh(r.base, false) }()
	}
}

// errRefetchPaced is what an on-demand fetch gets when the pace of
// RefetchInterval does not allow one now.
var errRefetchPaced = errors.New("on-demand key fetches are paced; not fetching again yet")

// refresh fetches the set, sharing one fetch among all concurrent callers
// (who join a fetch under way whatever its reason, without using up the
// on-demand pace). A caller stops waiting when its own context ends; the
// fetch goes on, bound by Timeout, for the others.
func (r *RemoteKeys) refresh(ctx context.Context, onDemand bool) error {
	result := r.group.DoChan("jwks", func() (any, error) {
		if onDemand && !r.onDemand.AllowN(r.opts.now(), 1) {
			return nil, errRefetchPaced
		}
		return nil, r.fetch()
	})
	select {
	case res := <-result:
		return res.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *RemoteKeys) fetch() error {
	r.mu.Lock()
	r.lastAttempt = r.opts.now()
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.base, r.opts.Timeout)
	defer cancel()
	keys, err := r.fetchKeys(ctx)
	if err != nil && r.base.Err() != nil {
		return err // cut short by Stop: not a failure of Clerk's
	}
	if r.opts.OnFetch != nil {
		r.opts.OnFetch(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.lastErr = err
		r.logger.Load().Warn("fetching Clerk's signing keys failed; keeping the last good keys, if any",
			zap.Error(err), zap.Int("keys_kept", len(r.keys)))
		return err
	}
	keepUnchanged(keys, r.keys)
	r.keys, r.fetchedAt, r.lastErr = keys, r.opts.now(), nil
	return nil
}

// keepUnchanged puts the keys of old that a fetch brought back unchanged
// into fresh, in place of their new copies: current compares pointers, and
// JWTs verified with a key that did not change stay cached across refreshes.
func keepUnchanged(fresh, old map[string]*signingKey) {
	for id, key := range fresh {
		if prev, ok := old[id]; ok && prev.algorithm == key.algorithm && prev.public.Equal(key.public) {
			fresh[id] = prev
		}
	}
}

// fetchKeys fetches the set and keeps its usable keys; a set with none is a
// failure, so that it does not replace a good one.
func (r *RemoteKeys) fetchKeys(ctx context.Context) (map[string]*signingKey, error) {
	set, err := r.fetcher.JWKS(ctx)
	if err != nil {
		return nil, err
	}
	keys := make(map[string]*signingKey, len(set.Keys))
	for i, raw := range set.Keys {
		key, err := parseJWK(raw)
		if err != nil {
			r.logger.Load().Warn("skipping a key of Clerk's JWKS that cannot verify Clerk JWTs",
				zap.Int("index", i), zap.Error(err))
			continue
		}
		if _, duplicate := keys[key.id]; !duplicate {
			keys[key.id] = &key
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("the JWKS holds no usable signing key (%d keys in all)", len(set.Keys))
	}
	return keys, nil
}
