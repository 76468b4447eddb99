package verify

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
)

// M2MToken is the type of machine-to-machine tokens: what Clerk machines
// (mch_…) use to call each other, opaque (mt_…) or JWTs.
const M2MToken TokenType = "m2m_token"

// machineIDPrefix starts the ids of machines, the subjects of M2M tokens.
const machineIDPrefix = "mch_"

// m2mJWT are the rules of M2M JWTs: a JWT is one when its "sub" names a
// machine; it carries the M2M category or none (tokens minted before
// Clerk's rollout of categories carry none), and "typ" JWT or none.
var m2mJWT = jwtKind{
	claims:     isMachineSubject,
	categoryOK: func(h *jwtHeader) bool { return !h.hasCat || h.cat == categoryM2M },
	typeOK:     plainJWTType,
	identity: func(v *Verifier, t *jwtToken) (*Identity, error) {
		aud, _ := t.claim("aud")
		if err := v.checkAudience(aud, M2MToken); err != nil {
			return nil, err
		}
		return m2mIdentityFromClaims(t)
	},
}

// isMachineSubject reports whether the payload's "sub" is a string naming a
// machine; a "sub" of another type is simply not a machine's.
func isMachineSubject(t *jwtToken) bool {
	sub, _, err := t.subject()
	return err == nil && strings.HasPrefix(sub, machineIDPrefix)
}

// m2mIdentityFromClaims maps a verified M2M JWT the way Clerk's M2MToken
// does: id from jti, scopes from "scopes" split on spaces or else from aud,
// claims = the payload minus the registered claims.
func m2mIdentityFromClaims(t *jwtToken) (*Identity, error) {
	subject, _, _ := t.subject() // a string starting mch_: that is how it was classified
	tokenID, _, err := t.stringClaim("jti")
	if err != nil {
		return nil, err
	}
	scopes, err := m2mScopes(t)
	if err != nil {
		return nil, err
	}
	return &Identity{
		Subject: subject,
		TokenID: tokenID,
		Scopes:  scopes,
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

// verifyOpaqueM2M asks Clerk about an opaque M2M token (mt_…).
func (v *Verifier) verifyOpaqueM2M(ctx context.Context, token string) (*Identity, error) {
	answer, err := v.clerk.VerifyM2MToken(ctx, token)
	if err != nil {
		return nil, clerkFailure(M2MToken, err)
	}
	expiresAt, claims, err := v.judge(M2MToken, verdict{answer.Revoked, answer.Expired, answer.Expiration, answer.Claims})
	if err != nil {
		return nil, err
	}
	return &Identity{
		Subject:    answer.Subject,
		TokenID:    answer.ID,
		Scopes:     nonNil(answer.Scopes),
		ExpiresAt:  expiresAt,
		claimsJSON: claims,
	}, nil
}
