package verify

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// Defaults of Options.
const (
	defaultClockSkew = 5 * time.Second
	defaultCacheTTL  = 30 * time.Second
)

// What the durations of Options may be.
var (
	clockSkewRule = durationRule{name: "clock_skew", def: defaultClockSkew, most: 5 * time.Minute,
		whyMost: "tokens that expired that long ago, or are not valid for that long yet, would pass; sync the clocks instead"}
	cacheTTLRule = durationRule{name: "cache_ttl", def: defaultCacheTTL, most: time.Hour,
		whyMost: "an opaque credential revoked in Clerk keeps passing for up to cache_ttl"}
)

// Options configure a Verifier. New refuses options that cannot work
// together, naming them as the clerk_m2m handler names them (secret_key
// for SecretKey, and so on), and values that defeat their purpose or
// weaken the checks past reason. Zero values take the defaults; a duration
// set to 0 means none.
type Options struct {
	// Accept lists the token types to accept (see ParseTokenTypes); a
	// credential of another type is refused with ReasonTypeNotAccepted
	// before any cryptography or network call. Default: M2MToken.
	Accept []TokenType

	// The keys: SecretKey (sk_…) verifies opaque credentials with Clerk
	// and fetches the instance's signing keys for JWTs; MachineSecretKey
	// (ak_…) verifies the opaque M2M tokens granted to that machine;
	// JWTKey (the instance's public key, PEM) verifies JWTs with no
	// network call; PublishableKey (pk_…) has JWTs verified with the
	// signing keys its Frontend API publishes, and names the app whose
	// browser sessions are read from cookies (see VerifyRequest: without
	// it, none are). Every accepted type needs one that verifies it.
	SecretKey, MachineSecretKey, JWTKey, PublishableKey string

	// APIURL is the base URL of Clerk's Backend API. Default
	// backend.DefaultURL.
	APIURL string

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
	// names an audience at all. API keys and opaque M2M tokens have none,
	// and are not checked: only with MachineSecretKey does Clerk accept
	// just the opaque M2M tokens granted to that machine; with SecretKey
	// alone, one granted to any machine of the instance passes.
	// RequireScopes with the machine's id binds them (and M2M JWTs) without
	// the machine key.
	Audience []string

	// RequireScopes must all be among a valid credential's scopes, and
	// AllowedSubjects, when not empty, must include its subject; else it is
	// refused with ReasonInsufficientScope.
	RequireScopes   []string
	AllowedSubjects []string

	// ClockSkew is the leeway on exp, nbf and iat; 0 means none, and more
	// than 5 minutes is refused. Default 5s.
	ClockSkew *time.Duration

	// CacheTTL is how long a verified opaque token is remembered (never
	// beyond its expiry); Clerk's refusal of one is remembered for a
	// second, and each time Clerk refuses it again twice as long as the
	// last, up to an hour (a refused token cannot become valid; the second
	// is for one minted a moment ago that Clerk does not know everywhere
	// yet). 0 turns both off. Concurrent verifications of one token share
	// one call to Clerk either way. Verified JWTs are always remembered,
	// from their second use (one used once is not kept), until they
	// expire, as long as the key that verified them is current;
	// refused ones are not (a refusal costs at most the signature check
	// that remembering it would spare, and only spares the client that
	// sends the same bad JWT again). More than an hour is refused.
	// Default 30s.
	CacheTTL *time.Duration

	// Pool is what this Verifier shares with the others of the same Clerk
	// instance (see Pool). Nil: a Pool of its own, with the defaults.
	Pool *Pool

	// Store, if set, shares the verdicts on opaque credentials with the
	// Verifiers of other processes (see Store): looked up after the
	// in-memory cache and before asking Clerk, and written once Clerk
	// verified one. Its entries are named and authenticated with keys
	// derived from SecretKey and MachineSecretKey, so it needs one of them,
	// and a CacheTTL. Only successes are shared, until CacheTTL after
	// Clerk's answer or the credential's expiry, whichever comes first;
	// a process that reads a verdict never keeps it longer, nor longer
	// than its own CacheTTL. Trouble with the Store never blocks a request
	// nor lets one through: a failed or slow lookup is a miss, and Clerk
	// is asked.
	Store Store

	// OnCacheLookup, if set, is told of every cache lookup of a credential:
	// which cache ("jwt", "opaque", or "shared" for the Store) and whether
	// it answered; OnStoreError of every failed operation on the Store
	// ("read" or "write") and why. For metrics and logs; they must be quick.
	OnCacheLookup func(cache string, hit bool)
	OnStoreError  func(op string, err error)

	// ClientOf names the client that sent a request (VerifyRequest), for
	// the fair shares of the calls to Clerk (see PoolOptions.MaxClerkCalls
	// and MaxClerkRate): requests it names alike are one client. It is
	// asked only of requests whose credential needs a call. Default: the
	// host of the request's RemoteAddr. Verify's callers are all one
	// client.
	ClientOf func(*http.Request) string

	// For tests: the clock, and what stands in for Clerk's Backend API
	// and for the keys that verify JWTs.
	now   func() time.Time
	clerk clerkAPI
	keys  keySource
}

// New checks opts and returns a Verifier. It makes no network call.
func New(opts Options) (*Verifier, error) {
	if len(opts.Accept) == 0 {
		opts.Accept = []TokenType{M2MToken}
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.OnCacheLookup == nil {
		opts.OnCacheLookup = func(string, bool) {}
	}
	if opts.ClientOf == nil {
		opts.ClientOf = remoteHost
	}
	v := &Verifier{
		accept:            opts.Accept,
		authorizedParties: opts.AuthorizedParties,
		issuer:            opts.Issuer,
		audience:          opts.Audience,
		policy:            policy{requireScopes: opts.RequireScopes, allowedSubjects: opts.AllowedSubjects},
		pool:              opts.Pool,
		onCacheLookup:     opts.OnCacheLookup,
		clientOf:          opts.ClientOf,
		now:               opts.now,
	}
	var err error
	if v.clockSkew, err = clockSkewRule.read(opts.ClockSkew); err != nil {
		return nil, err
	}
	if v.cacheTTL, err = cacheTTLRule.read(opts.CacheTTL); err != nil {
		return nil, err
	}
	if v.pool == nil {
		if v.pool, err = NewPool(PoolOptions{now: opts.now}); err != nil {
			return nil, err
		}
	}
	held, err := v.useKeys(opts)
	if err != nil {
		return nil, err
	}
	if err := checkAccepted(opts, held); err != nil {
		return nil, err
	}
	if opts.Store != nil {
		if err := v.useStore(opts, held); err != nil {
			return nil, err
		}
	}
	v.scope = scopeOf(opts, v)
	return v, nil
}

// useKeys checks the keys of opts and sets up what they verify with:
// Clerk's Backend API with the secret keys (useClerk), the keys that
// verify JWTs (useJWTKeys), and the browser cookies the publishable key
// names. It returns the keys held.
func (v *Verifier) useKeys(opts Options) (keySet, error) {
	v.apiURL = opts.APIURL
	if v.apiURL == "" {
		v.apiURL = backend.DefaultURL
	}
	if err := errors.Join(backend.CheckSecretKey(opts.SecretKey), backend.CheckMachineSecretKey(opts.MachineSecretKey)); err != nil {
		return 0, err
	}
	if opts.PublishableKey != "" {
		key, err := backend.ParsePublishableKey(opts.PublishableKey)
		if err != nil {
			return 0, fmt.Errorf("publishable_key: %v", err)
		}
		v.frontendURL, v.cookies = key.URL(), newBrowserCookies(opts.PublishableKey, key)
	}
	held, err := v.useClerk(opts)
	if err != nil {
		return 0, err
	}
	if err := v.useJWTKeys(opts); err != nil {
		return 0, err
	}
	if v.keys != nil {
		held |= jwtKeys
	}
	return held, nil
}

// useClerk sets up the calls that verify opaque credentials: with the
// machine secret key for M2M tokens when there is one (Clerk then checks
// they were granted to that machine), else the secret key.
func (v *Verifier) useClerk(opts Options) (keySet, error) {
	client, err := v.pool.client(v.apiURL, opts.SecretKey, opts.MachineSecretKey)
	if err != nil {
		return 0, fmt.Errorf("api_url: %v", err)
	}
	held := keysOf(opts.SecretKey, instanceKey) | keysOf(opts.MachineSecretKey, machineKey)
	switch {
	case opts.clerk != nil: // a test's: it verifies whatever the keys say
		v.clerk, v.fingerprint = opts.clerk, "unique "+rand.Text()
	case held != 0:
		v.clerk, v.fingerprint = client, client.Fingerprint()
	}
	v.opaqueWith = "none"
	switch {
	case opts.MachineSecretKey != "":
		v.opaqueWith = "machine_secret_key"
	case opts.SecretKey != "":
		v.opaqueWith = "secret_key"
	}
	return held, nil
}

// useJWTKeys sets up the keys that verify JWTs: jwt_key alone when it is
// set, as in Clerk's SDKs; else the signing keys fetched with the secret
// key; else those of the Frontend API the publishable key names.
func (v *Verifier) useJWTKeys(opts Options) error {
	var err error
	v.jwtsWith = "none"
	switch {
	case opts.keys != nil: // a test's
		v.keys = opts.keys
	case opts.JWTKey != "":
		if v.keys, err = pemKey(opts.JWTKey); err != nil {
			return fmt.Errorf("jwt_key: %v", err)
		}
		v.jwtsWith = "jwt_key"
	case opts.SecretKey != "":
		fetcher, err := v.pool.client(v.apiURL, opts.SecretKey, "") // the same for every machine key
		if err != nil {
			return fmt.Errorf("api_url: %v", err)
		}
		v.keys, v.jwtsWith = v.pool.remoteKeys(v.apiURL, fetcher, fetcher), "jwks"
	case v.frontendURL != "":
		frontend, err := v.pool.client(v.frontendURL, "", "")
		if err != nil {
			return fmt.Errorf("publishable_key: %v", err)
		}
		v.keys, v.jwtsWith = v.pool.remoteKeys(v.frontendURL, frontend, frontendJWKS{frontend}), "frontend_api_jwks"
	}
	return nil
}

// keysOf is key when a value provides it, else nothing.
func keysOf(value string, key keySet) keySet {
	if value == "" {
		return 0
	}
	return key
}

// frontendJWKS fetches the public key set of a Frontend API.
type frontendJWKS struct{ *backend.Client }

func (f frontendJWKS) JWKS(ctx context.Context) (*backend.JWKS, error) { return f.FrontendJWKS(ctx) }

// checkAccepted refuses a type that none of the keys held verifies, and a
// check that no accepted type reads.
func checkAccepted(opts Options, held keySet) error {
	reads := map[option]bool{}
	for _, t := range opts.Accept {
		k := kindOf(t)
		if k == nil {
			return fmt.Errorf("accept: unknown token type %q", t)
		}
		if k.needs&held == 0 {
			return k.need()
		}
		for _, o := range k.reads {
			reads[o] = true
		}
	}
	for o, values := range map[option][]string{optAuthorizedParties: opts.AuthorizedParties, optIssuer: opts.Issuer, optAudience: opts.Audience} {
		if len(values) > 0 && !reads[o] {
			return fmt.Errorf("%s applies to %s only: accept one of them, or remove it", o, typeNames(kindsReading(o)))
		}
	}
	return nil
}

// kindsReading lists the kinds whose rules read o.
func kindsReading(o option) []*kind {
	return slices.DeleteFunc(slices.Clone(kinds), func(k *kind) bool { return !slices.Contains(k.reads, o) })
}

// useStore has the Verifier share its verdicts on opaque credentials
// through opts.Store, which needs a key that verifies them, and a cache.
func (v *Verifier) useStore(opts Options, held keySet) error {
	switch {
	case held&(instanceKey|machineKey) == 0:
		return errors.New("shared_cache shares verdicts on opaque credentials, which need secret_key or machine_secret_key: " +
			"set one, or remove shared_cache")
	case v.cacheTTL == 0:
		return errors.New("shared_cache shares what cache_ttl keeps, and cache_ttl is 0: set cache_ttl, or remove shared_cache")
	}
	v.shared = newSharedVerdicts(opts.Store, sharedSecret(opts.SecretKey, opts.MachineSecretKey), opaqueScopeOf(v), opts.OnStoreError)
	return nil
}

// scopeOf names what makes the verdicts of a Verifier valid: what it
// accepts, whom it asks with which keys, and the settings its checks and
// its cache read. Verifiers of one scope give the same verdict on a
// credential, and so may answer from each other's (including the
// Verifiers of the next configuration, set up alike); the policy
// (RequireScopes, AllowedSubjects) applies after the cache and has no part
// in it.
func scopeOf(opts Options, v *Verifier) scope {
	h := sha256.New()
	types := make([]string, len(opts.Accept))
	for i, t := range opts.Accept {
		types[i] = string(t)
	}
	writeSet(h, "accept", types)
	writeSet(h, "authorized_parties", opts.AuthorizedParties)
	writeSet(h, "issuer", opts.Issuer)
	writeSet(h, "cache_ttl", []string{v.cacheTTL.String()})
	writeSet(h, "opaque", []string{string(opaqueScopeOf(v))})
	if v.keys != nil {
		writeSet(h, "keys", []string{v.keys.scope()})
	}
	var s scope
	copy(s[:], h.Sum(nil))
	return s
}

// opaqueScopeOf names what makes the verdicts on opaque credentials of a
// Verifier valid, for the Store, where Verifiers of other processes read
// them: whom it asks and with which keys, and the settings Clerk's answers
// are judged by. What decides whether a credential reaches Clerk at all
// (the accepted types), and JWTs' keys, have no part in it; nor has
// CacheTTL, which every reader applies on its own.
func opaqueScopeOf(v *Verifier) []byte {
	h := sha256.New()
	writeSet(h, "backend", []string{v.fingerprint})
	writeSet(h, "audience", v.audience)
	writeSet(h, "clock_skew", []string{v.clockSkew.String()})
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

// Thresholds past which a setting loads, but is said to cost something.
const (
	// cautiousCacheTTL: a revoked opaque credential passes for up to
	// cache_ttl; past this, longer than anyone is likely to mean.
	cautiousCacheTTL = 5 * time.Minute

	// clerkProductionRate is the most calls a second Clerk takes from a
	// production instance (1,000 per 10 seconds), for all its backends.
	clerkProductionRate = 100
)

// Cautions are what the settings cost that a reader might not mean, one
// sentence each: settings that load, but weaken a check or spend what
// Clerk does not give. None for the defaults.
func (s Setup) Cautions() []string {
	var cautions []string
	if s.CacheTTL > cautiousCacheTTL {
		cautions = append(cautions, fmt.Sprintf("cache_ttl is %v: an opaque credential revoked in Clerk keeps passing "+
			"for up to that long", s.CacheTTL))
	}
	if s.MaxClerkRate > clerkProductionRate {
		cautions = append(cautions, fmt.Sprintf("max_clerk_rate is %d a second, more than the %d Clerk takes from a "+
			"production instance for all its backends: Clerk's own 429 will be the bound, and refuse them all", s.MaxClerkRate,
			clerkProductionRate))
	}
	return cautions
}
