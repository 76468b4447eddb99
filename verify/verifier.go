package verify

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// Verifier verifies credentials. It is safe for concurrent use.
type Verifier struct {
	accept            []TokenType
	clerk             clerkAPI  // verifies opaque credentials; nil without a secret key
	keys              keySource // verifies JWTs; nil without keys for them
	fingerprint       string    // names whom clerk asks, and with which keys
	opaqueWith        string    // the key clerk asks with, named as Setup names it
	jwtsWith          string    // what keys holds, named as Setup names it
	apiURL            string
	frontendURL       string // the instance's Frontend API, from the publishable key; "" without one
	clockSkew         time.Duration
	cacheTTL          time.Duration
	authorizedParties []string
	issuer            []string
	audience          []string
	cookies           *browserCookies // reads sessions from cookies; nil without a publishable key
	policy            policy
	pool              *Pool
	scope             scope           // of its verdicts in the pool's cache
	shared            *sharedVerdicts // its use of a Store; nil without one
	onCacheLookup     func(cache string, hit bool)
	clientOf          func(*http.Request) string
	now               func() time.Time
}

// Verify verifies a credential as presented in an Authorization header
// (without the "Bearer " scheme). It returns the Identity of a valid
// credential, or an *Error. A credential verified recently is answered from
// a cache, at the cost of hashing it.
func (v *Verifier) Verify(ctx context.Context, credential string) (*Identity, error) {
	return v.verify(ctx, credential, nil, nil)
}

// VerifyRequest verifies the credential of r, bounded by r's context: the
// bearer token of its Authorization header (exactly one header, the Bearer
// scheme in any case, one space, one token) or, when session tokens are
// accepted and that header holds no credential (there is none, it is
// empty, or it is of another scheme, such as Basic), the session in its
// cookies, read as Clerk's SDK reads them for the app of Options.PublishableKey
// (SessionCookie and ClientUATCookie, or their names suffixed for the app;
// none are read without a publishable key). The cookie may hold only a
// session token, which counts only with the ClientUATCookie of a browser
// signed in since the token was minted (else ReasonSessionOutdated). A
// request with neither has ReasonMissing.
func (v *Verifier) VerifyRequest(r *http.Request) (*Identity, error) {
	token, browser, err := v.credentialOf(r)
	if err != nil {
		return nil, refusal(err)
	}
	return v.verify(r.Context(), token, r, browser)
}

// verify runs the pipeline: the credential's length, then the cache, or
// its classification (its type and format, once), the checks its type
// needs and the verification, locally or with Clerk; then, for a session
// from a browser's cookies, that the browser is signed in; then the
// policy. r is the request that presented token (nil for Verify's caller),
// browser the session whose cookies held it (nil for a token from an
// Authorization header or Verify's caller). Every refusal is an *Error
// that carries the credential's type and format, as far as they are known.
func (v *Verifier) verify(ctx context.Context, token string, r *http.Request, browser *browserSession) (*Identity, error) {
	if err := checkTokenLength(token); err != nil {
		return nil, refusal(err)
	}
	identity, err := v.lookup(ctx, token, r, browser != nil)
	if err != nil {
		return nil, refusal(err)
	}
	if browser != nil {
		err = checkSignedIn(browser, identity)
	}
	if err == nil {
		err = v.policy.check(identity)
	}
	if err != nil {
		return nil, refusal(stamped(err, identity.TokenType, identity.Format))
	}
	return identity, nil
}

// lookup answers from the cache, or classifies token, checks that its type
// is accepted (and, from the cookie, that it is a session token), and
// verifies it.
func (v *Verifier) lookup(ctx context.Context, token string, r *http.Request, fromCookie bool) (*Identity, error) {
	cache, key, now := v.pool.cache, cacheKey{scope: v.scope, token: token}, v.now()
	hash := cache.hash(key)
	entry := cache.get(key, hash, now)
	if entry != nil && entry.signer != nil && !v.keys.current(entry.signer, now) {
		cache.drop(key) // its key was rotated out: verify it again
		entry = nil
	}
	if entry != nil {
		v.onCacheLookup(cacheName(entry.format()), true)
		if entry.refusal != nil {
			return nil, entry.refusal
		}
		if err := checkSource(entry.identity.TokenType, fromCookie); err != nil {
			return nil, stamped(err, entry.identity.TokenType, entry.identity.Format)
		}
		return entry.identity, nil
	}
	cred, err := classify(token)
	if err != nil {
		return nil, err // no credential: no cache answers for it
	}
	v.onCacheLookup(cacheName(cred.format), false)
	tokenType := cred.kind.tokenType
	if err := checkSource(tokenType, fromCookie); err != nil {
		return nil, stamped(err, tokenType, cred.format)
	}
	if !slices.Contains(v.accept, tokenType) {
		return nil, stamped(notAccepted(tokenType, "this route does not accept "+string(tokenType)+"s"), tokenType, cred.format)
	}
	var identity *Identity
	switch {
	case cred.jwt == nil:
		identity, err = v.verifyWithClerk(ctx, cred, key, r)
	case v.keys == nil:
		err = notAccepted(tokenType, "JWTs cannot be verified here (neither a secret key nor a JWT key is configured)")
	default:
		identity, err = v.verifyJWT(ctx, cred, key, hash)
	}
	return identity, stamped(err, tokenType, cred.format)
}

// cacheName is the cache, as OnCacheLookup names it, of a format.
func cacheName(format Format) string {
	if format == Opaque {
		return "opaque"
	}
	return "jwt"
}

// checkSource keeps machine credentials out of cookies, as Clerk does:
// only a browser session travels in __session (or its suffixed name).
func checkSource(tokenType TokenType, fromCookie bool) error {
	if fromCookie && tokenType != SessionToken {
		return notAccepted(tokenType, "only session tokens are read from the __session cookie")
	}
	return nil
}

func notAccepted(tokenType TokenType, description string) *Error {
	return &Error{Reason: ReasonTypeNotAccepted, TokenType: tokenType, Description: description}
}

// clerkFailure turns a failed Backend API call into the Error a caller acts
// on: the credential is invalid, our key is wrong, or Clerk is unavailable.
func clerkFailure(tokenType TokenType, err error) *Error {
	e := &Error{TokenType: tokenType, Err: err}
	switch backend.KindOf(err) {
	case backend.KindNotFound:
		e.Reason, e.Description = ReasonInvalid, "Clerk does not recognize the token"
	case backend.KindBadRequest:
		e.Reason, e.Description = ReasonInvalid, "Clerk refused the token as malformed"
	case backend.KindKeyRejected:
		e.Reason, e.Description = ReasonMisconfigured, "Clerk rejected the gateway's secret key"
	case backend.KindRateLimited:
		e.Reason, e.Description = ReasonRateLimited, "Clerk is rate-limiting verifications"
	default:
		e.Reason, e.Description = ReasonUnavailable, "Clerk could not verify the token"
	}
	var apiErr *backend.Error
	if errors.As(err, &apiErr) {
		e.RetryAfter = apiErr.RetryAfter
	}
	return e
}

// Setup is what a Verifier verifies with, its defaults applied: what it
// accepts; what verifies opaque credentials ("machine_secret_key" or
// "secret_key") and JWTs ("jwt_key", "jwks" fetched with the secret key,
// or "frontend_api_jwks" from the publishable key's Frontend API), "none"
// when nothing does; the API it calls; its durations; its Pool's bounds;
// the cookies a session is read from where session tokens are accepted,
// the plain names then the app's suffixed ones (none without a
// publishable key, when no cookie is read).
type Setup struct {
	Accept                       []TokenType
	OpaqueWith, JWTsWith, APIURL string
	ClockSkew, CacheTTL          time.Duration
	Timeout, KeysMaxStale        time.Duration
	MaxClerkCalls, MaxClerkRate  int
	CacheMaxBytes                int64
	SessionCookies               []CookieNames
}

// Setup says what the Verifier verifies with.
func (v *Verifier) Setup() Setup {
	p := v.pool
	s := Setup{Accept: slices.Clone(v.accept), OpaqueWith: v.opaqueWith, JWTsWith: v.jwtsWith, APIURL: v.apiURL,
		ClockSkew: v.clockSkew, CacheTTL: v.cacheTTL, Timeout: p.timeout, KeysMaxStale: p.keysStale,
		MaxClerkCalls: p.opts.MaxClerkCalls, MaxClerkRate: p.opts.MaxClerkRate, CacheMaxBytes: p.opts.CacheMaxBytes}
	if v.cookies != nil {
		s.SessionCookies = []CookieNames{v.cookies.plain, v.cookies.suffixed}
	}
	return s
}
