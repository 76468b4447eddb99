// Package verify decides whether a Clerk credential is valid, by the rules
// Clerk's own SDKs apply and stricter where they are lax, and turns a valid
// one into an Identity. It knows nothing of Caddy.
//
// A credential is first classified from its shape alone (Classify), so that
// a token of a type the caller does not accept is refused before any
// signature check or network call (a verified credential is looked up in a
// cache first, by its SHA-256). JWTs are verified locally against keys from a
// KeySource; opaque tokens are verified by Clerk's Backend API through
// package backend. Every refusal is an *Error whose Reason says what went
// wrong in terms a gateway can map to an HTTP status.
package verify

import (
	"fmt"
	"strings"
)

// TokenType is the kind of a Clerk credential, named as Clerk's SDKs name it.
type TokenType string

// The token types Clerk knows.
const (
	M2MToken     TokenType = "m2m_token"
	APIKey       TokenType = "api_key"
	OAuthToken   TokenType = "oauth_token"
	SessionToken TokenType = "session_token"
)

// Format is how a credential is carried: an opaque string that only Clerk can
// check, or a JWT that is checked locally.
type Format string

// The two formats.
const (
	Opaque Format = "opaque"
	JWT    Format = "jwt"
)

// AnyType is the accept value that stands for every token type.
const AnyType = "any"

// TokenTypes is a set of token types.
type TokenTypes uint8

var typeBits = map[TokenType]TokenTypes{M2MToken: 1, APIKey: 2, OAuthToken: 4, SessionToken: 8}

// allTypes lists the types in the order they are documented.
var allTypes = []TokenType{M2MToken, APIKey, OAuthToken, SessionToken}

// TypesOf returns the set of the given types.
func TypesOf(types ...TokenType) TokenTypes {
	var set TokenTypes
	for _, t := range types {
		set |= typeBits[t]
	}
	return set
}

// ParseTokenTypes reads accept values: token type names, or "any" for all.
func ParseTokenTypes(names []string) (TokenTypes, error) {
	var set TokenTypes
	for _, name := range names {
		if name == AnyType {
			set |= TypesOf(allTypes...)
			continue
		}
		bit, ok := typeBits[TokenType(name)]
		if !ok {
			return 0, fmt.Errorf("unknown token type %q: use %s, or %s", name, TypesOf(allTypes...), AnyType)
		}
		set |= bit
	}
	return set, nil
}

// Has reports whether t is in the set.
func (s TokenTypes) Has(t TokenType) bool { return s&typeBits[t] != 0 }

// Types lists the members of the set in documentation order.
func (s TokenTypes) Types() []TokenType {
	var out []TokenType
	for _, t := range allTypes {
		if s.Has(t) {
			out = append(out, t)
		}
	}
	return out
}

func (s TokenTypes) String() string {
	names := make([]string, 0, len(allTypes))
	for _, t := range s.Types() {
		names = append(names, string(t))
	}
	return strings.Join(names, ", ")
}
