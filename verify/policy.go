package verify

import (
	"slices"
	"strings"
)

// Policy is what a route asks of a valid credential, beyond its validity.
type Policy struct {
	// RequireScopes must all be among the credential's scopes.
	RequireScopes []string
	// AllowedSubjects, when not empty, must include the credential's
	// subject.
	AllowedSubjects []string
}

// Check returns nil when id satisfies the policy, else an *Error with
// ReasonInsufficientScope.
func (p Policy) Check(id *Identity) error {
	var missing []string
	for _, scope := range p.RequireScopes {
		if !slices.Contains(id.Scopes, scope) {
			missing = append(missing, scope)
		}
	}
	if len(missing) > 0 {
		return &Error{Reason: ReasonInsufficientScope, TokenType: id.TokenType,
			Description: "the token lacks a required scope",
			Err:         scopeError(missing)}
	}
	if len(p.AllowedSubjects) > 0 && !slices.Contains(p.AllowedSubjects, id.Subject) {
		return &Error{Reason: ReasonInsufficientScope, TokenType: id.TokenType,
			Description: "the token's subject is not allowed here"}
	}
	return nil
}

// scopeError names the scopes a credential lacks (scopes are configuration,
// not secrets).
type scopeError []string

func (e scopeError) Error() string { return "missing scopes: " + strings.Join(e, " ") }
