package verify

import (
	"context"
	"errors"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// Backend is what verifying opaque tokens needs from Clerk's Backend API.
// *backend.Client is one.
type Backend interface {
	VerifyM2MToken(ctx context.Context, token string) (*backend.M2MToken, error)
	VerifyAPIKey(ctx context.Context, secret string) (*backend.APIKey, error)
	VerifyOAuthToken(ctx context.Context, token string) (*backend.OAuthAccessToken, error)
}

// Options configures a Verifier.
type Options struct {
	// Accept is the set of token types to accept; others are refused with
	// ReasonTypeNotAccepted before any cryptography or network call.
	Accept TokenTypes

	// Backend verifies opaque tokens. Nil: opaque tokens are refused as not
	// accepted.
	Backend Backend

	// Keys verifies JWTs. Nil: JWTs are refused as not accepted.
	Keys KeySource

	// Timeout is the budget of one call to Clerk, retries included.
	// Default 5s.
	Timeout time.Duration

	// ClockSkew is the leeway on exp, nbf and iat. Zero means none.
	ClockSkew time.Duration

	// AuthorizedParties, when not empty, are the origins a session token
	// may have been issued to: its "azp" must be one of them (and present).
	AuthorizedParties []string

	// Issuer, when not empty, are the issuers a session token may come
	// from: its "iss" must be one of them. Clerk's SDK checks the issuer
	// of session tokens only, and so does this.
	Issuer []string

	// Audience, when not empty, are the audiences a token may have been
	// issued for, by Clerk's rules: an OAuth token (JWT or opaque) must
	// name one of them in "aud"; a session token or an M2M JWT only when it
	// names an audience at all. API keys and opaque M2M tokens have none.
	Audience []string

	// CacheTTL is how long a verified opaque token is remembered (never
	// beyond its expiry), and Clerk's refusal of one for a second; zero
	// turns this off. Concurrent verifications of one token share one call
	// to Clerk either way. Verified JWTs are always remembered until they
	// expire, as long as the key that verified them is current.
	CacheTTL time.Duration

	// CacheEntries bounds each of the two caches (opaque tokens, JWTs).
	// Default DefaultCacheEntries.
	CacheEntries int

	// OnCacheLookup, if set, is told of every cache lookup: which cache
	// ("jwt" or "opaque") and whether it answered. For metrics; it must be
	// quick.
	OnCacheLookup func(cache string, hit bool)

	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Verifier verifies credentials. It is safe for concurrent use.
type Verifier struct {
	opts   Options
	jwts   *verdictCache
	opaque *verdictCache
	flight singleflight.Group // one call to Clerk per opaque token at a time
}

// New returns a Verifier. It makes no network call.
func New(opts Options) *Verifier {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Verifier{opts: opts, jwts: newVerdictCache(opts.CacheEntries), opaque: newVerdictCache(opts.CacheEntries)}
}

// Source is where a credential came from.
type Source int

const (
	// FromHeader: the Authorization header.
	FromHeader Source = iota
	// FromCookie: the __session cookie, which may only hold a session token.
	FromCookie
)

// Verify verifies a credential from the Authorization header; see
// VerifyFrom.
func (v *Verifier) Verify(ctx context.Context, token string) (*Identity, error) {
	return v.VerifyFrom(ctx, token, FromHeader)
}

// VerifyFrom classifies token, checks that its type is accepted (and, from
// the cookie, that it is a session token), and verifies it. It returns the
// Identity of a valid token, or an *Error. A credential verified recently is
// answered from a cache, at the cost of hashing it.
func (v *Verifier) VerifyFrom(ctx context.Context, token string, source Source) (*Identity, error) {
	cache, cacheName := v.jwts, "jwt"
	if isOpaque(token) {
		cache, cacheName = v.opaque, "opaque"
	}
	key := keyOf(token)
	entry := cache.get(key, v.opts.Now())
	if entry != nil && entry.signer != nil && !v.opts.Keys.Current(entry.signer) {
		cache.drop(key) // its key was rotated out: verify it again
		entry = nil
	}
	if v.opts.OnCacheLookup != nil {
		v.opts.OnCacheLookup(cacheName, entry != nil)
	}
	if entry != nil {
		if entry.refusal != nil {
			return nil, entry.refusal
		}
		return entry.identity, checkSource(entry.identity.TokenType, source)
	}
	tok, err := Classify(token)
	if err != nil {
		return nil, err
	}
	if err := checkSource(tok.Type, source); err != nil {
		return nil, err
	}
	if !v.opts.Accept.Has(tok.Type) {
		return nil, notAccepted(tok.Type, "this route does not accept "+string(tok.Type)+"s")
	}
	if tok.Format == JWT {
		return v.verifyLocally(ctx, tok, key)
	}
	return v.verifyWithClerk(ctx, tok, key)
}

// checkSource keeps machine credentials out of cookies, as Clerk does:
// only a browser session travels in __session.
func checkSource(tokenType TokenType, source Source) error {
	if source == FromCookie && tokenType != SessionToken {
		return notAccepted(tokenType, "only session tokens are read from the __session cookie")
	}
	return nil
}

// verifyLocally verifies a JWT with the configured keys.
func (v *Verifier) verifyLocally(ctx context.Context, tok *Token, key tokenKey) (*Identity, error) {
	if v.opts.Keys == nil {
		return nil, notAccepted(tok.Type, "JWTs cannot be verified here (neither a secret key nor a JWT key is configured)")
	}
	return v.verifyJWT(ctx, tok.jwt, jwtKinds[tok.Type], key)
}

// jwtKinds are the rules of each kind of JWT.
var jwtKinds = map[TokenType]*jwtKind{
	M2MToken:     &m2mJWT,
	OAuthToken:   &oauthJWT,
	SessionToken: &sessionJWT,
}

// FormatOf tells how a credential is carried, from its shape alone: JWT,
// opaque (a known prefix), or "" when it is neither.
func FormatOf(token string) Format {
	switch {
	case isOpaque(token):
		return Opaque
	case looksLikeJWT(token):
		return JWT
	default:
		return ""
	}
}

// isOpaque tells which cache may hold token: the opaque credentials have
// prefixes no JWT can start with.
func isOpaque(token string) bool {
	_, ok := opaqueKindOf(token)
	return ok
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

// withType records the token type on an Error from a key source, which does
// not know it.
func withType(err error, tokenType TokenType) error {
	if verr, ok := err.(*Error); ok && verr.TokenType == "" {
		verr.TokenType = tokenType
	}
	return err
}
