package verify

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
)

// oauthJWT are the rules of OAuth access-token JWTs (RFC 9068): "typ" is
// required and must be at+jwt or application/at+jwt; Clerk checks no
// category on them.
var oauthJWT = jwtKind{
	tokenType:  OAuthToken,
	categoryOK: func(*jwtHeader) bool { return true },
	types:      oauthJWTTypes,
	identity:   func(_ *Verifier, t *jwtToken) (*Identity, error) { return oauthIdentityFromClaims(t) },
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

// actClaim gives an opaque OAuth token the claims a JWT of it would have
// about its actor: {"act": <the chain>}, nothing when Clerk named none.
func actClaim(act json.RawMessage) json.RawMessage {
	if len(act) == 0 || string(act) == "null" {
		return nil
	}
	return append(append([]byte(`{"act":`), act...), '}')
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
	expiresAt, claims, err := v.judge(OAuthToken, verdict{answer.Revoked, answer.Expired, answer.Expiration, actClaim(answer.Actor)})
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
