package verify

import (
	"slices"
	"strings"
)

// Prefixes of Clerk's opaque credentials, and of machine ids (the subject of
// M2M tokens). Matching is case-sensitive, as in Clerk's SDKs.
const (
	M2MTokenPrefix   = "mt_"
	OAuthTokenPrefix = "oat_"
	APIKeyPrefix     = "ak_"
	MachineIDPrefix  = "mch_"
)

// oauthJWTTypes are the "typ" values of OAuth access-token JWTs (RFC 9068).
var oauthJWTTypes = []string{"at+jwt", "application/at+jwt"}

// Token is a classified credential: its type and format are known from its
// shape, nothing about it is verified yet.
type Token struct {
	Type   TokenType
	Format Format

	raw string
	jwt *jwtToken // decoded parts when Format is JWT
}

// Classify decides what kind of credential token is, from its shape alone,
// with no cryptography and no network, in the order Clerk's SDKs use:
//
//   - a JWT whose payload "sub" is a string starting "mch_" is an M2M token;
//   - else a JWT whose header "typ" is "at+jwt" or "application/at+jwt" is
//     an OAuth access token;
//   - else any other JWT is a session token;
//   - else "mt_…" is an opaque M2M token, "oat_…" an opaque OAuth access
//     token and "ak_…" an API key.
//
// Anything else, including a string in JWT form whose parts do not decode,
// is refused with ReasonInvalid.
func Classify(token string) (*Token, error) {
	if err := checkTokenSyntax(token); err != nil {
		return nil, err
	}
	if looksLikeJWT(token) {
		return classifyJWT(token)
	}
	if kind, ok := opaqueKindOf(token); ok && len(token) > len(kind.prefix) {
		return &Token{Type: kind.tokenType, Format: Opaque, raw: token}, nil
	}
	return nil, invalid("", "the token is not a Clerk credential")
}

// opaqueKind is the prefix that makes a credential opaque, and its type.
type opaqueKind struct {
	prefix    string
	tokenType TokenType
}

var opaqueKinds = []opaqueKind{
	{M2MTokenPrefix, M2MToken},
	{OAuthTokenPrefix, OAuthToken},
	{APIKeyPrefix, APIKey},
}

// opaqueKindOf finds the opaque kind token's prefix names, if any.
func opaqueKindOf(token string) (opaqueKind, bool) {
	for _, kind := range opaqueKinds {
		if strings.HasPrefix(token, kind.prefix) {
			return kind, true
		}
	}
	return opaqueKind{}, false
}

func classifyJWT(token string) (*Token, error) {
	decoded, err := decodeJWT(token)
	if err != nil {
		return nil, invalidBecause("", "the token is not a well-formed JWT", err)
	}
	tok := &Token{Format: JWT, raw: token, jwt: decoded}
	switch {
	case isMachineSubject(decoded):
		tok.Type = M2MToken
	case decoded.header.hasTyp && slices.Contains(oauthJWTTypes, decoded.header.typ):
		tok.Type = OAuthToken
	default:
		tok.Type = SessionToken
	}
	return tok, nil
}

// isMachineSubject reports whether the payload's "sub" is a string naming a
// machine; a "sub" of another type is simply not a machine's.
func isMachineSubject(t *jwtToken) bool {
	sub, _, err := t.stringClaim("sub")
	return err == nil && strings.HasPrefix(sub, MachineIDPrefix)
}
