package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// TokenType is the type of a Clerk credential, named as Clerk's SDKs name
// it: M2MToken, APIKey, OAuthToken or SessionToken.
type TokenType string

// Format is how a credential is carried: an opaque string that only Clerk
// can check, or a JWT that is checked locally.
type Format string

// The two formats.
const (
	Opaque Format = "opaque"
	JWT    Format = "jwt"
)

// kinds are the types of credential, one row each, in the order the
// documentation lists them and Clerk's SDKs classify a JWT: the first kind
// whose rules claim a JWT is its kind. A row says how the type is told
// from its shape (the prefix of its opaque form, the rules of its JWTs),
// how Clerk verifies its opaque form, what a Verifier needs to verify it
// (any one of the keys named), and which of the checks of Options it
// reads. Each type's rules and mapping are in its own file (m2m.go,
// apikey.go, oauth.go, session.go).
var kinds = []*kind{
	{tokenType: M2MToken, prefix: "mt_", askClerk: (*Verifier).verifyOpaqueM2M, jwt: &m2mJWT,
		needs: machineKey | instanceKey | jwtKeys, reads: []option{optAudience}},
	{tokenType: APIKey, prefix: "ak_", askClerk: (*Verifier).verifyAPIKey,
		needs: instanceKey},
	{tokenType: OAuthToken, prefix: "oat_", askClerk: (*Verifier).verifyOpaqueOAuth, jwt: &oauthJWT,
		needs: instanceKey, reads: []option{optAudience}},
	{tokenType: SessionToken, jwt: &sessionJWT,
		needs: jwtKeys, reads: []option{optAuthorizedParties, optIssuer, optAudience}},
}

// clerkAPI is what verifying opaque credentials needs of Clerk's Backend
// API, one call per type of opaque credential; *backend.Client is one.
type clerkAPI interface {
	VerifyM2MToken(ctx context.Context, token string) (*backend.M2MToken, error)
	VerifyAPIKey(ctx context.Context, secret string) (*backend.APIKey, error)
	VerifyOAuthToken(ctx context.Context, token string) (*backend.OAuthAccessToken, error)
}

// kind is one type of Clerk credential (a row of kinds).
type kind struct {
	tokenType TokenType

	// prefix starts the type's opaque credentials, which askClerk verifies
	// with Clerk's Backend API; "" and nil for a type with no opaque form.
	prefix   string
	askClerk func(v *Verifier, ctx context.Context, token string) (*Identity, error)

	// jwt are the rules of the type's JWTs; nil for a type with no JWT form.
	jwt *jwtKind

	needs keySet   // what can verify it: any one of these
	reads []option // the checks of Options its rules read
}

// keySet is a set of the keys a Verifier may hold.
type keySet uint8

const (
	// instanceKey: the instance secret key, with which Clerk verifies
	// every opaque credential.
	instanceKey keySet = 1 << iota
	// machineKey: a machine secret key, with which Clerk verifies the
	// opaque M2M tokens granted to that machine.
	machineKey
	// jwtKeys: keys that verify JWTs: jwt_key, or the signing keys
	// fetched with the secret key or the publishable key.
	jwtKeys
)

// keyHints say what provides each key, as users configure it: the
// options that provide it, in the order an operator would reach for them.
var keyHints = []struct {
	key  keySet
	hint string
}{
	{machineKey, "machine_secret_key (or CLERK_MACHINE_SECRET_KEY)"},
	{instanceKey | jwtKeys, "secret_key (or CLERK_SECRET_KEY)"},
	{jwtKeys, "jwt_key (or CLERK_JWT_KEY) to verify JWTs with no network call"},
	{jwtKeys, "publishable_key (or CLERK_PUBLISHABLE_KEY) to verify JWTs with no secret"},
}

// need says what to set for a type whose needs the keys held do not meet:
// every option that provides one of them.
func (k *kind) need() error {
	var hints []string
	for _, h := range keyHints {
		if k.needs&h.key != 0 {
			hints = append(hints, h.hint)
		}
	}
	why := ""
	if k.needs == instanceKey {
		why = ": Clerk verifies them with the instance secret key only, not with a machine secret key"
	}
	return fmt.Errorf("accepting %s needs %s%s", k.tokenType, strings.Join(hints, ", or "), why)
}

// option names a check of Options that only some types read, as users
// write it.
type option string

const (
	optAuthorizedParties option = "authorized_parties"
	optIssuer            option = "issuer"
	optAudience          option = "audience"
)

// anyType is the name that stands for every token type.
const anyType = "any"

// ParseTokenTypes reads names of token types ("m2m_token", "api_key",
// "oauth_token", "session_token"), or "any" for all of them, and returns the
// types named, each once, in that order. ParseTokenTypes([]string{"any"})
// lists every type.
func ParseTokenTypes(names []string) ([]TokenType, error) {
	named := map[TokenType]bool{}
	for _, name := range names {
		if name == anyType {
			for _, k := range kinds {
				named[k.tokenType] = true
			}
			continue
		}
		if kindOf(TokenType(name)) == nil {
			return nil, fmt.Errorf("unknown token type %q: use %s, or %s", name, typeNames(kinds), anyType)
		}
		named[TokenType(name)] = true
	}
	var types []TokenType
	for _, k := range kinds {
		if named[k.tokenType] {
			types = append(types, k.tokenType)
		}
	}
	return types, nil
}

// typeNames lists the types of kinds, separated by commas.
func typeNames(of []*kind) string {
	names := make([]string, len(of))
	for i, k := range of {
		names[i] = string(k.tokenType)
	}
	return strings.Join(names, ", ")
}

// kindOf returns the kind of t, or nil.
func kindOf(t TokenType) *kind {
	i := slices.IndexFunc(kinds, func(k *kind) bool { return k.tokenType == t })
	if i < 0 {
		return nil
	}
	return kinds[i]
}

// credential is a credential whose kind and format are known from its
// shape; nothing about it is verified yet.
type credential struct {
	kind   *kind
	format Format
	raw    string
	jwt    *jwtToken // its decoded parts, for a JWT
}

// classify decides what kind of credential raw is, from its shape alone,
// with no cryptography and no network, in the order Clerk's SDKs use: a
// string in the form of a JWT is the first kind whose JWT rules claim it
// (an M2M token when its "sub" names a machine, else an OAuth token when
// its "typ" says so, else a session token); else an opaque credential is
// the kind its prefix names (mt_, ak_, oat_). Anything else, a string in
// JWT form whose parts do not decode included, is refused with
// ReasonInvalid, carrying the format its shape has, if any. It is the one
// place a credential's type and format are worked out; its length was
// checked before (checkTokenLength).
func classify(raw string) (*credential, error) {
	// A string in the form of a JWT is base64url and dots only, all of
	// them b64token characters: its form is its character check. What has
	// the shape of one is decoded straight away, the strict base64url
	// decoding checking every character (but CR and LF, which it skips,
	// and which the shape excludes); only when that fails is the form
	// checked character by character, to tell a malformed JWT from a
	// string that is none.
	if jwtShaped(raw) {
		decoded, err := decodeJWT(raw)
		switch {
		case err == nil:
			i := slices.IndexFunc(kinds, func(k *kind) bool { return k.jwt != nil && k.jwt.claims(decoded) })
			return &credential{kind: kinds[i], format: JWT, raw: raw, jwt: decoded}, nil // the session kind claims any JWT
		case looksLikeJWT(raw):
			return nil, &Error{Reason: ReasonInvalid, Format: JWT, Description: "the token is not a well-formed JWT", Err: err}
		}
	}
	i := slices.IndexFunc(kinds, func(k *kind) bool { return k.prefix != "" && strings.HasPrefix(raw, k.prefix) })
	switch {
	case i < 0:
		return nil, invalid("", "the token is not a Clerk credential")
	case len(raw) == len(kinds[i].prefix) || !b64TokenOnly(raw):
		return nil, &Error{Reason: ReasonInvalid, Format: Opaque, Description: "the token is not a Clerk credential"}
	}
	return &credential{kind: kinds[i], format: Opaque, raw: raw}, nil
}
