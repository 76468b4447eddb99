package verify

import (
	"fmt"
	"slices"
	"strings"
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

// anyType is the name that stands for every token type.
const anyType = "any"

// ParseTokenTypes reads names of token types ("m2m_token", "api_key",
// "oauth_token", "session_token"), or "any" for all of them, and returns the
// types named, each once, in that order.
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

// typeSet is the set of types a Verifier accepts.
type typeSet []TokenType

func (s typeSet) has(t TokenType) bool { return slices.Contains(s, t) }
