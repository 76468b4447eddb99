package verify

import (
	"encoding/json"
	"slices"
)

// SessionToken is the type of the short-lived JWTs of Clerk's browser
// sessions, which may also come from the __session cookie.
const SessionToken TokenType = "session_token"

// sessionJWT are the rules of browser session tokens: any JWT that is no
// other kind's is one (Clerk's SDKs take it as a session's); "typ" JWT or
// absent, and no category but the session's (or the one that carries no
// class): a JWT-template, M2M or unknown category is another kind of token
// that must never pass as a session, in any mode (stricter than Clerk's
// "any" mode, which lets template tokens through).
var sessionJWT = jwtKind{
	claims: func(*jwtToken) bool { return true },
	categoryOK: func(h *jwtHeader) bool {
		return !h.hasCat || h.cat == categorySession || h.cat == categoryIgnore
	},
	typeOK:   plainJWTType,
	identity: (*Verifier).sessionIdentityFromClaims,
}

// sessionIdentityFromClaims applies the claim rules of sessions and maps
// the token. A session must name itself ("sid": JWT-template tokens, which
// outlive the session they came from, carry none), must not be pending
// (Clerk's SDKs treat pending sessions as signed out), and, when authorized
// parties, issuers or audiences are configured, must carry an "azp" and an
// "iss" among them, and an "aud" among them if it names one.
func (v *Verifier) sessionIdentityFromClaims(t *jwtToken) (*Identity, error) {
	subject, err := subjectClaim(t)
	if err != nil {
		return nil, err
	}
	sessionID, _, err := t.stringClaim("sid")
	if err != nil {
		return nil, err
	}
	if sessionID == "" {
		return nil, invalid(SessionToken, "the token names no session: it is not a session token")
	}
	if status, _, _ := t.stringClaim("sts"); status == "pending" {
		return nil, invalid(SessionToken, "the session is pending")
	}
	if err := v.checkAuthorizedParty(t); err != nil {
		return nil, err
	}
	if err := v.checkIssuer(t); err != nil {
		return nil, err
	}
	aud, _ := t.claim("aud")
	if err := v.checkAudience(aud, SessionToken); err != nil {
		return nil, err
	}
	tokenID, _, err := t.stringClaim("jti")
	if err != nil {
		return nil, err
	}
	orgID, err := sessionOrganization(t)
	if err != nil {
		return nil, err
	}
	act, _ := t.claim("act")
	return &Identity{
		Subject:   subject,
		TokenID:   tokenID,
		Scopes:    []string{},
		SessionID: sessionID,
		OrgID:     orgID,
		Actor:     actorOf(act),
	}, nil
}

// checkAuthorizedParty applies Clerk's azp rule: with authorized parties
// configured, "azp" must be present, non-empty and one of them (a missing
// azp passing was a bypass Clerk fixed).
func (v *Verifier) checkAuthorizedParty(t *jwtToken) error {
	if len(v.authorizedParties) == 0 {
		return nil
	}
	azp, _, err := t.stringClaim("azp")
	if err != nil || azp == "" || !slices.Contains(v.authorizedParties, azp) {
		return &Error{Reason: ReasonInvalid, TokenType: SessionToken, Description: "the session was not issued to an authorized party"}
	}
	return nil
}

// checkIssuer applies Clerk's issuer rule: with issuers configured, "iss"
// must be a string among them.
func (v *Verifier) checkIssuer(t *jwtToken) error {
	if len(v.issuer) == 0 {
		return nil
	}
	iss, _, err := t.stringClaim("iss")
	if err != nil || !slices.Contains(v.issuer, iss) {
		return invalid(SessionToken, "the session was not issued by an allowed issuer")
	}
	return nil
}

// sessionOrganization returns the active organization of a session, read
// by the token's version as Clerk's SDK reads it: "o.id" when "v" is 2,
// "org_id" otherwise (a version 1 token may carry an "o" too).
func sessionOrganization(t *jwtToken) (string, error) {
	if !isVersion2(t) {
		orgID, _, err := t.stringClaim("org_id")
		return orgID, err
	}
	raw, present := t.claim("o")
	if !present {
		return "", nil
	}
	var org struct {
		ID string `json:"id"`
	}
	err := json.Unmarshal(raw, &org)
	return org.ID, err
}

// isVersion2 reports whether a session token's "v" is the number 2.
func isVersion2(t *jwtToken) bool {
	raw, _ := t.claim("v")
	version, ok := jsonNumber(raw)
	return ok && version == 2
}
