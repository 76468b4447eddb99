// Package clerkm2m is a Caddy HTTP handler that lets only requests carrying a
// valid Clerk machine credential through, and hands the verified identity and
// claims to later handlers as placeholders. See Handler.
package clerkm2m

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of clerk_m2m that package verify does not already have.
const (
	defaultClockSkew = 5 * time.Second
	defaultCacheTTL  = 30 * time.Second
)

// Handler verifies the Clerk credential of every request and lets only
// valid ones through: machine-to-machine (M2M) tokens, opaque (`mt_…`) or
// JWT; API keys (`ak_…`); OAuth access tokens, opaque (`oat_…`) or JWT; and
// browser session tokens. The credential comes from the `Authorization:
// Bearer` header, or, for session tokens only, the `__session` cookie.
// Requests without a valid credential are refused with an HTTP error (so
// that `handle_errors` can shape the answer); valid ones continue with the
// caller's identity in placeholders.
//
// A credential's type is decided from its shape alone, and a type the route
// does not `accept` is refused before any call to Clerk. Opaque credentials
// are verified by Clerk's Backend API (each answer remembered for
// `cache_ttl`); JWTs are verified locally against the instance's signing
// keys, fetched from the Backend API with the secret key (in the background
// once the configuration starts, never while it loads), or given as
// `jwt_key` so that no network is needed at all.
//
// Answers:
//
// | case | status | `{http.auth.clerk_m2m.error}` |
// |------|--------|-------------------------------|
// | no credential (unless `optional`) | 401 | `token_missing` |
// | malformed, forged, unknown, revoked, wrong category, not for the `audience` or from another `issuer` | 401 | `token_invalid` |
// | expired | 401 | `token_expired` |
// | a session token from the `__session` cookie of a browser not signed in (per `__client_uat`) or older than its `__client_uat` | 401 | `session_outdated` |
// | a token type or format this route does not accept | 401 | `token_type_not_accepted` |
// | valid, but `require_scopes` or `allowed_subjects` not met | 403 | `insufficient_scope` |
// | Clerk unreachable, failing, or its keys unavailable | 503 | `clerk_unavailable` |
// | Clerk rate-limits verification | 503 | `clerk_rate_limited` |
// | a new opaque credential while `max_clerk_calls` calls to Clerk are in flight | 503 | `clerk_calls_limited` |
// | Clerk rejects the configured secret key | 500 | `misconfigured` |
//
// 401 answers carry `WWW-Authenticate: Bearer realm="clerk"` (with
// `error="invalid_token"` when a credential was presented), 403 answers
// `error="insufficient_scope"`, 503 answers a `Retry-After`.
//
// Placeholders set for a verified request (none for an anonymous request
// let through by `optional`):
//
// | placeholder | value |
// |-------------|-------|
// | `{http.auth.user.id}` | the subject: a machine (`mch_…`), user (`user_…`) or organization (`org_…`); also the access log's `user_id` |
// | `{http.auth.user.token_type}` | `m2m_token`, `api_key`, `oauth_token` or `session_token` |
// | `{http.auth.user.token_format}` | `opaque` or `jwt` |
// | `{http.auth.user.token_id}` | the credential's id (`mt_…`, `ak_…`, `oat_…`) or the JWT's `jti` |
// | `{http.auth.user.scopes}` | the credential's scopes, separated by one space (for M2M tokens, the machines it may call) |
// | `{http.auth.user.claims}` | the custom claims as a JSON object (`{}` when none) |
// | `{http.auth.user.claims.<path>}` | one claim; dots walk into objects; strings as is, other values as JSON; empty when the credential does not carry it |
// | `{http.auth.user.expires_at}` | expiry in Unix seconds; empty when the credential never expires |
// | `{http.auth.user.client_id}` | OAuth tokens: the OAuth application's client id |
// | `{http.auth.user.session_id}` | session tokens: the session (`sess_…`) |
// | `{http.auth.user.org_id}` | session tokens: the active organization; API keys: the organization that owns the key |
// | `{http.auth.user.name}` | API keys: the key's name |
// | `{http.auth.user.actor}` | OAuth tokens from a token exchange (RFC 8693): the acting subject, whose whole chain is in the claims' `act`; impersonated sessions: the impersonator |
//
// The access log gets the caller as `user_id`, and the credential's
// `token_type` and `token_id` (never the credential). The admin endpoint's
// `/metrics` serves `caddy_clerk_m2m_*` metrics (with or without Caddy's
// `metrics` global option): verifications by type, format and outcome,
// requests to Clerk by endpoint and result with their latency, cache hits
// and misses, fetches and age of the signing keys.
type Handler struct {
	// The instance secret key (`sk_live_…` or `sk_test_…`). It verifies opaque
	// M2M tokens (when no machine secret key is set) and fetches the signing
	// keys that verify M2M JWTs. Default: `{env.CLERK_SECRET_KEY}`.
	SecretKey string `json:"secret_key,omitempty"`

	// The secret key of the machine this gateway stands for (`ak_…`). When
	// set, it verifies opaque M2M tokens, and Clerk then accepts only tokens
	// granted access to this machine. It cannot fetch signing keys, so M2M
	// JWTs also need `secret_key` or `jwt_key`.
	// Default: `{env.CLERK_MACHINE_SECRET_KEY}`.
	MachineSecretKey string `json:"machine_secret_key,omitempty"`

	// The instance's JWT public key in PEM form ("JWKS Public Key" in Clerk's
	// dashboard), or the path of a file holding it. When set, JWTs are verified
	// with it alone and the signing keys are never fetched.
	// Default: `{env.CLERK_JWT_KEY}`.
	JWTKey string `json:"jwt_key,omitempty"`

	// The base URL of Clerk's Backend API.
	// Default: `{env.CLERK_API_URL}`, else `https://api.clerk.com`.
	APIURL string `json:"api_url,omitempty"`

	// The instance's publishable key (`pk_live_…` or `pk_test_…`). Without
	// a secret key or `jwt_key`, JWTs are verified with the signing keys the
	// instance's Frontend API publishes (`/.well-known/jwks.json`, named by
	// the key, never by a token), so a gateway that takes only JWTs needs no
	// secret at all. Default: `{env.CLERK_PUBLISHABLE_KEY}`.
	PublishableKey string `json:"publishable_key,omitempty"`

	// The credential types to accept: `m2m_token`, `api_key`,
	// `oauth_token`, `session_token`, or `any` for all four. Other types are
	// refused without calling Clerk. Default: `m2m_token`.
	Accept []string `json:"accept,omitempty"`

	// Scopes a valid credential must all carry, else 403. For M2M JWTs,
	// which Clerk checks for no audience at all, requiring this machine's
	// own id (`mch_…`) restores the check Clerk makes for opaque tokens.
	// Default: none.
	RequireScopes []string `json:"require_scopes,omitempty"`

	// Subjects (`mch_…`, `user_…`, `org_…`) allowed through; any other
	// valid credential gets 403. Default: any subject.
	AllowedSubjects []string `json:"allowed_subjects,omitempty"`

	// Let requests without any credential through, with no identity
	// placeholders set. A credential that is presented must still be valid.
	// Default: off.
	Optional bool `json:"optional,omitempty"`

	// Once the credential is verified, remove every Clerk credential from
	// the request, so that no later handler or upstream sees one: the
	// Authorization header and every session cookie (`__session`, and
	// `__session_<suffix>` as Clerk's newer SDKs name them), whichever was
	// verified. The other cookies are passed on as sent. Default: off.
	StripAuthorization bool `json:"strip_authorization,omitempty"`

	// Do not count this handler's verifications and calls to Clerk in the
	// caddy_clerk_m2m_* metrics. It still shares the signing keys of the
	// other handlers of the same Clerk instance, whose fetches are counted
	// while one of those handlers is. Default: off.
	DisableMetrics bool `json:"disable_metrics,omitempty"`

	// Origins a session token may have been issued to (its `azp` claim,
	// e.g. `https://app.example.com`); when set, a session token without
	// `azp`, or with another, is refused. Only with `session_token`.
	// Default: none.
	AuthorizedParties []string `json:"authorized_parties,omitempty"`

	// Audiences a token may have been issued for (its `aud` claim), as
	// Clerk's SDK checks them: an OAuth access token, JWT or opaque, must
	// name one of them, else 401; a session token or an M2M JWT only when it
	// names an audience at all (an M2M JWT's `aud` lists the machines it may
	// call). API keys and opaque M2M tokens carry none: Clerk checks whom
	// they were granted to. Default: none.
	Audience []string `json:"audience,omitempty"`

	// Issuers a session token may come from (its `iss` claim, the
	// instance's Frontend API, e.g. `https://clerk.example.com`); when set,
	// a session token from another, or without `iss`, is refused. Only with
	// `session_token`: as in Clerk's SDK, machine JWTs are not checked for
	// their issuer (M2M JWTs may carry none). Default: any issuer.
	Issuer []string `json:"issuer,omitempty"`

	// The whole budget of one call to Clerk, retries included.
	// Default: `5s`.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Leeway when checking a token's expiry and start times; 0 means none.
	// Default: `5s`.
	ClockSkew *caddy.Duration `json:"clock_skew,omitempty"`

	// How long the verification of an opaque token may be reused before
	// Clerk is asked again (never beyond the token's expiry); 0 turns reuse
	// off. Default: `30s`.
	CacheTTL *caddy.Duration `json:"cache_ttl,omitempty"`

	// How long Clerk's signing keys keep being used when they cannot be
	// refreshed (they are renewed every 4 minutes). After that, JWTs are
	// refused with 503 until Clerk answers again. Default: `1h`.
	JWKSMaxStale caddy.Duration `json:"jwks_max_stale,omitempty"`

	// The most calls to Clerk in flight at once, for all the handlers that
	// share this one's Clerk instance (the same `api_url`, keys,
	// `timeout`, `jwks_max_stale`, `max_clerk_calls` and
	// `cache_max_bytes`), and the most connections to it. A credential
	// that needs one more call (a new opaque token) is refused at once
	// with 503, `Retry-After: 1` and `clerk_calls_limited`; credentials
	// answered from the cache, and JWTs, need none. Clerk takes 1,000
	// calls per 10 seconds from a production instance: 64 in flight carry
	// that even when Clerk takes half a second to answer, and hold no more
	// than 64 connections. Default: `64`.
	MaxClerkCalls int `json:"max_clerk_calls,omitempty"`

	// The most memory the verdicts remembered for this handler's Clerk
	// instance may hold, in bytes (in the Caddyfile also `64MiB` and the
	// like), for all the handlers that share the instance (as for
	// `max_clerk_calls`): one cache, for opaque tokens and JWTs alike,
	// counted from each verdict's identity, scopes and claims. Past it,
	// the verdicts least used lately are forgotten; expired ones are
	// dropped as they come up. Default: `64MiB`.
	CacheMaxBytes int64 `json:"cache_max_bytes,omitempty"`

	// Share the verdicts on opaque credentials with the other Caddy
	// instances of the cluster, through the storage they share (the
	// `storage` global option): a credential Clerk verified for one
	// instance is accepted by the others without asking Clerk again, until
	// the verdict expires (`cache_ttl` after Clerk's answer, or the
	// credential's expiry, whichever comes first; never later on another
	// instance). Looked up after the in-memory cache, within a quarter of
	// `timeout` (at most 250ms), and before asking Clerk. Only successes
	// are shared: a refusal is asked of Clerk again. Entries are named and
	// authenticated with keys derived from `secret_key` and
	// `machine_secret_key` (HKDF and HMAC-SHA256): the storage holds no
	// credential nor key, a handler with other keys or another `api_url`
	// reads none of them, and an entry written without the keys is
	// ignored. Trouble with the storage never lets a request through: the
	// credential is verified with Clerk. Needs `cache_ttl`, and a key that
	// verifies opaque credentials. Default: off.
	SharedCache bool `json:"shared_cache,omitempty"`

	// Expanded at provision.
	secretKey         string
	machineSecretKey  string
	jwtKey            string
	apiURL            string
	frontendURL       string // from the publishable key
	accept            []verify.TokenType
	requireScopes     []string
	allowedSubjects   []string
	authorizedParties []string
	audience          []string
	issuer            []string

	verifier *verify.Verifier
	observer observer
	keySet   *lease // on the shared instance in use, if any
	logger   *zap.Logger
	alerts   *alerter
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.clerk_m2m",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision expands placeholders in the configuration, applies defaults and
// builds the verifier. It makes no network call.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.alerts = newAlerter(h.logger)
	if err := h.expand(); err != nil {
		return err
	}
	h.applyDefaults()
	var err error
	if h.observer, err = newObserver(ctx, h.DisableMetrics); err != nil {
		return err
	}
	return h.buildVerifier(ctx)
}

func (h *Handler) applyDefaults() {
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(verify.DefaultTimeout)
	}
	if h.ClockSkew == nil {
		h.ClockSkew = durationPtr(defaultClockSkew)
	}
	if h.CacheTTL == nil {
		h.CacheTTL = durationPtr(defaultCacheTTL)
	}
	if h.JWKSMaxStale == 0 {
		h.JWKSMaxStale = caddy.Duration(verify.DefaultMaxStale)
	}
	if h.MaxClerkCalls == 0 {
		h.MaxClerkCalls = verify.DefaultMaxClerkCalls
	}
	if h.CacheMaxBytes == 0 {
		h.CacheMaxBytes = verify.DefaultCacheMaxBytes
	}
}

// expand resolves placeholders and environment defaults in the string
// fields.
func (h *Handler) expand() error {
	repl := caddy.NewReplacer()
	var publishableKey string
	if err := expandFields(repl,
		field{name: "secret_key", configured: h.SecretKey, whenUnset: "{env.CLERK_SECRET_KEY}", dest: &h.secretKey},
		machineSecretKeyField(h.MachineSecretKey, &h.machineSecretKey),
		field{name: "jwt_key", configured: h.JWTKey, whenUnset: "{env.CLERK_JWT_KEY}", dest: &h.jwtKey},
		apiURLField(h.APIURL, &h.apiURL),
		field{name: "publishable_key", configured: h.PublishableKey, whenUnset: "{env.CLERK_PUBLISHABLE_KEY}", dest: &publishableKey},
	); err != nil {
		return err
	}
	if publishableKey != "" {
		frontendURL, err := backend.FrontendAPIURL(publishableKey)
		if err != nil {
			return fmt.Errorf("publishable_key: %v", err)
		}
		h.frontendURL = frontendURL
	}
	return h.expandAccept(repl)
}

// expandAccept resolves the accepted types and the lists that say who may
// pass.
func (h *Handler) expandAccept(repl *caddy.Replacer) error {
	entries := h.Accept
	if len(entries) == 0 {
		entries = []string{string(verify.M2MToken)}
	}
	names, err := expandList(repl, "accept", entries)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return errors.New("accept: no token type given")
	}
	if h.accept, err = verify.ParseTokenTypes(names); err != nil {
		return fmt.Errorf("accept: %v", err)
	}
	if h.requireScopes, err = expandList(repl, "require_scopes", h.RequireScopes); err != nil {
		return err
	}
	if h.allowedSubjects, err = expandList(repl, "allowed_subjects", h.AllowedSubjects); err != nil {
		return err
	}
	if h.authorizedParties, err = expandList(repl, "authorized_parties", h.AuthorizedParties); err != nil {
		return err
	}
	if h.audience, err = expandList(repl, "audience", h.Audience); err != nil {
		return err
	}
	h.issuer, err = expandList(repl, "issuer", h.Issuer)
	return err
}

// buildVerifier wires the Backend API client and the key source that the
// configured keys allow. What can be shared with other handlers and with
// the next configuration (connections, signing keys) comes from the shared
// instance, started by the App when the configuration starts.
func (h *Handler) buildVerifier(ctx caddy.Context) error {
	opts := verify.Options{
		Accept:            h.accept,
		Timeout:           time.Duration(h.Timeout),
		ClockSkew:         time.Duration(*h.ClockSkew),
		CacheTTL:          time.Duration(*h.CacheTTL),
		AuthorizedParties: h.authorizedParties,
		Audience:          h.audience,
		Issuer:            h.issuer,
		RequireScopes:     h.requireScopes,
		AllowedSubjects:   h.allowedSubjects,
		OnCacheLookup:     h.observer.cacheLookup,
	}
	if err := h.useSharedInstance(ctx, &opts); err != nil {
		return err
	}
	if h.SharedCache {
		if err := h.useSharedCache(ctx, &opts); err != nil {
			return err
		}
	}
	if h.jwtKey != "" {
		key, err := loadJWTKey(h.jwtKey)
		if err != nil {
			return fmt.Errorf("jwt_key: %v", err)
		}
		opts.Keys = key
	}
	h.verifier = verify.New(opts)
	h.logger.Debug("clerk_m2m provisioned",
		zap.Any("accept", h.accept),
		zap.String("api_url", h.apiURL),
		zap.String("opaque_tokens_verified_with", opaqueVerifiedWith(h.machineSecretKey, h.secretKey)),
		zap.String("jwts_verified_with", jwtsVerifiedWith(h.jwtKey, h.secretKey, h.frontendURL)))
	return nil
}

// useSharedInstance takes the connections, signing keys, cache and bound
// on calls of the shared instance, and has the App start it with the
// configuration.
func (h *Handler) useSharedInstance(ctx caddy.Context, opts *verify.Options) error {
	apiURL, err := backend.ParseURL(h.apiURL)
	if err != nil {
		return fmt.Errorf("api_url: %v", err)
	}
	warnIfCleartext(h.logger, apiURL)
	settings := instanceSettings{APIURL: apiURL, Timeout: time.Duration(h.Timeout), MaxStale: time.Duration(h.JWKSMaxStale),
		MaxClerkCalls: h.MaxClerkCalls, CacheMaxBytes: h.CacheMaxBytes}
	if h.jwtKey == "" { // with jwt_key, no key set is ever fetched
		settings.SecretKey, settings.FrontendURL = h.secretKey, h.frontendURL
	}
	inst, keySet, err := loadInstance(settings, !h.DisableMetrics, h.logger)
	if err != nil {
		return err
	}
	h.keySet = keySet
	client, err := newClerkClient(apiURL, clerkKeys{secret: h.secretKey, machine: h.machineSecretKey}, inst.httpClient, h.observer.clerkRequest)
	if err != nil {
		return err
	}
	if h.secretKey != "" || h.machineSecretKey != "" {
		opts.Backend = client
	}
	if inst.keys != nil {
		opts.Keys = inst.keys
	}
	opts.Shared = inst.verifiers
	return registerWithApp(ctx, inst, h.logger)
}

// registerWithApp has the App start shared with the configuration.
func registerWithApp(ctx caddy.Context, shared starter, logger *zap.Logger) error {
	app, err := ctx.App("clerk_m2m")
	if err != nil {
		return err
	}
	app.(*App).register(shared, logger)
	return nil
}

// loadJWTKey reads jwt_key: PEM text, the path of a PEM file, or bare base64.
func loadJWTKey(value string) (verify.KeySource, error) {
	if !strings.Contains(value, "-----BEGIN") {
		if info, err := os.Stat(value); err == nil && info.Mode().IsRegular() {
			data, err := os.ReadFile(value)
			if err != nil {
				return nil, err
			}
			value = string(data)
		}
	}
	return verify.PEMKey(value)
}

func opaqueVerifiedWith(machineKey, secretKey string) string {
	switch {
	case machineKey != "":
		return "machine_secret_key"
	case secretKey != "":
		return "secret_key"
	default:
		return "none"
	}
}

func jwtsVerifiedWith(jwtKey, secretKey, frontendURL string) string {
	switch {
	case jwtKey != "":
		return "jwt_key"
	case secretKey != "":
		return "jwks"
	case frontendURL != "":
		return "frontend_api_jwks"
	default:
		return "none"
	}
}

// Validate checks the provisioned configuration. It makes no network call.
func (h *Handler) Validate() error {
	if err := checkKeyPrefixes(h.secretKey, h.machineSecretKey); err != nil {
		return err
	}
	if err := h.checkKeysCover(); err != nil {
		return err
	}
	switch {
	case len(h.authorizedParties) > 0 && !slices.Contains(h.accept, verify.SessionToken):
		return errors.New("authorized_parties applies to session tokens: accept session_token, or remove it")
	case len(h.issuer) > 0 && !slices.Contains(h.accept, verify.SessionToken):
		return errors.New("issuer applies to session tokens (machine JWTs are not checked for their issuer, as in " +
			"Clerk's SDK): accept session_token, or remove it")
	case len(h.audience) > 0 && slices.Equal(h.accept, []verify.TokenType{verify.APIKey}):
		return errors.New("audience applies to OAuth tokens, session tokens and M2M JWTs, not to API keys: " +
			"accept one of those, or remove it")
	case h.Timeout <= 0:
		return errors.New("timeout must be positive")
	case h.JWKSMaxStale < 0:
		return errors.New("jwks_max_stale must not be negative")
	case *h.ClockSkew < 0:
		return errors.New("clock_skew must not be negative")
	case *h.CacheTTL < 0:
		return errors.New("cache_ttl must not be negative (0 turns the cache off)")
	case h.MaxClerkCalls < 0:
		return errors.New("max_clerk_calls must be positive")
	case h.CacheMaxBytes < 0:
		return errors.New("cache_max_bytes must be positive")
	case h.SharedCache && *h.CacheTTL == 0:
		return errors.New("shared_cache shares what cache_ttl keeps, and cache_ttl is 0: set cache_ttl, or remove shared_cache")
	case h.SharedCache && h.secretKey == "" && h.machineSecretKey == "":
		return errors.New("shared_cache shares verdicts on opaque credentials, which need secret_key or machine_secret_key: " +
			"set one, or remove shared_cache")
	}
	return nil
}

// checkKeysCover refuses a configuration that accepts a type no configured
// key can verify, saying what to set.
func (h *Handler) checkKeysCover() error {
	configured := configuredKeys{
		secret:  h.secretKey != "",
		machine: h.machineSecretKey != "",
		jwts:    h.secretKey != "" || h.jwtKey != "" || h.frontendURL != "",
	}
	for _, tokenType := range h.accept {
		need, known := keysToVerify[tokenType]
		if !known {
			return fmt.Errorf("accepting %s: no keys are known to verify it", tokenType)
		}
		if !need.met(configured) {
			return fmt.Errorf(need.hint, tokenType)
		}
	}
	return nil
}

// configuredKeys says which keys a handler has: the instance secret key,
// a machine secret key, and something that verifies JWTs (the secret key,
// jwt_key or a publishable key).
type configuredKeys struct {
	secret, machine, jwts bool
}

// keysToVerify says, for each credential type, which configured keys can
// verify it, and what to tell an operator who accepts it without them (a
// format for the type's name).
var keysToVerify = map[verify.TokenType]struct {
	met  func(configuredKeys) bool
	hint string
}{
	verify.M2MToken: {func(k configuredKeys) bool { return k.machine || k.jwts },
		"accepting %s needs a key: set machine_secret_key (or CLERK_MACHINE_SECRET_KEY) or secret_key (or CLERK_SECRET_KEY) " +
			"to verify opaque tokens and JWTs, jwt_key (or CLERK_JWT_KEY) to verify JWTs without any network call, " +
			"or publishable_key (or CLERK_PUBLISHABLE_KEY) to verify JWTs with no secret"},
	verify.APIKey:     {func(k configuredKeys) bool { return k.secret }, secretKeyOnly},
	verify.OAuthToken: {func(k configuredKeys) bool { return k.secret }, secretKeyOnly},
	verify.SessionToken: {func(k configuredKeys) bool { return k.jwts },
		"accepting %s needs secret_key (or CLERK_SECRET_KEY) to fetch the signing keys, or jwt_key (or CLERK_JWT_KEY), " +
			"or publishable_key (or CLERK_PUBLISHABLE_KEY)"},
}

// secretKeyOnly is the hint for the types Clerk verifies with the instance
// secret key alone.
const secretKeyOnly = "accepting %s needs secret_key (or CLERK_SECRET_KEY): Clerk verifies them only " +
	"with the instance secret key, not with a machine secret key"

// checkKeyPrefixes catches the two keys swapped, or something else pasted.
func checkKeyPrefixes(secretKey, machineKey string) error {
	if secretKey != "" && !strings.HasPrefix(secretKey, "sk_") {
		hint := ""
		if strings.HasPrefix(secretKey, "ak_") {
			hint = " (a key starting with ak_ is a machine secret key: set it as machine_secret_key)"
		}
		return fmt.Errorf("secret_key must be an instance secret key starting with sk_%s", hint)
	}
	if machineKey != "" && !strings.HasPrefix(machineKey, "ak_") {
		hint := ""
		if strings.HasPrefix(machineKey, "sk_") {
			hint = " (a key starting with sk_ is an instance secret key: set it as secret_key)"
		}
		return fmt.Errorf("machine_secret_key must be a machine secret key starting with ak_%s", hint)
	}
	return nil
}

// ServeHTTP verifies the request's credential and either refuses the request
// or passes it on with the identity placeholders set.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	identity, err := h.verifier.VerifyRequest(r)
	if err != nil {
		var verr *verify.Error
		if !errors.As(err, &verr) { // fail closed on what verify does not promise
			verr = &verify.Error{Reason: verify.ReasonInvalid, Err: err}
		}
		if h.Optional && verr.Reason == verify.ReasonMissing {
			h.observer.verification("", "", outcomeAnonymous)
			publishIdentity(r.Context(), repl, nil)
			return next.ServeHTTP(w, r)
		}
		if clientGone(r, err) {
			return caddyhttp.Error(statusClientClosedRequest, err)
		}
		h.observer.verification(verr.TokenType, verr.Format, string(verr.Reason))
		return h.refuse(w, repl, verr)
	}
	h.observer.verification(identity.TokenType, identity.Format, outcomeVerified)
	publishIdentity(r.Context(), repl, identity)
	addAccessLogFields(r, identity)
	if h.StripAuthorization {
		stripCredential(r)
	}
	if c := h.logger.Check(zap.DebugLevel, "credential verified"); c != nil {
		c.Write(zap.String("subject", identity.Subject), zap.String("token_type", string(identity.TokenType)),
			zap.String("token_format", string(identity.Format)), zap.String("token_id", identity.TokenID))
	}
	return next.ServeHTTP(w, r)
}

// addAccessLogFields puts the credential's type and id (never the
// credential) in the request's access log entry, next to the user_id Caddy
// takes from {http.auth.user.id}: both in one field, because every field
// added clears a map Caddy keeps for the request. A server that keeps no
// access log gets none at all (nor does a request that came to no server,
// as caddyhttp.PrepareRequest allows).
func addAccessLogFields(r *http.Request, identity *verify.Identity) {
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && (srv == nil || srv.Logs == nil) {
		return
	}
	if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.Inline(accessLogFields{identity}))
	}
}

// accessLogFields are the credential's fields of an access log entry, at
// its top level.
type accessLogFields struct{ identity *verify.Identity }

func (f accessLogFields) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("token_type", string(f.identity.TokenType))
	enc.AddString("token_id", f.identity.TokenID)
	return nil
}

// stripCredential removes every Clerk credential from the request, not only
// the one verified: the Authorization header and every session cookie
// (__session, and the __session_<suffix> of Clerk's newer SDKs). A session
// cookie left beside a verified machine token would reach the upstream as
// someone's credential that nobody checked.
func stripCredential(r *http.Request) {
	r.Header.Del("Authorization")
	stripCookies(r.Header, isSessionCookie)
}

// isSessionCookie reports whether a cookie of this name holds a Clerk
// session token.
func isSessionCookie(name string) bool {
	return name == verify.SessionCookie || strings.HasPrefix(name, verify.SessionCookie+"_")
}

// stripCookies removes every name=value pair whose name strip matches from
// the Cookie headers and leaves the other pairs as they were sent:
// reparsing them would drop those Go cannot parse, and merge the headers.
func stripCookies(header http.Header, strip func(name string) bool) {
	var kept []string
	for _, line := range header.Values("Cookie") {
		pairs := slices.DeleteFunc(strings.Split(line, ";"), func(pair string) bool {
			pairName, _, _ := strings.Cut(pair, "=")
			return strip(strings.TrimSpace(pairName))
		})
		if rest := strings.TrimSpace(strings.Join(pairs, ";")); rest != "" {
			kept = append(kept, rest)
		}
	}
	if len(kept) == 0 {
		header.Del("Cookie")
		return
	}
	header["Cookie"] = kept
}

// Cleanup releases the shared instance; the last configuration to release
// it stops its background work.
func (h *Handler) Cleanup() error {
	if h.keySet != nil {
		h.keySet.release()
		h.keySet = nil
	}
	return nil
}

// Interface guards
var (
	_ caddy.Module                = (*Handler)(nil)
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
