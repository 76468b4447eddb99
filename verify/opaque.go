package verify

import (
	"context"
	"errors"
	"time"
)

// verifyWithClerk asks Clerk about an opaque credential, once for all the
// requests presenting it at the same time, and remembers the verdict. The
// call runs with its own budget, detached from any one request, so that a
// request giving up does not fail the others; each request stops waiting
// when its own context ends, and the call is cancelled when the last one
// does. A call needs one of the Shared's slots: with none free, the
// credential is refused at once. With a shared cache, the call looks
// there first, and takes a slot only when it finds nothing.
func (v *Verifier) verifyWithClerk(ctx context.Context, tok *classified, key cacheKey) (*Identity, error) {
	tokenType := tok.kind.tokenType
	if v.opts.Backend == nil {
		return nil, notAccepted(tokenType, "opaque tokens cannot be verified here (no secret key is configured)")
	}
	var recall recaller
	if v.sharedKeys != nil {
		recall = func(callCtx context.Context) *Identity { return v.recallShared(callCtx, tok, key) }
	}
	ask := tok.kind.askClerk
	identity, err := v.shared.calls.do(ctx, key, v.opts.Timeout, recall, func(callCtx context.Context) (*Identity, error) {
		identity, err := ask(v, callCtx, tok.raw)
		if callCtx.Err() == nil { // a call cut short leaves nothing behind
			v.rememberClerkVerdict(key, tok.raw, identity, err)
		}
		return identity, err
	})
	switch {
	case errors.Is(err, errNoSlot):
		return nil, &Error{Reason: ReasonCallsLimited, TokenType: tokenType, RetryAfter: time.Second,
			Description: "too many credentials are being verified with Clerk right now", Err: err}
	case err != nil && (err == ctx.Err() || err == context.DeadlineExceeded): // this request's end, or the call's (spent in recall)
		return nil, &Error{Reason: ReasonUnavailable, TokenType: tokenType, Description: "Clerk did not answer in time", Err: err}
	}
	return identity, err
}

// rememberClerkVerdict caches a success for min(CacheTTL, expiry) and a
// refusal for negativeTTL, and shares the success through the shared
// cache, with the same expiry. Trouble reaching Clerk is never remembered.
func (v *Verifier) rememberClerkVerdict(key cacheKey, token string, identity *Identity, err error) {
	if v.opts.CacheTTL <= 0 {
		return
	}
	now := v.opts.now()
	entry := &cacheEntry{key: key, identity: identity, until: now.Add(v.opts.CacheTTL)}
	switch reason := ReasonOf(err); {
	case err == nil:
		if expiry := identity.ExpiresAt; !expiry.IsZero() && expiry.Before(entry.until) {
			entry.until = expiry
		}
		v.share(token, identity, entry.until)
	case reason == ReasonInvalid || reason == ReasonExpired:
		entry.refusal, entry.until = err, now.Add(min(negativeTTL, v.opts.CacheTTL))
	default:
		return
	}
	v.shared.cache.put(entry, now)
}

// share writes a success to the shared cache, in the background, valid
// until until.
func (v *Verifier) share(token string, identity *Identity, until time.Time) {
	if v.sharedKeys == nil {
		return
	}
	name, tokenMAC := v.sharedKeys.name(token)
	if entry, ok := v.sharedKeys.seal(tokenMAC, identity, until); ok {
		v.opts.SharedCache.put(name, entry, until)
	}
}

// recallShared looks an opaque credential up in the shared cache, within
// a share of the call's budget, and remembers what it finds in memory
// until the entry's expiry, or CacheTTL from now if that comes first: a
// verdict read never lives longer than where it came from. Anything but a
// valid, unexpired entry for this credential and scope is a miss.
func (v *Verifier) recallShared(ctx context.Context, tok *classified, key cacheKey) *Identity {
	name, tokenMAC := v.sharedKeys.name(tok.raw)
	var identity *Identity
	var expiry time.Time
	if data := v.opts.SharedCache.get(ctx, name, readBudget(v.opts.Timeout)); data != nil {
		var err error
		if identity, expiry, err = v.sharedKeys.open(tokenMAC, data, tok.kind.tokenType); err != nil {
			v.opts.SharedCache.onError(SharedCacheRead, errors.Join(ErrSharedEntryRejected, err))
		}
	}
	now := v.opts.now()
	hit := identity != nil && now.Before(expiry)
	if v.opts.OnCacheLookup != nil {
		v.opts.OnCacheLookup("shared", hit)
	}
	if !hit {
		return nil
	}
	until := now.Add(v.opts.CacheTTL)
	if expiry.Before(until) {
		until = expiry
	}
	v.shared.cache.put(&cacheEntry{key: key, identity: identity, until: until}, now)
	return identity
}

// shifted returns t moved by d, keeping the zero time zero.
func shifted(t time.Time, d time.Duration) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Add(d)
}
