package backendtest

import (
	"fmt"
	"time"
)

const (
	// sessionTTL is the lifetime of a session token whose
	// SessionOptions.TTL is zero: Clerk's session tokens live one minute.
	sessionTTL = time.Minute
	// templateTTL is the lifetime of a JWT-template token.
	templateTTL = time.Hour
)

// SessionOptions describes a session token (the "__session" cookie of a
// browser signed in with Clerk) to mint with Server.MintSessionJWT.
type SessionOptions struct {
	// SessionID is the "sid" claim; "" means a fresh "sess_" and 27
	// alphanumerics.
	SessionID string
	// TTL is the token's lifetime: 0 means one minute, as Clerk's session
	// tokens are short-lived; a negative TTL makes a token that expired
	// that long ago.
	TTL time.Duration
	// Category is the "cat" JOSE header; "" means SessionCategory.
	Category string
	// OmitCategory leaves out "cat", like session tokens minted before
	// Clerk's rollout of the header.
	OmitCategory bool
	// Version is the session token version, which shapes the organization
	// claims: 2 (the default when 0) or 1. Other values panic.
	Version int
	// OrgID is the id of the active organization ("org_…"), in which the
	// user is an admin of slug "acme". Version 2 puts it in
	// "o": {"id": OrgID, "rol": "admin", "slg": "acme"}; version 1 in
	// "org_id": OrgID, "org_role": "org:admin", "org_slug": "acme". ""
	// means no active organization and no organization claims.
	OrgID string
	// AuthorizedParty is the "azp" claim, the origin of the app the token
	// was issued to, e.g. "https://app.example.com"; "" leaves it out.
	AuthorizedParty string
	// Status is the "sts" claim, "active" or "pending"; "" leaves it out.
	Status string
	// Header adds or overrides JOSE header fields, as JWTOptions.Header.
	Header map[string]any
	// Payload adds or overrides claims, as JWTOptions.Payload.
	Payload map[string]any
}

// MintSessionJWT returns a session token for the user with the given id
// ("user_…"), signed with the current key, as Clerk mints them. The header
// is {"alg":"RS256","typ":"JWT","kid":KeyID(),"cat":SessionCategory}; the
// payload has "sub" (userID), "sid", "iss" (Issuer), "iat" and "nbf" (now),
// "exp", "v" (2, only for version 2), "fva" ([0,-1]: minutes since the first
// and second factor, -1 for none) and, when set, the organization claims,
// "azp" and "sts". It panics if opts.Version is not 0, 1 or 2, or if the
// header or payload cannot be marshalled to JSON.
func (s *Server) MintSessionJWT(userID string, opts SessionOptions) string {
	now := s.now()
	return s.mint(jwtSpec{
		typ:      "JWT",
		category: category(opts.Category, opts.OmitCategory, SessionCategory),
		claims:   opts.claims(userID),
		issued:   now,
		expires:  expiresAfter(now, opts.TTL, sessionTTL),
	}, opts.Header, opts.Payload)
}

// claims returns the session token's claims but for those mint adds.
func (o SessionOptions) claims(userID string) map[string]any {
	claims := map[string]any{"sub": userID, "sid": o.SessionID, "fva": []int{0, -1}}
	if o.SessionID == "" {
		claims["sid"] = "sess_" + randomString(alphanumerics, 27)
	}
	switch o.Version {
	case 0, 2:
		claims["v"] = 2
		if o.OrgID != "" {
			claims["o"] = map[string]any{"id": o.OrgID, "rol": "admin", "slg": "acme"}
		}
	case 1:
		if o.OrgID != "" {
			claims["org_id"], claims["org_role"], claims["org_slug"] = o.OrgID, "org:admin", "acme"
		}
	default:
		panic(fmt.Sprintf("backendtest: MintSessionJWT: unknown session token version %d", o.Version))
	}
	if o.AuthorizedParty != "" {
		claims["azp"] = o.AuthorizedParty
	}
	if o.Status != "" {
		claims["sts"] = o.Status
	}
	return claims
}

// MintTemplateJWT returns a JWT-template token for the user with the given
// id, what Clerk's getToken({template}) returns, signed with the current
// key. The header is {"alg":"RS256","typ":"JWT","kid":KeyID(),
// "cat":JWTTemplateCategory}; the payload has the template's claims at top
// level, then "sub" (userID), "iss" (Issuer), "iat" and "nbf" (now) and
// "exp" (in one hour), which the claims cannot override. Unlike a session
// token it has no "sid". It panics if claims cannot be marshalled to JSON.
func (s *Server) MintTemplateJWT(userID string, claims map[string]any) string {
	now := s.now()
	return s.mint(jwtSpec{
		typ:      "JWT",
		category: JWTTemplateCategory,
		claims:   withClaims(claims, map[string]any{"sub": userID}),
		issued:   now,
		expires:  now.Add(templateTTL),
	}, nil, nil)
}
