// Package verify decides whether a Clerk credential is valid, by the rules
// Clerk's own SDKs apply and stricter where they are lax, and turns a valid
// one into an Identity. It knows nothing of Caddy: a Go service can use it
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
//   - SessionToken: the JWTs of browser sessions.
//
// A credential's type is decided from its shape alone, so that a type the
// Verifier does not accept is refused before any signature check or network
// call. Opaque credentials are verified by Clerk's Backend API through a
// Backend (a *backend.Client with the instance secret key, or with a
// machine secret key for M2M tokens); JWTs are verified locally with keys
// from a KeySource: PEMKey (the instance's public key, no network at all)
// or RemoteKeys (the instance's JWKS, fetched and kept fresh). Verified
// credentials are remembered, by their SHA-256, for Options.CacheTTL
// (opaque) or until they expire (JWTs).
//
// # Use
//
//	verifier := verify.New(verify.Options{
//		Accept:        []verify.TokenType{verify.M2MToken},
//		Backend:       client, // a *backend.Client: verifies opaque tokens
//		Keys:          keys,   // verify.PEMKey(pem), or verify.NewRemoteKeys(client, ...)
//		RequireScopes: []string{"mch_this_service"},
//	})
//	identity, err := verifier.VerifyRequest(r)
//	if err != nil {
//		// *verify.Error: its Reason says what to answer (401, 403, 503...)
//	}
//	// identity.Subject is the caller (mch_…, user_…, org_…)
//
// Verify takes the credential as a string instead of a request. The
// package's Example runs this against the fake Clerk of backend/backendtest.
//
// # Refusals
//
// Every refusal is an *Error whose Reason maps to an HTTP answer:
// ReasonMissing, ReasonInvalid, ReasonExpired and ReasonTypeNotAccepted to
// 401, ReasonInsufficientScope to 403, ReasonUnavailable and
// ReasonRateLimited to 503, ReasonMisconfigured (Clerk rejected the key
// this Verifier uses) to 500. The Error also says the credential's type and
// format as far as they could be told, and never holds the credential.
package verify
