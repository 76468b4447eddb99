package verify

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// oauthJWT are the rules of OAuth access-token JWTs (RFC 9068): "typ" is
// required and must be at+jwt or application/at+jwt; Clerk checks no
// category on them.
var oauthJWT = jwtKind{
	tokenType:  OAuthToken,
	categoryOK: func(*jwtHeader) bool { return true },
	types:      oauthJWTTypes,
	identity: func(v *Verifier, t *jwtToken) (*Identity, error) {
		aud, _ := t.claim("aud")
		if err := v.checkOAuthAudience(aud); err != nil {
			return nil, err
		}
		return oauthIdentityFromClaims(t)
	},
}

// oauthIdentityFromClaims maps a verified OAuth JWT as Clerk's
// IdPOAuthAccessToken does: id from jti, client_id, scopes from "scp" (a
// list) or else "scope" split on spaces.
func oauthIdentityFromClaims(t *jwtToken) (*Identity, error) {
	subject, err := subjectClaim(t)
	if err != nil {
		return nil, err
	}
	tokenID, _, err := t.stringClaim("jti")
	if err != nil {
		return nil, err
	}
	clientID, _, err := t.stringClaim("client_id")
	if err != nil {
		return nil, err
	}
	scopes, err := oauthScopes(t)
	if err != nil {
		return nil, err
	}
	act, _ := t.claim("act")
	return &Identity{
		Subject:    subject,
		TokenType:  OAuthToken,
		Format:     JWT,
		TokenID:    tokenID,
		Scopes:     scopes,
		ClientID:   clientID,
		Actor:      actorOf(act),
		claimsJSON: t.payload,
		omitClaims: registeredClaims,
	}, nil
}

func oauthScopes(t *jwtToken) ([]string, error) {
	if raw, present := t.claim("scp"); present {
		var scopes []string
		if err := json.Unmarshal(raw, &scopes); err != nil || scopes == nil {
			return nil, errors.New(`claim "scp" is not a list of strings`)
		}
		return scopes, nil
	}
	scope, present, err := t.stringClaim("scope")
	switch {
	case err != nil:
		return nil, err
	case !present:
		return []string{}, nil
	}
	return strings.Split(scope, " "), nil
}

// answerClaims gives an opaque OAuth token the claims a JWT of it would
// carry beyond those mapped to the identity: its "aud" and "act" (the whole
// actor chain), as Clerk's answer gives them; nil when it gives neither.
func answerClaims(answer *backend.OAuthAccessToken) json.RawMessage {
	claims := make(map[string]json.RawMessage)
	for name, raw := range map[string]json.RawMessage{"aud": answer.Audience, "act": answer.Actor} {
		if len(raw) > 0 && string(raw) != "null" {
			claims[name] = raw
		}
	}
	if len(claims) == 0 {
		return nil
	}
	data, _ := json.Marshal(claims) // the answer's values, decoded from JSON, are JSON
	return data
}

// verifyOpaqueOAuth asks Clerk about an opaque OAuth access token (oat_…).
// {"active": false} is a refusal.
func (v *Verifier) verifyOpaqueOAuth(ctx context.Context, token string) (*Identity, error) {
	answer, err := v.opts.Backend.VerifyOAuthToken(ctx, token)
	if err != nil {
		return nil, clerkFailure(OAuthToken, err)
	}
	if answer.Inactive() {
		return nil, invalid(OAuthToken, "the token is not active")
	}
	if err := v.checkOAuthAudience(answer.Audience); err != nil {
		return nil, err
	}
	expiresAt, claims, err := v.judge(OAuthToken, verdict{answer.Revoked, answer.Expired, answer.Expiration, answerClaims(answer)})
	if err != nil {
		return nil, err
	}
	return &Identity{
		Subject:    answer.Subject,
		TokenType:  OAuthToken,
		Format:     Opaque,
		TokenID:    answer.ID,
		Scopes:     nonNil(answer.Scopes),
		ExpiresAt:  expiresAt,
		ClientID:   answer.ClientID,
		Actor:      actorOf(answer.Actor),
		claimsJSON: claims,
	}, nil
}
