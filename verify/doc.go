// Package verify decides whether a Clerk credential is valid, by the rules
// Clerk's own SDK applies, stricter where it is lax and, where it departs
// from the RFCs, by the RFCs; and turns a valid one into an Identity. It knows nothing of Caddy: a Go service can use it
// on its own, which matters because Clerk's Go SDK cannot verify M2M JWTs or
// OAuth JWTs locally.
//
// # Credentials
//
// Four types of credential (TokenType) are known, each in two formats
// (Format) or one:
//
//   - M2MToken: machine-to-machine tokens, opaque (mt_…) or JWTs;
//   - APIKey: API keys (ak_…), opaque only;
//   - OAuthToken: OAuth access tokens, opaque (oat_…) or JWTs (typ at+jwt);
//   - SessionToken: the JWTs of browser sessions, from the Authorization
//     header or a browser's cookies, which VerifyRequest reads as Clerk's
//     SDK reads them for the app of Options.PublishableKey (the plain
//     cookies or those suffixed for the app; none without the key).
//
// A credential's type is decided from its shape alone, so that a type the
// Verifier does not accept is refused before any signature check or network
// call. Opaque credentials are verified by Clerk's Backend API, with the
// instance secret key (Options.SecretKey) or, for M2M tokens, a machine
// secret key (Options.MachineSecretKey); JWTs are verified locally, with
// the instance's public key (Options.JWTKey: no network at all) or its
// signing keys, fetched with the secret key or from the Frontend API a
// publishable key names (Options.PublishableKey), and kept fresh. Which
// type needs which key, and which checks each type reads, is said once,
// in the table of kinds.go; New refuses options that cannot work together.
// Verified credentials are remembered for Options.CacheTTL (opaque) or
// until they expire (JWTs, from their second use: one used once is not
// kept), keyed by the credential itself, in memory
// only: a lookup costs a seeded hash (Go's own, as its maps use), not a
// SHA-256, takes no lock, and answers only for the very same credential.
//
// # Bounds
//
// The Verifiers of one Clerk instance share a Pool (NewPool): the
// connections to Clerk; one cache of verdicts, bounded by an estimate of
// the memory it holds (PoolOptions.CacheMaxBytes; expired verdicts are
// dropped as they come up, and swept every minute while Pool.Run runs),
// half of it kept for the verdicts that took a call to Clerk, so that
// verdicts anyone can make many of (JWTs, refusals) cannot push them out;
// and the calls to Clerk, bounded in number at once
// (PoolOptions.MaxClerkCalls) and a second (PoolOptions.MaxClerkRate),
// both shared fairly between the clients that send the credentials
// (Options.ClientOf), and none at all while Clerk's last 429 asks to
// wait. A credential that needs a call beyond a bound is refused at once
// with ReasonCallsLimited (ReasonRateLimited while Clerk asks to wait);
// one the cache answers, and a JWT, needs none. A call is made once for
// all the requests that present the same credential meanwhile, and
// cancelled when the last of them stops waiting. Clerk's refusals are
// remembered for a second, then twice as long each time Clerk repeats
// them, up to an hour. A Verifier answers only from the verdicts of
// Verifiers set up alike, so that sharing never lets one configuration's
// verdict answer for another's. Pool.Run keeps the signing keys fresh
// until its context ends: the Pool's background work lives as long as
// that context.
//
// # Across processes
//
// Verifiers in several processes (gateways behind one load balancer) may
// share their verdicts on opaque credentials through a Store, a second
// level behind the in-memory cache (Options.Store): a credential is looked
// up there once for all the requests presenting it, within a quarter of
// the Pool's timeout (at most 250 ms), inside the call its first request
// makes; only Clerk's successes are written, in the background and
// bounded, until CacheTTL after Clerk's answer or the credential's
// expiry; entries are named and authenticated with keys derived from the
// Clerk secret keys, so that the store holds no credential and a writer
// without the keys cannot plant a verdict. Anything wrong with the store
// is a miss: Clerk is asked.
//
// # Use
//
//	verifier, err := verify.New(verify.Options{
//		Accept:        []verify.TokenType{verify.M2MToken},
//		SecretKey:     os.Getenv("CLERK_SECRET_KEY"),
//		RequireScopes: []string{"mch_this_service"},
//	})
//	if err != nil {
//		// options that cannot work together, named
//	}
//	identity, err := verifier.VerifyRequest(r)
//	if err != nil {
//		// *verify.Error: its Reason says what to answer (401, 403, 503...)
//	}
//	// identity.Subject is the caller (mch_…, user_…, org_…)
//
// Verify takes the credential as a string instead of a request. The
// package's Example runs this against the fake Clerk of backend/backendtest.
// Inspect classifies a credential without verifying it (its type, its
// format and, for a JWT, its header and claims), for tools that explain a
// verdict. StripCredentials removes every Clerk credential from a
// request's headers.
//
// # Refusals
//
// Every refusal is an *Error whose Reason maps to an HTTP answer:
// ReasonMissing, ReasonInvalid, ReasonExpired, ReasonSessionOutdated (a
// session token from the cookies of a browser that is not, or no longer,
// signed in to that session) and ReasonTypeNotAccepted to 401,
// ReasonInsufficientScope to 403, ReasonUnavailable, ReasonRateLimited and
// ReasonCallsLimited to 503, ReasonMisconfigured (Clerk rejected the key
// this Verifier uses) to 500. The Error also says the credential's type and
// format as far as they could be told, and never holds the credential.
//
// # Why JWTs are parsed here, and keys by jwx
//
// JWTs are decoded and checked by this package's own code (jwt.go,
// jsonscan.go), not by a JOSE library, for strictness first: one token must
// have one meaning and one spelling, because a token that two parsers read
// differently is a token one of them can be fooled by.
//
//   - Header and payload must be JSON objects in valid UTF-8 whose member
//     names are distinct, escaped spellings included ("s\u0075b" is "sub"):
//     parsers disagree on which of two members wins.
//   - Base64url must be unpadded and canonical (no stray trailing bits), so
//     that no two strings are the same token.
//   - A token carrying crit, jku, jwk, x5u or x5c is refused, never
//     interpreted: no key or key URL is ever taken from a token.
//   - The algorithm must be RS256, RS384 or RS512 and agree with the key;
//     typ and Clerk's cat header are checked before any key lookup.
//
// jwx/v2, the library the project otherwise uses for JOSE, verifies every
// one of these tokens when signed with the right key: duplicate claims and
// header members (one of the two is used), escaped duplicates, invalid UTF-8,
// padded base64 and other spellings of the same bytes, crit, jku, x5u, jwk
// and x5c (ignored), and a typ Clerk does not use. A test
// (TestWhatJWXAcceptsIsRefusedHere) keeps this list true.
//
// The hot path gains too: a JWT not seen before costs one RSA verification
// and a few microseconds of parsing, where jwx's jwt.Parse costs about 1.7
// times as much with ten times the allocations (BenchmarkVerifyM2MJWTUncached
// against BenchmarkJWXParse).
//
// jwx is kept where it serves: reading keys, from Clerk's JWKS and from the
// operator's PEM (jwk.ParseKey), input that comes from Clerk or the
// configuration, never from a client.
//
// Every parser a client can reach is fuzzed (fuzz_test.go, seeds in
// testdata/fuzz): FuzzBearerToken (the Authorization header),
// FuzzSessionCookies (a browser's Cookie header), FuzzClassify (any string,
// classified), FuzzScanObject (the JSON object scanner, which
// must accept exactly the objects encoding/json decodes with distinct
// members, with the same values) and FuzzVerify (the whole verifier: no
// mutation of a signed token may verify). CI runs each for a few seconds;
// longer runs are made by hand:
//
//	go test -run '^$' -fuzz '^FuzzVerify$' -fuzztime 30m ./verify/
package verify
