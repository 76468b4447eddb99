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
func (v *Verifier) verifyM2MJWT(ctx context.Context, t *jwtToken, cacheKey tokenKey) (*Identity, error) {
	if t.header.hasCat && t.header.cat != CategoryM2M {
		return nil, invalid(M2MToken, "the token's category is not that of an M2M token")
	}
	if err := t.checkHeader(M2MToken, true, "JWT"); err != nil {
		return nil, err
	}
	key, err := v.opts.Keys.Key(ctx, t.header.kid)
	if err != nil {
		return nil, withType(err, M2MToken)
	}
	if err := t.verifySignature(key); err != nil {
		return nil, invalidBecause(M2MToken, "the token's signature does not verify", err)
	}
	window, err := t.checkTimes(M2MToken, v.opts.Now(), v.opts.ClockSkew)
	if err != nil {
		return nil, err
	}
	identity, err := m2mIdentityFromClaims(t)
	if err != nil {
		return nil, invalidBecause(M2MToken, "the token's claims are malformed", err)
	}
	identity.ExpiresAt = window.expiresAt
	v.jwts.put(&cacheEntry{
		key:       cacheKey,
		identity:  identity,
		signer:    key,
		notBefore: shifted(window.notBefore, -v.opts.ClockSkew),
		until:     window.expiresAt.Add(v.opts.ClockSkew),
	})
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
	scopes, err := m2mScopes(t)
	if err != nil {
		return nil, err
	}
	return &Identity{
		Subject:    subject,
		TokenType:  M2MToken,
		Format:     JWT,
		TokenID:    tokenID,
		Scopes:     scopes,
		claimsJSON: t.payload,
		omitClaims: registeredClaims,
	}, nil
}

func m2mScopes(t *jwtToken) ([]string, error) {
	if s, present, err := t.stringClaim("scopes"); present {
		if err != nil {
			return nil, err
		}
		return strings.Split(s, " "), nil
	}
	raw, present := t.claim("aud")
	if !present {
		return []string{}, nil
	}
	if aud, ok := jsonString(raw); ok {
		return []string{aud}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil || list == nil {
		return nil, errors.New(`claim "aud" is neither a string nor a list of strings`)
	}
	return list, nil
}

// verifyOpaqueM2M asks Clerk about an opaque M2M token and judges the
// answer: a 2xx that says revoked or expired is still a refusal.
func (v *Verifier) verifyOpaqueM2M(ctx context.Context, tok *Token, cacheKey tokenKey) (*Identity, error) {
	return v.verifyWithClerk(ctx, cacheKey, func(ctx context.Context) (*Identity, error) {
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
		Subject:    answer.Subject,
		TokenType:  M2MToken,
		Format:     Opaque,
		TokenID:    answer.ID,
		Scopes:     scopes,
		ExpiresAt:  expiresAt,
		claimsJSON: claims,
	}, nil
}

// objectClaims checks the custom claims of a Backend API answer: a JSON
// object, or null/absent for none.
func objectClaims(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if _, err := scanObject(raw, nil); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	return raw, nil
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
