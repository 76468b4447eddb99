package verify

import (
	"slices"
	"strings"
)

// policy is what Options ask of a valid credential, beyond its validity.
type policy struct {
	requireScopes   []string // must all be among the credential's scopes
	allowedSubjects []string // when not empty, must include its subject
}

// check returns nil when id satisfies the policy, else an *Error with
// ReasonInsufficientScope.
func (p policy) check(id *Identity) error {
	var missing []string
	for _, scope := range p.requireScopes {
		if !slices.Contains(id.Scopes, scope) {
			missing = append(missing, scope)
		}
	}
	if len(missing) > 0 {
		return &Error{Reason: ReasonInsufficientScope, TokenType: id.TokenType,
			Description: "the token lacks a required scope",
			Err:         scopeError(missing)}
	}
	if len(p.allowedSubjects) > 0 && !slices.Contains(p.allowedSubjects, id.Subject) {
		return &Error{Reason: ReasonInsufficientScope, TokenType: id.TokenType,
			Description: "the token's subject is not allowed here"}
	}
	return nil
}

// scopeError names the scopes a credential lacks (scopes are configuration,
// not secrets).
type scopeError []string

func (e scopeError) Error() string { return "missing scopes: " + strings.Join(e, " ") }
