// Package backendtest is an in-process fake of Clerk's Backend API (BAPI) for
// tests: it mints opaque M2M tokens and M2M JWTs, verifies them the way
// Clerk does, serves the signing keys as a JWKS, rotates keys, records every
// request and injects faults (errors, rate limits, hangs, garbage, slow
// bodies).
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
//	POST /m2m_tokens/verify, /v1/m2m_tokens/verify  {"token":"mt_…"} → 200 M2M token object
//	POST /m2m_tokens, /v1/m2m_tokens                create a token as a machine → 201
//	GET  /v1/jwks                                   JWKS, instance secret key required
//	GET  /.well-known/jwks.json                     the same JWKS without authentication
//
// Authorization is "Bearer <key>". Verification accepts the instance secret
// key (any token of the instance) or a machine secret key (only tokens whose
// scopes include that machine; any other token answers 404 exactly like an
// unknown one, so nothing is revealed). Creation accepts machine secret keys
// only and the JWKS the instance secret key only. Other keys get 401 with
// code "unauthorized" (no key), "clerk_key_invalid" (an unknown "sk_" key, or
// any non-instance key on the JWKS route) or "machine_secret_key_invalid".
//
// Where Clerk's behaviour is not documented the fake picks the answer a
// gateway must defend against: revoked and expired opaque tokens still
// verify with 200 and "revoked"/"expired" set to true.
package backendtest
