package verify

import (
	"context"
	"fmt"
	"strings"
)

// registeredClaim tells the claims Clerk leaves out of a token's custom
// claims; everything else in the payload (aud and scopes included) is kept,
// as Clerk's M2MToken.fromJwtPayload does.
func registeredClaim(name []byte) bool {
	switch string(name) {
	case "iss", "sub", "exp", "nbf", "iat", "jti":
		return true
	}
	return false
}

// customClaims is a JWT's custom claims: its payload's members but for the
// registered claims, as a JSON object of their own ("" when none is left),
// their values as they were written. The identity keeps only this of the
// payload: an M2M JWT's are a fifth of it.
func customClaims(t *jwtToken) string {
	size := len("{}")
	for _, m := range t.claims {
		if !registeredClaim(m.name) {
			size += len(`"":,`) + len(m.name) + len(m.value)
		}
	}
	if size == len("{}") {
		return ""
	}
	var object strings.Builder // one allocation, which becomes the string
	object.Grow(size)
	for _, m := range t.claims {
		if registeredClaim(m.name) {
			continue
		}
		if object.Len() == 0 {
			object.WriteByte('{')
		} else {
			object.WriteByte(',')
		}
		writeJSONString(&object, m.name)
		object.WriteByte(':')
		object.Write(m.value)
	}
	object.WriteByte('}')
	return object.String()
}

// jwtKind is what differs between the kinds of JWT Clerk issues: which
// JWTs are of the kind (by their shape, for classification), which
// categories may pass, which header types (nil when claims tested it
// already), and how verified claims become an identity (with the kind's
// own claim rules).
type jwtKind struct {
	claims     func(*jwtToken) bool
	categoryOK func(*jwtHeader) bool
	typeOK     func(*jwtHeader) bool
	identity   func(*Verifier, *jwtToken) (*Identity, error)
}

// verifyJWT verifies a JWT locally, in the order that leaks nothing and
// costs an attacker the most: the category before anything else (no key
// lookup for a token of another category), then the header, the key, the
// signature, and only then the claims. A valid token is cached until it
// expires, from its second use (verdictCache.seenBefore). cached is its
// key in the cache, hash that key's hash.
func (v *Verifier) verifyJWT(ctx context.Context, cred *credential, cached cacheKey, hash uint64) (*Identity, error) {
	t, tokenType, rules := cred.jwt, cred.kind.tokenType, cred.kind.jwt
	if !rules.categoryOK(&t.header) {
		return nil, invalid(tokenType, fmt.Sprintf("the token's category is not that of a %s", tokenType))
	}
	if err := t.checkHeader(tokenType, rules.typeOK); err != nil {
		return nil, err
	}
	key, err := v.keys.key(ctx, t.header.kid)
	if err != nil {
		return nil, err
	}
	if err := t.verifySignature(key); err != nil {
		return nil, invalidBecause(tokenType, "the token's signature does not verify", err)
	}
	now := v.now()
	window, err := t.checkTimes(tokenType, now, v.clockSkew)
	if err != nil {
		return nil, err
	}
	identity, err := rules.identity(v, t)
	if err != nil {
		if _, ruled := err.(*Error); ruled {
			return nil, err
		}
		return nil, invalidBecause(tokenType, "the token's claims are malformed", err)
	}
	identity.TokenType, identity.Format = tokenType, JWT
	identity.ExpiresAt, identity.IssuedAt = window.expiresAt, window.issuedAt
	identity.claimsJSON = customClaims(t)
	if v.pool.cache.seenBefore(hash) {
		v.pool.cache.put(&cacheEntry{
			key:       cached,
			identity:  identity,
			signer:    key,
			notBefore: shifted(window.notBefore, -v.clockSkew),
			until:     window.expiresAt.Add(v.clockSkew),
		}, now)
	}
	return identity, nil
}

// subjectClaim returns "sub", which Clerk requires to be a string.
func subjectClaim(t *jwtToken) (string, error) {
	sub, present, err := t.subject()
	if err == nil && !present {
		err = fmt.Errorf(`claim "sub" is missing`)
	}
	return sub, err
}
