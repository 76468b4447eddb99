package verify

import (
	"context"
	"time"
)

// verifyWithClerk asks Clerk about an opaque credential, once for all the
// requests presenting it at the same time, and remembers the verdict. The
// call runs with its own budget, detached from any one request, so that a
// request giving up does not fail the others; each request stops waiting
// when its own context ends.
func (v *Verifier) verifyWithClerk(ctx context.Context, tok *classified, key tokenKey) (*Identity, error) {
	tokenType := tok.kind.tokenType
	if v.opts.Backend == nil {
		return nil, notAccepted(tokenType, "opaque tokens cannot be verified here (no secret key is configured)")
	}
	ask := tok.kind.askClerk
	result := v.flight.DoChan(string(key[:]), func() (any, error) {
		callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.opts.Timeout)
		defer cancel()
		identity, err := ask(v, callCtx, tok.raw)
		v.rememberClerkVerdict(key, identity, err)
		return identity, err
	})
	select {
	case res := <-result:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*Identity), nil
	case <-ctx.Done():
		return nil, &Error{Reason: ReasonUnavailable, TokenType: tokenType, Description: "Clerk did not answer in time", Err: ctx.Err()}
	}
}

// rememberClerkVerdict caches a success for min(CacheTTL, expiry) and a
// refusal for negativeTTL. Trouble reaching Clerk is never remembered.
func (v *Verifier) rememberClerkVerdict(key tokenKey, identity *Identity, err error) {
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
	v.opaque.put(entry)
}

// shifted returns t moved by d, keeping the zero time zero.
func shifted(t time.Time, d time.Duration) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Add(d)
}
