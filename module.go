// Package clerkm2m is a Caddy HTTP handler that lets only requests carrying a
// valid Clerk machine credential through, and hands the verified identity and
// claims to later handlers as placeholders. See Handler.
package clerkm2m

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-clerk/clerk-m2m/verify"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler verifies the Clerk credential of every request and lets only
// valid ones through: machine-to-machine (M2M) tokens, opaque (`mt_…`) or
// JWT; API keys (`ak_…`); OAuth access tokens, opaque (`oat_…`) or JWT; and
// browser session tokens. The credential comes from the `Authorization:
// Bearer` header, or, for session tokens only, a browser's session cookies,
// read as Clerk's SDK reads them for the app of `publishable_key`.
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
// | a session token from the cookies of a browser not signed in (per `__client_uat`) or older than its `__client_uat` | 401 | `session_outdated` |
// | a token type or format this route does not accept | 401 | `token_type_not_accepted` |
// | valid, but `require_scopes` or `allowed_subjects` not met | 403 | `insufficient_scope` |
// | Clerk unreachable, failing, or its keys unavailable | 503 | `clerk_unavailable` |
// | Clerk rate-limits verification (429), or asked to wait and the wait is not over | 503 | `clerk_rate_limited` |
// | a new opaque credential beyond `max_clerk_calls` or `max_clerk_rate`, or the client's fair share of them | 503 | `clerk_calls_limited` |
// | Clerk rejects the configured secret key | 500 | `misconfigured` |
//
// 401 answers carry `WWW-Authenticate: Bearer realm="clerk"` (with
// `error="invalid_token"` when a credential was presented), 403 answers
// `error="insufficient_scope"`, 503 answers a `Retry-After`. On a
// `protected_resource`, 401 and 403 challenges also carry
// `resource_metadata="…"`, the URL of the resource's metadata, which the
// handler serves.
//
// Placeholders set for a verified request (none for an anonymous request
// let through by `optional`):
//
// | placeholder | value |
// |-------------|-------|
// | `{http.auth.user.id}` | the subject: a machine (`mch_…`), user (`user_…`) or organization (`org_…`); also the access log's `user_id` |
// | `{http.auth.user.token_type}` | the credential's type, as `accept` names it |
// | `{http.auth.user.token_format}` | `opaque` or `jwt` |
// | `{http.auth.user.token_id}` | the credential's id (`mt_…`, `ak_…`, `oat_…`) or the JWT's `jti` |
// | `{http.auth.user.scopes}` | the credential's scopes, separated by one space (for M2M tokens, the machines it may call) |
// | `{http.auth.user.claims}` | the custom claims as a JSON object (`{}` when none) |
// | `{http.auth.user.claims.<path>}` | one claim; dots walk into objects; strings as is, other values as JSON; empty when the credential does not carry it |
// | `{http.auth.user.expires_at}` | expiry in Unix seconds; empty when the credential never expires |
// | `{http.auth.user.issued_at}` | JWTs: when the token was issued (its `iat`), in Unix seconds; empty when it does not say, and for opaque credentials |
// | `{http.auth.user.client_id}` | OAuth tokens: the OAuth application's client id |
// | `{http.auth.user.session_id}` | session tokens: the session (`sess_…`) |
// | `{http.auth.user.org_id}` | session tokens: the active organization; API keys: the organization that owns the key |
// | `{http.auth.user.name}` | API keys: the key's name |
// | `{http.auth.user.actor}` | OAuth tokens from a token exchange (RFC 8693): the acting subject, whose whole chain is in the claims' `act`; impersonated sessions: the impersonator |
//
// The access log gets the caller as `user_id`, and the credential's
// `token_type` and `token_id` (never the credential); a refused request's
// entry gets the reason as `clerk_m2m_error`. The handler logs each
// verdict with its cause at DEBUG, to the logger
// `http.handlers.clerk_m2m` (a site's `log` is its access log, which
// shows none of it). The admin endpoint's
// `/metrics` serves `caddy_clerk_m2m_*` metrics (with or without Caddy's
// `metrics` global option): verifications by type, format and outcome,
// requests to Clerk by endpoint and result with their latency, cache hits
// and misses, fetches and age of the signing keys.
type Handler struct {
	// The instance secret key (`sk_live_…` or `sk_test_…`). It verifies opaque
	// M2M tokens (when no machine secret key is set) and fetches the signing
	// keys that verify M2M JWTs. `off` is none, whatever CLERK_SECRET_KEY
	// holds. Default: `{env.CLERK_SECRET_KEY}`.
	SecretKey string `json:"secret_key,omitempty"`

	// The secret key of the machine this gateway stands for (`ak_…`). When
	// set, it verifies opaque M2M tokens, and Clerk then accepts only tokens
	// granted access to this machine. It cannot fetch signing keys, so M2M
	// JWTs also need `secret_key` or `jwt_key`. `off` is none.
	// Default: `{env.CLERK_MACHINE_SECRET_KEY}`.
	MachineSecretKey string `json:"machine_secret_key,omitempty"`

	// The instance's JWT public key in PEM form ("JWKS Public Key" in Clerk's
	// dashboard), or the path of a file holding it. When set, JWTs are verified
	// with it alone and the signing keys are never fetched. `off` is none.
	// Default: `{env.CLERK_JWT_KEY}`.
	JWTKey string `json:"jwt_key,omitempty"`

	// The base URL of Clerk's Backend API.
	// Default: `{env.CLERK_API_URL}`, else `https://api.clerk.com`.
	APIURL string `json:"api_url,omitempty"`

	// The instance's publishable key (`pk_live_…` or `pk_test_…`). Without
	// a secret key or `jwt_key`, JWTs are verified with the signing keys the
	// instance's Frontend API publishes (`/.well-known/jwks.json`, named by
	// the key, never by a token), so a gateway that takes only JWTs needs no
	// secret at all. It also names the app whose browser sessions are read
	// from cookies (`__session`, or the name Clerk's frontend suffixes for
	// the app): without it, sessions come from the Authorization header
	// only. `off` is none. Default: `{env.CLERK_PUBLISHABLE_KEY}`.
	PublishableKey string `json:"publishable_key,omitempty"`

	// The credential types to accept, by the names the README's
	// "Credential types" lists, or `any` for all of them. Other types are
	// refused without calling Clerk. Default: `m2m_token`.
	Accept []string `json:"accept,omitempty"`

	// Scopes a valid credential must all carry, else 403. For M2M JWTs,
	// whose audience Clerk's SDK checks only when one is configured and the
	// token names one, requiring this machine's own id (`mch_…`) restores
	// the check Clerk makes for opaque tokens.
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
	// `__session_<suffix>` as Clerk's frontend names them for each app),
	// whichever was verified. The other cookies are passed on as sent.
	// Default: off.
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
	// call). API keys and opaque M2M tokens carry none, and are not checked:
	// only with `machine_secret_key` does Clerk accept just the opaque M2M
	// tokens granted to this machine; with `secret_key` alone it accepts
	// one granted to any machine of the instance. A gateway without the
	// machine key sets `require_scopes <its machine id>` instead (or
	// `machine_secret_key`). Default: none.
	Audience []string `json:"audience,omitempty"`

	// Issuers a session token may come from (its `iss` claim, the
	// instance's Frontend API, e.g. `https://clerk.example.com`); when set,
	// a session token from another, or without `iss`, is refused. Only with
	// `session_token`: as in Clerk's SDK, machine JWTs are not checked for
	// their issuer (M2M JWTs may carry none). Default: any issuer.
	Issuer []string `json:"issuer,omitempty"`

	// Makes the route an OAuth protected resource, such as an MCP server:
	// the handler serves the resource's metadata (RFC 9728) and points
	// every 401 and 403 at it, and OAuth access tokens must be issued for
	// the resource's URI. See ProtectedResource. Default: none.
	ProtectedResource *ProtectedResource `json:"protected_resource,omitempty"`

	// The whole budget of one call to Clerk, retries included. 0 would
	// give Clerk no time, and is refused; so is more than `1h`.
	// Default: `5s`.
	Timeout *caddy.Duration `json:"timeout,omitempty"`

	// Leeway when checking a token's expiry and start times; 0 means none.
	// More than `5m` is refused: tokens that expired that long ago would
	// pass. Default: `5s`.
	ClockSkew *caddy.Duration `json:"clock_skew,omitempty"`

	// How long the verification of an opaque token may be reused before
	// Clerk is asked again (never beyond the token's expiry). Clerk's
	// refusal of one is remembered for a second, then twice as long each
	// time Clerk refuses it again, up to an hour (a token Clerk does not
	// know, or knows revoked or expired, never becomes valid; the second
	// spares a token minted a moment ago). 0 turns both off. A revoked
	// credential passes for up to this long: more than `5m` is warned
	// about when the configuration loads, more than `1h` refused.
	// Default: `30s`.
	CacheTTL *caddy.Duration `json:"cache_ttl,omitempty"`

	// How long Clerk's signing keys keep being used when they cannot be
	// refreshed (they are renewed every 4 minutes). After that, JWTs are
	// refused with 503 until Clerk answers again. 0 means never past
	// their renewal; more than `24h` is refused. Default: `1h`.
	JWKSMaxStale *caddy.Duration `json:"jwks_max_stale,omitempty"`

	// The most calls to Clerk in flight at once, for all the handlers that
	// share this one's Clerk instance (the same `api_url`, keys,
	// `timeout`, `jwks_max_stale`, `max_clerk_calls`, `max_clerk_rate`
	// and `cache_max_bytes`), and the most connections to it, as the
	// gateway counts them (a call it gave up on frees its place at once;
	// Clerk sees its request end a moment later). A credential that needs
	// one more call (a new opaque token) is refused
	// at once with 503, `Retry-After: 1` and `clerk_calls_limited`;
	// credentials answered from the cache, and JWTs, need none. The calls
	// are shared between clients (Caddy's client IP, which honours
	// `trusted_proxies`; an IPv6 client by its /64): once half of them are
	// in flight, a client that already has its fair share in flight (the
	// bound divided by one more than the number of clients with calls in
	// flight) is refused, so that one client alone gets about half, and
	// cannot take the calls the next client's credentials need. This
	// bounds connections and goroutines while Clerk is slow;
	// `max_clerk_rate` bounds what Clerk is asked. Default: `64`.
	MaxClerkCalls int `json:"max_clerk_calls,omitempty"`

	// The most calls a second that verify credentials with Clerk, for the
	// handlers that share this one's Clerk instance (as for
	// `max_clerk_calls`), counted over 10 seconds as Clerk counts its
	// limit (`20` allows 200 in each 10 seconds, which a burst may spend at
	// once), and shared between clients by the same rule: once half of the
	// 10 seconds' calls are made, a client that made its fair share of them
	// is refused until the next 10 seconds. Past it, a credential that
	// needs a call gets 503 at once, `clerk_calls_limited`, and the time
	// left as `Retry-After`. Clerk takes 1,000 calls per 10 seconds from a
	// production instance, and 100 from a development one, for all the
	// backends of the instance: the default is a fifth of a production
	// instance's, and leaves the rest to the others; set 5 for a
	// development instance, and divide by the number of gateways of a
	// fleet. After Clerk answers 429, no call at all is made (fetches of
	// the signing keys included) until its `Retry-After` has passed (10
	// seconds when it gives none): meanwhile a credential that needs one
	// gets 503 `clerk_rate_limited`, with the time left as `Retry-After`.
	// Default: `20`.
	MaxClerkRate int `json:"max_clerk_rate,omitempty"`

	// The most memory the verdicts remembered for this handler's Clerk
	// instance may hold, in bytes (in the Caddyfile also `64MiB` and the
	// like), for all the handlers that share the instance (as for
	// `max_clerk_calls`): one cache, for opaque tokens and JWTs (from a
	// JWT's second use) alike, counted from each verdict's identity,
	// scopes and claims. Past it,
	// the verdicts least used lately are forgotten; expired ones are
	// dropped as they come up. Half of it is kept for the opaque
	// credentials Clerk accepted: JWT verdicts and refusals, which anyone
	// can send many of, give way to each other once they hold their half,
	// and never push out a verdict that took a call to Clerk while those
	// hold less than theirs. A verdict on an M2M JWT is counted about
	// 2.4 KB, on an opaque token 0.8 KB: 64 MiB keeps some 28,000 of the
	// one, or 85,000 of the other. Default: `64MiB`.
	CacheMaxBytes int64 `json:"cache_max_bytes,omitempty"`

	// Share the verdicts on opaque credentials with the other Caddy
	// instances of the cluster, through the storage they share (the
	// `storage` global option): a credential Clerk verified for one
	// instance is accepted by the others without asking Clerk again, until
	// the verdict expires (`cache_ttl` after Clerk's answer, or the
	// credential's expiry, whichever comes first; never later on another
	// instance, nor later than its own `cache_ttl` after Clerk's answer).
	// Looked up after the in-memory cache, within a quarter of `timeout`
	// (at most 250ms), and before asking Clerk. Only successes
	// are shared: a refusal is asked of Clerk again. Entries are named and
	// authenticated with keys derived from `secret_key` and
	// `machine_secret_key` (HKDF and HMAC-SHA256): the storage holds no
	// credential nor key, a handler with other keys or another `api_url`
	// reads none of them, and an entry written without the keys is
	// ignored. Trouble with the storage never lets a request through: the
	// credential is verified with Clerk. Needs `cache_ttl`, and a key that
	// verifies opaque credentials. Default: off.
	SharedCache bool `json:"shared_cache,omitempty"`

	settings settings // expanded at provision
	verifier *verify.Verifier
	observer observer
	instance *lease // on the shared instance in use
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

// Interface guards
var (
	_ caddy.Module                = (*Handler)(nil)
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
