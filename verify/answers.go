package verify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// verdict is what every verify answer of Clerk says of a credential's
// state, whatever its type.
type verdict struct {
	revoked, expired bool
	expiration       *int64
	claims           json.RawMessage
}

// judge refuses what a 2xx answer of Clerk says is no longer valid
// (revoked, flagged expired, or past its expiration), and returns the
// credential's expiry and custom claims.
func (v *Verifier) judge(tokenType TokenType, answer verdict) (time.Time, string, error) {
	var expiresAt time.Time
	if answer.expiration != nil {
		expiresAt = backend.Time(*answer.expiration)
	}
	switch {
	case answer.revoked:
		return time.Time{}, "", invalid(tokenType, "the token has been revoked")
	case answer.expired, !expiresAt.IsZero() && !expiresAt.After(v.now().Add(-v.clockSkew)):
		return time.Time{}, "", &Error{Reason: ReasonExpired, TokenType: tokenType, Description: "the token has expired"}
	}
	claims, err := objectClaims(tokenType, answer.claims)
	return expiresAt, claims, err
}

// objectClaims checks the custom claims of a Backend API answer: a JSON
// object, or null/absent for none (""). Anything else is an answer Clerk
// does not give, so it is not trusted.
func objectClaims(tokenType TokenType, raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	if _, err := scanObject(raw, nil); err != nil {
		return "", &Error{Reason: ReasonUnavailable, TokenType: tokenType,
			Description: "Clerk's answer could not be understood", Err: fmt.Errorf("claims: %w", err)}
	}
	return string(raw), nil
}

// nonNil keeps "no scopes" an empty list rather than a missing one.
func nonNil(list []string) []string {
	if list == nil {
		return []string{}
	}
	return list
}
