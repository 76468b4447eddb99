package main

// peerModule is the module ID under which the peer authenticates.
const peerModule = "http.authentication.providers.jwt"

// peerName is the peer's server in Caddy's JSON config.
const peerName = "peer"

// peerHandler is the peer's handler in Caddy's JSON, configured in the
// fields of its module (sign_key, sign_alg, user_claims), because its
// Caddyfile directive may be missing from a copy of its source; the JSON
// is what its directive would produce. from_header is left out: the peer
// reads the Authorization header whatever it is told, and naming it again
// would only make it look twice.
func peerHandler(publicKeyPEM string) map[string]any {
	return map[string]any{
		"handler": "authentication",
		"providers": map[string]any{"jwt": map[string]any{
			"sign_key":    publicKeyPEM, // the fake Clerk's RSA public key, PEM
			"sign_alg":    "RS256",
			"user_claims": []string{"sub"},
		}},
	}
}
