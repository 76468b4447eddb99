// Package backendtest is an in-process fake of Clerk's Backend API (BAPI) for
// tests: it mints opaque M2M tokens and M2M JWTs, API keys, opaque OAuth
// access tokens and OAuth JWTs, and session and JWT-template tokens,
// verifies the opaque ones the way Clerk does, serves the signing keys as a
// JWKS, rotates keys, records every request and injects faults (errors, rate
// limits, hangs, garbage, slow bodies).
//
// A typical test starts a fake, creates the machines involved, mints a
// token for the caller and points the code under test at the fake's URL:
//
//	func TestGateway(t *testing.T) {
//		clerk := backendtest.New()
//		defer clerk.Close()
//		api := clerk.NewMachine("invoices-api")    // the machine behind the gateway
//		caller := clerk.NewMachine("billing-job") // the machine calling it
//		token, id := clerk.CreateM2MToken(caller, backendtest.TokenOptions{Scopes: []string{api.ID}})
//		gw := startGateway(t, clerk.URL, api.SecretKey) // your code under test
//		// ... call gw with "Authorization: Bearer "+token: accepted.
//		clerk.RevokeM2MToken(id) // ... now rejected.
//		clerk.SetFault(backendtest.Fault{Path: "/m2m_tokens/verify", Status: 503, Times: 1})
//	}
//
// # Routes
//
// The fake follows Clerk's wire format: snake_case JSON with an "object"
// field, errors as {"errors":[{"message","long_message","code"}],
// "clerk_trace_id"}, a Clerk-Trace-Id response header, and a Content-Type of
// exactly "application/json".
//
//	POST /m2m_tokens/verify           {"token":"mt_…"} → 200 M2M token object
//	POST /m2m_tokens                  create a token as a machine → 201
//	POST /api_keys/verify             {"secret":"ak_…"} → 200 API key object
//	POST /oauth_applications/access_tokens/verify
//	                                  {"access_token":"oat_…"} → 200 OAuth access token object
//	GET  /v1/jwks                     JWKS, instance secret key required
//	GET  /.well-known/jwks.json       the same JWKS without authentication
//
// It is also the instance's Frontend API in its role of OAuth
// authorization server (PublishableKey names it), for the clients of an
// MCP server or any OAuth protected resource:
//
//	GET  /.well-known/oauth-authorization-server   its metadata (RFC 8414)
//	POST /oauth/register              dynamic client registration (RFC 7591)
//	GET  /oauth/authorize             approves at once, redirects back with a code
//	POST /oauth/token                 the code, with its PKCE verifier, for an access token
//
// The authorization code flow with PKCE (S256) is the only one, as in
// OAuth 2.1; no refresh token is issued. The access token is an OAuth
// access token of the instance (opaque, or a JWT with
// AuthorizationOptions.JWT), for the user who approved
// (AuthorizationOptions.UserID), the registered client and the scopes
// asked for (or AuthorizationOptions.Scopes), whose audience is the
// resource the authorization named (RFC 8707).
//
// The POST routes are served both with and without a "/v1" prefix (Clerk's
// JS SDK leaves it out, its Go SDK puts it in). The OAuth route also accepts
// the deprecated field name "secret" instead of "access_token", but not
// both. A verify body must be a JSON object with only its one field, a
// non-empty string: an unknown field answers 400 "form_param_unknown", a
// missing or empty one 400 "form_param_missing", anything else 400
// "bad_request". A secret that is unknown, of another kind (an API key on
// the M2M route, say) or not visible to the caller answers 404
// "resource_not_found".
//
// Authorization is "Bearer <key>". M2M verification accepts the instance
// secret key (any token of the instance) or a machine secret key (only tokens
// whose scopes include that machine; any other token answers 404 exactly like
// an unknown one, so nothing is revealed). M2M creation accepts machine
// secret keys only. API key and OAuth verification and the JWKS accept the
// instance secret key only, which is what Clerk's SDK sends there. Other keys
// get 401 with code "unauthorized" (no key), "clerk_key_invalid" (an unknown
// "sk_" key, or any non-instance key on the instance-only routes) or
// "machine_secret_key_invalid".
//
// With "min_remaining_ttl_seconds", creation hands back the newest opaque
// token of the machine with the same claims that is not revoked and has at
// least that long to live, as Clerk does, and mints one only when there is
// none.
//
// Where Clerk's behaviour is not documented the fake picks the answer a
// gateway must defend against: revoked and expired opaque M2M tokens and API
// keys still verify with 200 and "revoked"/"expired" set to true, and so do
// revoked OAuth access tokens; an expired OAuth access token answers 200
// {"active":false}, the shape Clerk's specification gives for an inactive
// token.
//
// # Load
//
// Load reports what the fake carries now and has carried at most since
// ResetLoad: requests being answered and connections open at once, and the
// requests whose client went away before the answer (a client that cancels
// a call ends its connection), so that a test can check that the code under
// test bounds its calls to Clerk and cancels those it no longer needs. A
// Delay fault makes the calls last.
//
// # JWTs
//
// MintM2MJWT, MintOAuthJWT, MintSessionJWT and MintTemplateJWT sign with the
// current key, whose kid the JWKS serves, so gateways verify them locally.
// They differ the way Clerk's tokens do: M2M JWTs have "sub" "mch_…" and
// "cat" M2MCategory; OAuth JWTs have "typ" "at+jwt" and no "cat"; session
// tokens have a "sid" and "cat" SessionCategory; JWT-template tokens have no
// "sid" and "cat" JWTTemplateCategory. SignRaw signs anything else, and
// SignSegments segments encoded by hand.
package backendtest
