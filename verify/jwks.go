package verify

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// jwksFetcher fetches an instance's key set. *backend.Client is one.
type jwksFetcher interface {
	JWKS(ctx context.Context) (*backend.JWKS, error)
}

// remoteKeysOptions tune remoteKeys. Zero values take the defaults.
type remoteKeysOptions struct {
	// url names where the set is fetched from, in what onFetch is told.
	url string

	// timeout is the budget of one fetch, retries included. Default
	// defaultTimeout.
	timeout time.Duration

	// maxAge is how long a fetched set is used before it is refreshed.
	// Default 5 minutes, as in Clerk's SDKs.
	maxAge time.Duration

	// maxStale is how long past maxAge the last good set keeps being used
	// while refreshes fail. After that, JWTs cannot be verified until
	// Clerk answers again.
	maxStale time.Duration

	// refetchInterval paces on-demand fetches (for a kid that is not in the
	// set, or while no set could be had): after a burst of three, one per
	// interval. It also spaces retries of a failing refresh. Default 5s.
	refetchInterval time.Duration

	// onFetch, if set, is told how each fetch of the set ended (nil: it
	// brought usable keys), and from where.
	onFetch func(url string, err error)

	now   func() time.Time                     // the clock; time.Now unless a test sets it
	after func(time.Duration) <-chan time.Time // the refresher's pauses; time.After unless a test sets it
}

func (o *remoteKeysOptions) applyDefaults() {
	if o.timeout <= 0 {
		o.timeout = defaultTimeout
	}
	if o.maxAge <= 0 {
		o.maxAge = 5 * time.Minute
	}
	if o.refetchInterval <= 0 {
		o.refetchInterval = 5 * time.Second
	}
	if o.onFetch == nil {
		o.onFetch = func(string, error) {}
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
// refetchInterval paces them: enough to pick up a key rotation right after a
// fetch, too few for made-up kids to hammer Clerk.
const refetchBurst = 3

// remoteKeys is the key source backed by the instance's JWKS. It keeps one
// key set for one Clerk instance (never keys of another instance), fetches
// it on first use, refreshes it when it is older than maxAge (in the
// background while run runs), refetches it when a token names a kid it
// does not hold, and keeps the last good set through failed refreshes for
// maxStale. Concurrent fetches are coalesced into one. It never takes a
// key from a token.
type remoteKeys struct {
	id       string // names this source, for scope
	fetcher  jwksFetcher
	opts     remoteKeysOptions
	onDemand *rate.Limiter
	group    singleflight.Group

	// set is the last set fetched, nil until a fetch succeeds: replaced
	// whole by each fetch, so that the check on every request answered
	// from the cache (current) reads it without a lock.
	set atomic.Pointer[fetchedKeys]

	mu          sync.RWMutex
	base        context.Context // bounds every fetch: run's, once it runs
	lastAttempt time.Time
	lastErr     error
}

// fetchedKeys is a fetched set of keys, by kid, and when it came.
type fetchedKeys struct {
	keys      map[string]*signingKey
	fetchedAt time.Time
}

// age is how old the set is at now; longer than any limit when there is
// none.
func (s *fetchedKeys) age(now time.Time) time.Duration {
	if s == nil {
		return math.MaxInt64
	}
	return now.Sub(s.fetchedAt)
}

// newRemoteKeys returns a key source that fetches from fetcher. It makes no
// network call until a key is asked for, or run runs.
func newRemoteKeys(fetcher jwksFetcher, opts remoteKeysOptions) *remoteKeys {
	opts.applyDefaults()
	return &remoteKeys{
		id:       rand.Text(),
		fetcher:  fetcher,
		opts:     opts,
		onDemand: rate.NewLimiter(rate.Every(opts.refetchInterval), refetchBurst),
		base:     context.Background(),
	}
}

// run fetches the set right away and keeps it fresh until ctx ends:
// renewed at four fifths of maxAge, retried with growing pauses (from
// refetchInterval up to a minute) while fetches fail. Every fetch, on
// demand too, is bounded by ctx from now on: its end cancels any fetch
// under way (which is then neither reported nor counted as a failure).
func (r *remoteKeys) run(ctx context.Context) {
	r.mu.Lock()
	r.base = ctx
	r.mu.Unlock()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.opts.after(r.untilNextRefresh(failures)):
		}
		if r.untilNextRefresh(0) > 0 {
			failures = 0 // refreshed on demand meanwhile: wait for the next renewal
			continue
		}
		if err := r.refresh(ctx, false); err != nil {
			failures++
		} else {
			failures = 0
		}
	}
}

// baseContext is what bounds fetches now.
func (r *remoteKeys) baseContext() context.Context {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.base
}

// untilNextRefresh is how long the refresher waits: until the set is four
// fifths of maxAge old (at once if there is none), or after failures, a
// pause doubling from refetchInterval up to a minute.
func (r *remoteKeys) untilNextRefresh(failures int) time.Duration {
	if failures > 0 {
		return min(r.opts.refetchInterval<<min(failures-1, 10), time.Minute)
	}
	set := r.set.Load()
	if set == nil {
		return 0
	}
	return max(0, set.fetchedAt.Add(r.opts.maxAge*4/5).Sub(r.opts.now()))
}

// current reports whether key is in the set in use, and the set is not
// past its stale limit.
func (r *remoteKeys) current(key *signingKey, now time.Time) bool {
	set := r.set.Load()
	return set != nil && set.keys[key.id] == key && set.age(now) < r.opts.maxAge+r.opts.maxStale
}

// scope names this source and no other: the keys it holds change with
// its fetches, and only the Verifiers that use it see the same ones.
func (r *remoteKeys) scope() string { return "jwks " + r.id }

// key returns the key named kid, fetching the set when needed.
func (r *remoteKeys) key(ctx context.Context, kid string) (*signingKey, error) {
	if kid == "" || len(kid) > maxKeyIDLength {
		return nil, invalid("", "the token does not name a usable signing key")
	}
	now := r.opts.now()
	key, age := r.lookup(kid, now)
	switch {
	case key != nil && age < r.opts.maxAge:
		return key, nil
	case key != nil && age < r.opts.maxAge+r.opts.maxStale:
		// Due for a refresh: serve the key now, refresh behind the request.
		r.refreshInBackground(now)
		return key, nil
	}
	refreshed := r.refresh(ctx, true)
	if refreshed != nil && ctx.Err() != nil {
		return nil, &Error{Reason: ReasonUnavailable, Description: "Clerk's signing keys could not be fetched in time", Err: refreshed}
	}
	now = r.opts.now()
	if key, age = r.lookup(kid, now); key != nil && age < r.opts.maxAge+r.opts.maxStale {
		return key, nil
	}
	if verr := asRefusal(refreshed); verr != nil && verr.Reason == ReasonRateLimited {
		return nil, verr // Clerk asked to wait: whether the kid exists cannot be told yet
	}
	return nil, r.missing(now)
}

// lookup returns the key named kid and the age of the set holding it.
func (r *remoteKeys) lookup(kid string, now time.Time) (*signingKey, time.Duration) {
	set := r.set.Load()
	var key *signingKey
	if set != nil {
		key = set.keys[kid]
	}
	return key, set.age(now)
}

// missing explains why no key could be returned: the set is fine and has no
// such kid (the token is invalid), Clerk rejected the key that fetches it
// (the configuration is wrong, as for an opaque credential Clerk would be
// asked about with it), or there is no usable set (Clerk is unavailable).
// The kids that do exist are never revealed: they are instance ids.
func (r *remoteKeys) missing(now time.Time) *Error {
	if r.set.Load().age(now) < r.opts.maxAge+r.opts.maxStale {
		return invalid("", "no Clerk signing key matches the token's kid")
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	cause := r.lastErr
	if cause == nil {
		cause = errors.New("no key set fetched yet")
	}
	if backend.KindOf(cause) == backend.KindKeyRejected {
		return clerkFailure("", cause)
	}
	return &Error{
		Reason:      ReasonUnavailable,
		Description: "Clerk's signing keys are not available",
		RetryAfter:  r.opts.refetchInterval,
		Err:         cause,
	}
}

// refreshInBackground starts a refresh unless one failed too recently.
func (r *remoteKeys) refreshInBackground(now time.Time) {
	r.mu.RLock()
	recent := now.Sub(r.lastAttempt) < r.opts.refetchInterval
	r.mu.RUnlock()
	if !recent {
		go func() { _ = r.refresh(r.baseContext(), false) }()
	}
}

// errRefetchPaced is what an on-demand fetch gets when the pace of
// RefetchInterval does not allow one now.
var errRefetchPaced = errors.New("on-demand key fetches are paced; not fetching again yet")

// refresh fetches the set, sharing one fetch among all concurrent callers
// (who join a fetch under way whatever its reason, without using up the
// on-demand pace). A caller stops waiting when its own context ends; the
// fetch goes on, bound by Timeout, for the others.
func (r *remoteKeys) refresh(ctx context.Context, onDemand bool) error {
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

func (r *remoteKeys) fetch() error {
	r.mu.Lock()
	r.lastAttempt = r.opts.now()
	base := r.base
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(base, r.opts.timeout)
	defer cancel()
	keys, err := r.fetchKeys(ctx)
	if err != nil && base.Err() != nil {
		return err // cut short by the end of run: not a failure of Clerk's
	}
	r.opts.onFetch(r.opts.url, err)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.lastErr = err
		return err
	}
	if last := r.set.Load(); last != nil {
		keepUnchanged(keys, last.keys)
	}
	r.set.Store(&fetchedKeys{keys: keys, fetchedAt: r.opts.now()})
	r.lastErr = nil
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

// fetchKeys fetches the set and keeps its usable keys (one odd key does
// not make the others unusable); a set with none is a failure, which says
// why each was skipped, so that it does not replace a good one.
func (r *remoteKeys) fetchKeys(ctx context.Context) (map[string]*signingKey, error) {
	set, err := r.fetcher.JWKS(ctx)
	if err != nil {
		return nil, err
	}
	keys := make(map[string]*signingKey, len(set.Keys))
	var skipped []error
	for i, raw := range set.Keys {
		key, err := parseJWK(raw)
		if err != nil {
			skipped = append(skipped, fmt.Errorf("key %d: %w", i, err))
			continue
		}
		if _, duplicate := keys[key.id]; !duplicate {
			keys[key.id] = &key
		}
	}
	switch {
	case len(set.Keys) == 0:
		return nil, errors.New("the JWKS holds no key")
	case len(keys) == 0:
		return nil, fmt.Errorf("the JWKS holds no usable signing key (%d keys in all): %w", len(set.Keys), errors.Join(skipped...))
	}
	return keys, nil
}
