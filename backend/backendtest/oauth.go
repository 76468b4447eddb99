package backendtest

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// OAuthOptions describes an OAuth access token that Clerk, as an OAuth
// identity provider, issued to an OAuth application on behalf of a user.
type OAuthOptions struct {
	// ClientID is the OAuth application's client id; "" means the fake's
	// one application, Server.OAuthClientID.
	ClientID string
	// Scopes are the scopes the user granted, e.g. "profile" or "email".
	Scopes []string
	// TTL is the token's lifetime: 0 means one hour, a negative TTL makes a
	// token that expired that long ago.
	TTL time.Duration
	// Audience is the token's "aud": the resources it was issued for.
	// Empty leaves "aud" out.
	Audience []string
	// Actor is the token's "act" (RFC 8693 token exchange): who acts for
	// the subject. nil leaves "act" out.
	Actor *Actor
}

// Actor is a party acting for a token's subject, and, in Actor, who acts
// for that party in turn (RFC 8693 "act" claim).
type Actor struct {
	Issuer  string `json:"iss,omitempty"`
	Subject string `json:"sub"`
	Actor   *Actor `json:"act,omitempty"`
}

func (o OAuthOptions) clientID(s *Server) string { return cmp.Or(o.ClientID, s.clientID) }

// OAuthClientID returns the client id of the fake's OAuth application
// ("client_" and 27 alphanumerics), the default of OAuthOptions.ClientID.
func (s *Server) OAuthClientID() string { return s.clientID }

// CreateOAuthToken creates an opaque OAuth access token for the user with
// the given id ("user_…") and returns the token ("oat_" and 32 hex digits),
// the form a gateway sends to POST /oauth_applications/access_tokens/verify,
// and its id (a different "oat_" string, used by RevokeOAuthToken).
func (s *Server) CreateOAuthToken(userID string, opts OAuthOptions) (token, id string) {
	now := s.now()
	rec := newRecord(oauthKind, userID, opts.Scopes, expiresAfter(now, opts.TTL, defaultTTL), now)
	rec.clientID = opts.clientID(s)
	rec.audience, rec.actor = opts.Audience, opts.Actor
	return s.store(rec, string(oauthKind)+randomString(hexDigits, 32))
}

// RevokeOAuthToken revokes the opaque OAuth access token with the given id:
// verification still answers 200, with "revoked": true and
// "revocation_reason": RevocationReason, until the token expires and
// answers {"active":false} like any expired one. It panics if no OAuth
// access token has that id.
func (s *Server) RevokeOAuthToken(id string) { s.revoke(oauthKind, id, "RevokeOAuthToken") }

// OAuthJWTOptions describes an OAuth access token in JWT form (RFC 9068) to
// mint with Server.MintOAuthJWT.
type OAuthJWTOptions struct {
	OAuthOptions
	// UseScp puts the scopes in an "scp" array instead of a space-separated
	// "scope" string.
	UseScp bool
	// Header adds or overrides JOSE header fields, as JWTOptions.Header.
	Header map[string]any
	// Payload adds or overrides claims, as JWTOptions.Payload.
	Payload map[string]any
}

// MintOAuthJWT returns an OAuth access token in JWT form for the user with
// the given id, signed with the current key, which gateways verify locally.
// The header is {"alg":"RS256","kid":KeyID(),"typ":"at+jwt"}, with no "cat";
// the payload has "client_id", "sub" (userID), "jti" ("oat_" and 32 hex
// digits), "iat" and "nbf" (now), "exp", "iss" (Issuer), "scope" (the
// scopes joined by a space) or, with UseScp, "scp" (the scopes), and "aud"
// and "act" when the options give them. It panics if the header or payload
// cannot be marshalled to JSON.
func (s *Server) MintOAuthJWT(userID string, opts OAuthJWTOptions) string {
	claims := map[string]any{
		"client_id": opts.clientID(s),
		"sub":       userID,
		"jti":       string(oauthKind) + randomString(hexDigits, 32),
	}
	scopes := append([]string{}, opts.Scopes...)
	if opts.UseScp {
		claims["scp"] = scopes
	} else {
		claims["scope"] = strings.Join(scopes, " ")
	}
	if len(opts.Audience) > 0 {
		claims["aud"] = opts.Audience
	}
	if opts.Actor != nil {
		claims["act"] = opts.Actor
	}
	now := s.now()
	return s.mint(jwtSpec{typ: "at+jwt", claims: claims, issued: now, expires: expiresAfter(now, opts.TTL, defaultTTL)}, opts.Header, opts.Payload)
}

// oauthToken is Clerk's OAuth access token object (object
// "clerk_idp_oauth_access_token").
type oauthToken struct {
	Object   string   `json:"object"`
	ID       string   `json:"id"`
	Type     string   `json:"type"`
	ClientID string   `json:"client_id"`
	Subject  string   `json:"subject"`
	Scopes   []string `json:"scopes"`
	Audience []string `json:"aud,omitempty"`
	Actor    *Actor   `json:"act,omitempty"`
	validity
	stamps
}

// inactive is Clerk's answer for an OAuth access token that is no longer
// active: exactly {"active":false}.
type inactive struct {
	Active bool `json:"active"`
}

// oauthAnswer is the OAuth verify route's answer at time now: the token
// object, or {"active":false} once the token has expired.
func (t *tokenRecord) oauthAnswer(now time.Time) any {
	if t.expired(now) {
		return inactive{}
	}
	return oauthToken{
		Object:   "clerk_idp_oauth_access_token",
		ID:       t.id,
		Type:     "oauth:access_token",
		ClientID: t.clientID,
		Subject:  t.subject,
		Scopes:   slices.Clone(t.scopes),
		Audience: slices.Clone(t.audience),
		Actor:    t.actor,
		validity: t.validity(now),
		stamps:   t.stamps(),
	}
}
