package verify

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"hash"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// Backend is what verifying opaque credentials needs from Clerk's Backend
// API. *backend.Client (with a secret key) is one.
type Backend interface {
	VerifyM2MToken(ctx context.Context, token string) (*backend.M2MToken, error)
	VerifyAPIKey(ctx context.Context, secret string) (*backend.APIKey, error)
	VerifyOAuthToken(ctx context.Context, token string) (*backend.OAuthAccessToken, error)
}

// DefaultTimeout is the budget of one call to Clerk, retries included, when
// Options or JWKSOptions do not set one.
const DefaultTimeout = 5 * time.Second

// Options configures a Verifier.
type Options struct {
	// Accept lists the token types to accept (see ParseTokenTypes); a
	// credential of another type is refused with ReasonTypeNotAccepted
	// before any cryptography or network call. Empty accepts none.
	Accept []TokenType

	// Backend verifies opaque credentials. Nil: they are refused as not
	// accepted.
	Backend Backend

	// Keys verifies JWTs. Nil: they are refused as not accepted.
	Keys KeySource

	// Timeout is the budget of one call to Clerk, retries included.
	// Default DefaultTimeout.
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

	// RequireScopes must all be among a valid credential's scopes, and
	// AllowedSubjects, when not empty, must include its subject; else it is
	// refused with ReasonInsufficientScope.
	RequireScopes   []string
	AllowedSubjects []string

	// CacheTTL is how long a verified opaque token is remembered (never
	// beyond its expiry), and Clerk's refusal of one for a second; zero
	// turns this off. Concurrent verifications of one token share one call
	// to Clerk either way. Verified JWTs are always remembered until they
	// expire, as long as the key that verified them is current.
	CacheTTL time.Duration

	// Shared is the cache of verdicts and the bound on calls to Clerk that
	// this Verifier shares with the others of the same Clerk instance (see
	// NewShared); it answers only from the verdicts of Verifiers set up
	// alike. A Backend that has a Fingerprint() string method (as
	// *backend.Client has) shares verdicts with other Backends of the same
	// fingerprint; any other Backend's verdicts are this Verifier's alone.
	// Nil: a Shared of its own, with the defaults.
	Shared *Shared

	// SharedCache, if set, shares the verdicts on opaque credentials with
	// the Verifiers of other processes (see SharedCache): looked up after
	// the in-memory cache and before asking Clerk, and written once Clerk
	// verified one. It is named and authenticated with SharedCacheSecret,
	// and used only with it and a CacheTTL.
	SharedCache *SharedCache

	// SharedCacheSecret is the secret the entries of SharedCache are named
	// and authenticated with: the Clerk secret key (or keys) that Backend
	// verifies with, so that only Verifiers holding it read or write them.
	SharedCacheSecret []byte

	// OnCacheLookup, if set, is told of every cache lookup: which cache
	// ("jwt", "opaque", or "shared" for SharedCache) and whether it
	// answered. For metrics; it must be quick.
	OnCacheLookup func(cache string, hit bool)

	now func() time.Time // the clock; time.Now unless a test sets it
}

// Verifier verifies credentials. It is safe for concurrent use.
type Verifier struct {
	opts   Options
	accept typeSet
	policy policy
	shared *Shared
	scope  scope // of its verdicts in the shared cache

	sharedKeys *sharedKeys // name and authenticate its entries in opts.SharedCache; nil without one
}

// New returns a Verifier. It makes no network call.
func New(opts Options) *Verifier {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	shared := opts.Shared
	if shared == nil {
		shared = NewShared(SharedOptions{now: opts.now})
	}
	v := &Verifier{
		opts:   opts,
		accept: opts.Accept,
		policy: policy{requireScopes: opts.RequireScopes, allowedSubjects: opts.AllowedSubjects},
		shared: shared,
		scope:  scopeOf(opts),
	}
	if opts.SharedCache != nil && len(opts.SharedCacheSecret) > 0 && opts.CacheTTL > 0 {
		v.sharedKeys = newSharedKeys(opts.SharedCacheSecret, opaqueScopeOf(opts))
	}
	return v
}

// scopeOf names what makes the verdicts of a Verifier with opts valid:
// what it accepts, the keys and the Backend it verifies with, and the
// settings its checks and its cache read. Verifiers of one scope give the
// same verdict on a credential, and so may answer from each other's
// (including the Verifiers of the next configuration, set up alike); the
// policy (RequireScopes, AllowedSubjects) applies after the cache and has
// no part in it.
func scopeOf(opts Options) scope {
	h := sha256.New()
	set := func(name string, values []string) { writeSet(h, name, values) }
	types := make([]string, len(opts.Accept))
	for i, t := range opts.Accept {
		types[i] = string(t)
	}
	set("accept", types)
	set("authorized_parties", opts.AuthorizedParties)
	set("audience", opts.Audience)
	set("issuer", opts.Issuer)
	set("clock_skew", []string{opts.ClockSkew.String()})
	set("cache_ttl", []string{opts.CacheTTL.String()})
	set("backend", []string{backendScope(opts.Backend)})
	if opts.Keys != nil {
		set("keys", []string{opts.Keys.scope()})
	}
	var s scope
	copy(s[:], h.Sum(nil))
	return s
}

// opaqueScopeOf names what makes the verdicts on opaque credentials of a
// Verifier with opts valid, for the shared cache, where Verifiers of other
// processes read them: whom the Backend asks and with which keys, and the
// settings Clerk's answers are judged by. What decides whether a
// credential reaches Clerk at all (the accepted types), and JWTs' keys,
// have no part in it; nor has CacheTTL, which every reader applies on its
// own.
func opaqueScopeOf(opts Options) []byte {
	h := sha256.New()
	writeSet(h, "backend", []string{backendScope(opts.Backend)})
	writeSet(h, "audience", opts.Audience)
	writeSet(h, "clock_skew", []string{opts.ClockSkew.String()})
	return h.Sum(nil)
}

// writeSet writes a named set of values, in an order of their own.
func writeSet(h hash.Hash, name string, values []string) {
	writePart(h, name)
	writePart(h, strconv.Itoa(len(values)))
	for _, value := range slices.Sorted(slices.Values(values)) {
		writePart(h, value)
	}
}

// backendScope names whom a Backend asks, and with which keys: its
// fingerprint when it has one, else a name no other Backend has.
func backendScope(b Backend) string {
	switch b := b.(type) {
	case nil:
		return ""
	case interface{ Fingerprint() string }:
		return "fingerprint " + b.Fingerprint()
	default:
		return "unique " + rand.Text()
	}
}

// Verify verifies a credential as presented in an Authorization header
// (without the "Bearer " scheme). It returns the Identity of a valid
// credential, or an *Error. A credential verified recently is answered from
// a cache, at the cost of hashing it.
func (v *Verifier) Verify(ctx context.Context, credential string) (*Identity, error) {
	return v.verifyCredential(ctx, credential, nil)
}

// VerifyRequest verifies the credential of r, bounded by r's context: the
// bearer token of its Authorization header (exactly one header, the Bearer
// scheme in any case, one space, one token) or, when it has no
// Authorization header and session tokens are accepted, its __session
// cookie (SessionCookie), which may hold only a session token, and counts
// only with the ClientUATCookie of a browser signed in since the token was
// minted (else ReasonSessionOutdated). A request with neither is refused
// with ReasonMissing.
func (v *Verifier) VerifyRequest(r *http.Request) (*Identity, error) {
	token, fromCookie, err := credentialOf(r, v.accept.has(SessionToken))
	if err != nil {
		return nil, refusal(err, formatOf(token, prefixedKind(token)))
	}
	var browser *http.Request
	if fromCookie {
		browser = r
	}
	return v.verifyCredential(r.Context(), token, browser)
}

// verifyCredential verifies token, checks that the browser it came from is
// signed in (browser is the request whose __session cookie held token; nil
// for a token from an Authorization header or Verify's caller), applies the
// policy, and makes every refusal an *Error that carries the credential's
// type and format.
func (v *Verifier) verifyCredential(ctx context.Context, token string, browser *http.Request) (*Identity, error) {
	fromCookie := browser != nil
	identity, format, err := v.verify(ctx, token, fromCookie)
	if err == nil && fromCookie {
		err = checkSignedIn(browser, identity)
	}
	if err == nil {
		err = v.policy.check(identity)
	}
	if err != nil {
		return nil, refusal(err, format)
	}
	return identity, nil
}

// verify answers from a cache, or classifies token, checks that its type is
// accepted (and, from the cookie, that it is a session token), and
// verifies it, locally or with Clerk. It also says how token is carried.
func (v *Verifier) verify(ctx context.Context, token string, fromCookie bool) (*Identity, Format, error) {
	prefixed := prefixedKind(token) // no JWT starts with one: it tells the cache
	cacheName, format := "jwt", JWT
	if prefixed != nil {
		cacheName, format = "opaque", Opaque
	}
	cache, key := v.shared.cache, cacheKey{scope: v.scope, token: token}
	entry := cache.get(key, v.opts.now())
	if entry != nil && entry.signer != nil && !v.opts.Keys.current(entry.signer) {
		cache.drop(key) // its key was rotated out: verify it again
		entry = nil
	}
	if v.opts.OnCacheLookup != nil {
		v.opts.OnCacheLookup(cacheName, entry != nil)
	}
	if entry != nil {
		if entry.refusal != nil {
			return nil, format, entry.refusal
		}
		return entry.identity, format, checkSource(entry.identity.TokenType, fromCookie)
	}
	tok, err := classify(token, prefixed)
	if err != nil {
		return nil, formatOf(token, prefixed), err
	}
	tokenType, format := tok.kind.tokenType, tok.format()
	if err := checkSource(tokenType, fromCookie); err != nil {
		return nil, format, err
	}
	if !v.accept.has(tokenType) {
		return nil, format, notAccepted(tokenType, "this route does not accept "+string(tokenType)+"s")
	}
	var identity *Identity
	if tok.jwt != nil {
		identity, err = v.verifyLocally(ctx, tok, key)
	} else {
		identity, err = v.verifyWithClerk(ctx, tok, key)
	}
	return identity, format, err
}

// checkSource keeps machine credentials out of cookies, as Clerk does:
// only a browser session travels in __session.
func checkSource(tokenType TokenType, fromCookie bool) error {
	if fromCookie && tokenType != SessionToken {
		return notAccepted(tokenType, "only session tokens are read from the __session cookie")
	}
	return nil
}

// verifyLocally verifies a JWT with the configured keys.
func (v *Verifier) verifyLocally(ctx context.Context, tok *classified, key cacheKey) (*Identity, error) {
	if v.opts.Keys == nil {
		return nil, notAccepted(tok.kind.tokenType, "JWTs cannot be verified here (neither a secret key nor a JWT key is configured)")
	}
	return v.verifyJWT(ctx, tok.jwt, tok.kind, key)
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
