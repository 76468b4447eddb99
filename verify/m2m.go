package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// registeredClaims are the claims Clerk leaves out of an M2M token's custom
// claims; everything else in the payload (aud and scopes included) is kept,
// as Clerk's M2MToken.fromJwtPayload does.
var registeredClaims = []string{"iss", "sub", "exp", "nbf", "iat", "jti"}

// verifyM2MJWT verifies an M2M JWT locally: the category before anything
// else (no key lookup for a token of another category), then the header,
// the key, the signature, and only then the claims.
func (v *Verifier) verifyM2MJWT(ctx context.Context, t *jwtToken) (*Identity, error) {
	if cat := t.header.Cat; cat != nil && *cat != CategoryM2M {
		return nil, invalid(M2MToken, "the token's category is not that of an M2M token")
	}
	if err := t.checkHeader(M2MToken, true, "JWT"); err != nil {
		return nil, err
	}
	key, err := v.opts.Keys.Key(ctx, t.header.Kid)
	if err != nil {
		return nil, withType(err, M2MToken)
	}
	if err := t.verifySignature(key); err != nil {
		return nil, invalidBecause(M2MToken, "the token's signature does not verify", err)
	}
	expiresAt, err := t.checkTimes(M2MToken, v.opts.Now(), v.opts.ClockSkew)
	if err != nil {
		return nil, err
	}
	identity, err := m2mIdentityFromClaims(t)
	if err != nil {
		return nil, invalidBecause(M2MToken, "the token's claims are malformed", err)
	}
	identity.ExpiresAt = expiresAt
	return identity, nil
}

// m2mIdentityFromClaims maps a verified M2M JWT the way Clerk's M2MToken
// does: id from jti, scopes from "scopes" split on spaces or else from aud,
// claims = the payload minus the registered claims.
func m2mIdentityFromClaims(t *jwtToken) (*Identity, error) {
	subject, _, _ := t.stringClaim("sub") // a string starting mch_: that is how it was classified
	tokenID, _, err := t.stringClaim("jti")
	if err != nil {
		return nil, err
	}
	scopes, err := m2mScopes(t.claims)
	if err != nil {
		return nil, err
	}
	return &Identity{
		Subject:   subject,
		TokenType: M2MToken,
		Format:    JWT,
		TokenID:   tokenID,
		Scopes:    scopes,
		Claims:    customClaims(t.claims),
	}, nil
}

func m2mScopes(claims map[string]any) ([]string, error) {
	if raw, ok := claims["scopes"]; ok {
		s, ok := raw.(string)
		if !ok {
			return nil, errors.New(`claim "scopes" is not a string`)
		}
		return strings.Split(s, " "), nil
	}
	switch aud := claims["aud"].(type) {
	case nil:
		return []string{}, nil
	case string:
		return []string{aud}, nil
	case []any:
		scopes := make([]string, len(aud))
		for i, item := range aud {
			s, ok := item.(string)
			if !ok {
				return nil, errors.New(`claim "aud" holds a value that is not a string`)
			}
			scopes[i] = s
		}
		return scopes, nil
	default:
		return nil, errors.New(`claim "aud" is neither a string nor a list`)
	}
}

func customClaims(claims map[string]any) map[string]any {
	custom := make(map[string]any, len(claims))
	for name, value := range claims {
		custom[name] = value
	}
	for _, name := range registeredClaims {
		delete(custom, name)
	}
	if len(custom) == 0 {
		return nil
	}
	return custom
}

// verifyOpaqueM2M asks Clerk about an opaque M2M token (unless a recent
// answer is cached) and judges the answer: a 2xx that says revoked or
// expired is still a refusal.
func (v *Verifier) verifyOpaqueM2M(ctx context.Context, tok *Token) (*Identity, error) {
	return v.opaque.verify(ctx, tok.raw, v.opts.Now, v.opts.Timeout, func(ctx context.Context) (*Identity, error) {
		answer, err := v.opts.Backend.VerifyM2MToken(ctx, tok.raw)
		if err != nil {
			return nil, clerkFailure(M2MToken, err)
		}
		return m2mIdentityFromAnswer(answer, v.opts.Now(), v.opts.ClockSkew)
	})
}

func m2mIdentityFromAnswer(answer *backend.M2MToken, now time.Time, skew time.Duration) (*Identity, error) {
	var expiresAt time.Time
	if answer.Expiration != nil {
		expiresAt = clerkTime(*answer.Expiration)
	}
	switch {
	case answer.Revoked:
		return nil, invalid(M2MToken, "the token has been revoked")
	case answer.Expired, !expiresAt.IsZero() && !expiresAt.After(now.Add(-skew)):
		return nil, &Error{Reason: ReasonExpired, TokenType: M2MToken, Description: "the token has expired"}
	}
	claims, err := objectClaims(answer.Claims)
	if err != nil {
		return nil, &Error{Reason: ReasonUnavailable, TokenType: M2MToken,
			Description: "Clerk's answer could not be understood", Err: err}
	}
	scopes := answer.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return &Identity{
		Subject:   answer.Subject,
		TokenType: M2MToken,
		Format:    Opaque,
		TokenID:   answer.ID,
		Scopes:    scopes,
		Claims:    claims,
		ExpiresAt: expiresAt,
	}, nil
}

// objectClaims decodes the custom claims of a Backend API answer: a JSON
// object, or null/absent for none.
func objectClaims(raw json.RawMessage) (map[string]any, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var claims map[string]any
	if err := decodeObject(raw, &claims); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	if len(claims) == 0 {
		return nil, nil
	}
	return claims, nil
}

// clerkTime converts a Backend API timestamp. Clerk documents milliseconds,
// but some of its own fixtures carry seconds; a value below 10^11 cannot be
// milliseconds of any date after 1973, so it is read as seconds.
func clerkTime(value int64) time.Time {
	const secondsBelow = 100_000_000_000
	if value < secondsBelow {
		return time.Unix(value, 0)
	}
	return time.UnixMilli(value)
}
