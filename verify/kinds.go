package verify

import (
	"context"
	"strings"
)

// kind is one type of Clerk credential: how it is told from its shape,
// and how it is verified. Each kind has its file (m2m.go, apikey.go,
// oauth.go, session.go) and its row in kinds.
type kind struct {
	tokenType TokenType

	// prefix starts the type's opaque credentials, which askClerk verifies
	// with Clerk's Backend API; "" and nil for a type with no opaque form.
	prefix   string
	askClerk func(v *Verifier, ctx context.Context, token string) (*Identity, error)

	// jwt are the rules of the type's JWTs; nil for a type with no JWT form.
	jwt *jwtKind
}

// kinds are the types of credential, in the order the documentation lists
// them and Clerk's SDKs classify a JWT: the first kind whose rules claim a
// JWT is its kind.
var kinds = []*kind{&m2mKind, &apiKeyKind, &oauthKind, &sessionKind}

// kindOf returns the kind of t, or nil.
func kindOf(t TokenType) *kind {
	for _, k := range kinds {
		if k.tokenType == t {
			return k
		}
	}
	return nil
}

// prefixedKind returns the kind whose opaque prefix token starts with, or
// nil. Matching is case-sensitive, as in Clerk's SDKs.
func prefixedKind(token string) *kind {
	for _, k := range kinds {
		if k.prefix != "" && strings.HasPrefix(token, k.prefix) {
			return k
		}
	}
	return nil
}

// classified is a credential whose kind is known from its shape; nothing
// about it is verified yet.
type classified struct {
	kind *kind
	raw  string
	jwt  *jwtToken // its decoded parts, for a JWT
}

// format is how the classified credential is carried.
func (c *classified) format() Format {
	if c.jwt != nil {
		return JWT
	}
	return Opaque
}

// classify decides what kind of credential token is, from its shape alone,
// with no cryptography and no network, in the order Clerk's SDKs use: a
// string in the form of a JWT is the first kind whose JWT rules claim it
// (an M2M token when its "sub" names a machine, else an OAuth token when
// its "typ" says so, else a session token); else an opaque credential is
// the kind its prefix names (mt_, ak_, oat_). prefixed is the kind its
// prefix names, if any. Anything else, a string in JWT form whose parts do
// not decode included, is refused with ReasonInvalid.
func classify(token string, prefixed *kind) (*classified, error) {
	if err := checkTokenLength(token); err != nil {
		return nil, err
	}
	// A string in the form of a JWT is base64url and dots only, all of
	// them b64token characters: its form is its character check.
	if looksLikeJWT(token) {
		return classifyJWT(token)
	}
	if err := checkTokenSyntax(token); err != nil {
		return nil, err
	}
	if prefixed != nil && len(token) > len(prefixed.prefix) {
		return &classified{kind: prefixed, raw: token}, nil
	}
	return nil, invalid("", "the token is not a Clerk credential")
}

func classifyJWT(token string) (*classified, error) {
	decoded, err := decodeJWT(token)
	if err != nil {
		return nil, invalidBecause("", "the token is not a well-formed JWT", err)
	}
	for _, k := range kinds {
		if k.jwt != nil && k.jwt.claims(decoded) {
			return &classified{kind: k, raw: token, jwt: decoded}, nil
		}
	}
	return nil, invalid("", "the token is not a Clerk credential") // the session kind claims any JWT
}

// formatOf tells how a credential that could not be classified is carried,
// from its shape: opaque when a known prefix starts it, a JWT when it has
// the form of one, "" when it is neither.
func formatOf(token string, prefixed *kind) Format {
	switch {
	case prefixed != nil:
		return Opaque
	case looksLikeJWT(token):
		return JWT
	default:
		return ""
	}
}
