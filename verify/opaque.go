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
// credential is refused at once.
func (v *Verifier) verifyWithClerk(ctx context.Context, tok *classified, key cacheKey) (*Identity, error) {
	tokenType := tok.kind.tokenType
	if v.opts.Backend == nil {
		return nil, notAccepted(tokenType, "opaque tokens cannot be verified here (no secret key is configured)")
	}
	ask := tok.kind.askClerk
	identity, err := v.shared.calls.do(ctx, key, v.opts.Timeout, func(callCtx context.Context) (*Identity, error) {
		identity, err := ask(v, callCtx, tok.raw)
		if callCtx.Err() == nil { // a call cut short leaves nothing behind
			v.rememberClerkVerdict(key, identity, err)
		}
		return identity, err
	})
	switch {
	case errors.Is(err, errNoSlot):
		return nil, &Error{Reason: ReasonCallsLimited, TokenType: tokenType, RetryAfter: time.Second,
			Description: "too many credentials are being verified with Clerk right now", Err: err}
	case err != nil && err == ctx.Err():
		return nil, &Error{Reason: ReasonUnavailable, TokenType: tokenType, Description: "Clerk did not answer in time", Err: err}
	}
	return identity, err
}

// rememberClerkVerdict caches a success for min(CacheTTL, expiry) and a
// refusal for negativeTTL. Trouble reaching Clerk is never remembered.
func (v *Verifier) rememberClerkVerdict(key cacheKey, identity *Identity, err error) {
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
	case reason == ReasonInvalid || reason == ReasonExpired:
		entry.refusal, entry.until = err, now.Add(min(negativeTTL, v.opts.CacheTTL))
	default:
		return
	}
	v.shared.cache.put(entry, now)
}

// shifted returns t moved by d, keeping the zero time zero.
func shifted(t time.Time, d time.Duration) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Add(d)
}
