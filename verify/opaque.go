package verify

import (
	"context"
	"net"
	"net/http"
	"time"
)

// verifyWithClerk asks Clerk about an opaque credential, once for all the
// requests presenting it at the same time, and remembers the verdict. The
// call runs with its own budget, detached from any one request, so that a
// request giving up does not fail the others; each request stops waiting
// when its own context ends, and the call is cancelled when the last one
// does. A call needs one of the Pool's slots, and one of the calls its
// rate allows, both within the share of the client that starts it (r's,
// or "" for Verify's callers), and none is made while Clerk asks to wait:
// short of any of them, the credential is refused at once. With a Store,
// the call looks there first, within a share of its budget (the rate is
// spent on calls to Clerk only).
func (v *Verifier) verifyWithClerk(ctx context.Context, cred *credential, key cacheKey, r *http.Request) (*Identity, error) {
	tokenType := cred.kind.tokenType
	if v.clerk == nil {
		return nil, notAccepted(tokenType, "opaque tokens cannot be verified here (no secret key is configured)")
	}
	client := v.client(r)
	identity, err := v.pool.calls.do(ctx, key, client, v.pool.timeout, func(callCtx context.Context) (*Identity, error) {
		if identity := v.recall(callCtx, cred, key); identity != nil {
			return identity, nil
		}
		if err := v.pool.budget.admit(client); err != nil {
			return nil, err
		}
		identity, err := cred.kind.askClerk(v, callCtx, cred.raw)
		v.pool.budget.observe(err)
		if err == nil {
			identity.TokenType, identity.Format = tokenType, Opaque
		}
		err = stamped(err, tokenType, Opaque)
		if callCtx.Err() == nil { // a call cut short leaves nothing behind
			v.rememberClerkVerdict(key, cred.raw, identity, err)
		}
		return identity, err
	})
	if err != nil && (err == ctx.Err() || err == context.DeadlineExceeded) { // this request's end, or the call's
		return nil, &Error{Reason: ReasonUnavailable, TokenType: tokenType, Description: "Clerk did not answer in time", Err: err}
	}
	return identity, err
}

// client names who sent r, for the fair shares of calls to Clerk; Verify's
// callers (no request) are all one client.
func (v *Verifier) client(r *http.Request) string {
	if r == nil {
		return ""
	}
	return v.clientOf(r)
}

// remoteHost is the default Options.ClientOf: the host of the address the
// request came from.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// rememberClerkVerdict caches a success for min(CacheTTL, expiry), and
// shares it through the Store with the same expiry; and a refusal for as
// long as refusalMemory says. Trouble reaching Clerk is never remembered;
// with CacheTTL 0, nothing is.
func (v *Verifier) rememberClerkVerdict(key cacheKey, token string, identity *Identity, err error) {
	if v.cacheTTL <= 0 {
		return
	}
	now := v.now()
	entry := &cacheEntry{key: key, identity: identity, until: now.Add(v.cacheTTL)}
	switch reason := ReasonOf(err); {
	case err == nil:
		if expiry := identity.ExpiresAt; !expiry.IsZero() && expiry.Before(entry.until) {
			entry.until = expiry
		}
		if v.shared != nil {
			v.shared.share(token, identity, now, entry.until)
		}
	case reason == ReasonInvalid || reason == ReasonExpired:
		entry.refusal, entry.refusedFor = err, v.pool.cache.refusalMemory(key, now)
		entry.until = now.Add(entry.refusedFor)
	default:
		return
	}
	v.pool.cache.put(entry, now)
}

// recall looks an opaque credential up in the Store, within a share of
// the call's budget, and remembers what it finds in memory until the
// entry's expiry, or CacheTTL after Clerk's answer if that comes first: a
// verdict read never lives longer than where it came from, nor longer
// than this Verifier would keep its own (a credential revoked since is
// refused as soon as either says). Anything but a valid, unexpired entry
// for this credential is a miss (nil).
func (v *Verifier) recall(ctx context.Context, cred *credential, key cacheKey) *Identity {
	if v.shared == nil {
		return nil
	}
	now := v.now()
	budget := min(v.pool.timeout/4, maxStoreReadTime)
	identity, answered, expiry := v.shared.recall(ctx, budget, cred.raw, cred.kind.tokenType, now.Add(v.cacheTTL))
	until := answered.Add(v.cacheTTL)
	if expiry.Before(until) {
		until = expiry
	}
	now = v.now()
	hit := identity != nil && now.Before(until)
	v.onCacheLookup("shared", hit)
	if !hit {
		return nil
	}
	v.pool.cache.put(&cacheEntry{key: key, identity: identity, until: until}, now)
	return identity
}

// shifted returns t moved by d, keeping the zero time zero.
func shifted(t time.Time, d time.Duration) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Add(d)
}
