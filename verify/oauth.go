package verify

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// OAuthToken is the type of OAuth access tokens, which Clerk issues as an
// OAuth provider to third-party applications acting for a user: opaque
// (oat_…) or JWTs.
const OAuthToken TokenType = "oauth_token"

// oauthJWTTypes are the "typ" values of OAuth access-token JWTs (RFC 9068).
var oauthJWTTypes = []string{"at+jwt", "application/at+jwt"}

// oauthJWT are the rules of OAuth access-token JWTs (RFC 9068): a JWT that
// is not a machine's is one when its "typ" is at+jwt or application/at+jwt
// (required, and so tested once, here); Clerk checks no category on them.
var oauthJWT = jwtKind{
	claims:     func(t *jwtToken) bool { return t.header.hasTyp && slices.Contains(oauthJWTTypes, t.header.typ) },
	categoryOK: func(*jwtHeader) bool { return true },
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
		Subject:  subject,
		TokenID:  tokenID,
		Scopes:   scopes,
		ClientID: clientID,
		Actor:    actorOf(act),
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

// checkOAuthAudience applies Clerk's strict rule for OAuth tokens: with an
// audience configured, the token must name an audience, a non-empty string
// or a non-empty list of non-empty strings, and one of them must be
// configured.
func (v *Verifier) checkOAuthAudience(raw json.RawMessage) error {
	if len(v.audience) == 0 {
		return nil
	}
	list, _, ok := audiences(raw)
	if !ok || len(list) == 0 || slices.Contains(list, "") {
		return invalid(OAuthToken, "the token names no audience (a string, or a list of strings, none empty), and this route requires one")
	}
	if !v.configuredAudience(list) {
		return invalid(OAuthToken, "the token was not issued for this audience")
	}
	return nil
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
	answer, err := v.clerk.VerifyOAuthToken(ctx, token)
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
		TokenID:    answer.ID,
		Scopes:     nonNil(answer.Scopes),
		ExpiresAt:  expiresAt,
		ClientID:   answer.ClientID,
		Actor:      actorOf(answer.Actor),
		claimsJSON: claims,
	}, nil
}
