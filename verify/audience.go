package verify

import (
	"encoding/json"
	"slices"
)

// Options.Audience, read alike by every kind of credential that carries an
// "aud": M2M JWTs and session tokens apply checkAudience, OAuth tokens
// their stricter rule (checkOAuthAudience, in oauth.go).

// audiences reads an "aud" claim (or the "aud" of Clerk's answer about an
// opaque token): a string or a list of strings. named is false when it
// names none: absent, null, "", or a list of empty strings only; ok is
// false when it is of another shape.
func audiences(raw json.RawMessage) (list []string, named, ok bool) {
	var aud any
	if len(raw) == 0 || json.Unmarshal(raw, &aud) != nil || aud == nil {
		return nil, false, true
	}
	switch aud := aud.(type) {
	case string:
		list = []string{aud}
	case []any:
		for _, a := range aud {
			s, isString := a.(string)
			if !isString {
				return nil, false, false
			}
			list = append(list, s)
		}
	default:
		return nil, false, false
	}
	return list, slices.ContainsFunc(list, func(a string) bool { return a != "" }), true
}

// checkAudience applies Clerk's rule for session tokens and M2M JWTs: with
// an audience configured, a token that names an audience must name one of
// those configured; one that names none passes. An "aud" of another shape
// than a string or a list of strings is refused (Clerk's SDK lets it pass
// unchecked).
func (v *Verifier) checkAudience(raw json.RawMessage, tokenType TokenType) error {
	if len(v.audience) == 0 {
		return nil
	}
	list, named, ok := audiences(raw)
	switch {
	case !ok:
		return invalid(tokenType, `the token's "aud" is neither a string nor a list of strings`)
	case named && !v.configuredAudience(list):
		return invalid(tokenType, "the token was not issued for this audience")
	}
	return nil
}

// configuredAudience reports whether list names an audience of Options.
func (v *Verifier) configuredAudience(list []string) bool {
	return slices.ContainsFunc(list, func(a string) bool { return a != "" && slices.Contains(v.audience, a) })
}
