package backend

import (
	"context"
	"encoding/json"
)

// OAuthAccessToken is Clerk's answer about an OAuth access token issued by
// one of its OAuth applications: the token object
// ("object": "clerk_idp_oauth_access_token"), or just {"active": false} for
// a token that is no longer active. Times are Unix milliseconds.
type OAuthAccessToken struct {
	// Active is set only when Clerk answered {"active": ...}; false means
	// the token is not active and nothing else is said about it.
	Active *bool `json:"active"`

	Object           string   `json:"object"`
	ID               string   `json:"id"`
	Type             string   `json:"type"`
	ClientID         string   `json:"client_id"`
	Subject          string   `json:"subject"` // user_…
	Scopes           []string `json:"scopes"`
	Revoked          bool     `json:"revoked"`
	RevocationReason *string  `json:"revocation_reason"`
	Expired          bool     `json:"expired"`
	Expiration       *int64   `json:"expiration"`
	CreatedAt        int64    `json:"created_at"`
	UpdatedAt        int64    `json:"updated_at"`
	// Audience is what the token was issued for ("aud"), a string or a
	// list of strings, as Clerk sends it.
	Audience json.RawMessage `json:"aud"`
	// Actor is who acts for the subject (RFC 8693 "act"), as Clerk sends
	// it: an object with "sub", and maybe "iss" and an "act" of its own.
	Actor json.RawMessage `json:"act"`
}

// Inactive reports whether Clerk said the token is not active.
func (t *OAuthAccessToken) Inactive() bool { return t.Active != nil && !*t.Active }

// VerifyOAuthToken asks Clerk whether an opaque OAuth access token (oat_…)
// is valid: POST /oauth_applications/access_tokens/verify, with the
// instance secret key.
//
// A 2xx answer is returned as is, including {"active": false} and one that
// says the token is revoked or expired.
func (c *Client) VerifyOAuthToken(ctx context.Context, token string) (*OAuthAccessToken, error) {
	var out OAuthAccessToken
	err := c.verify(ctx, "/oauth_applications/access_tokens/verify", c.secretKey, map[string]string{"access_token": token}, &out,
		func() bool {
			return out.Inactive() || (out.Object == "clerk_idp_oauth_access_token" && out.ID != "" && out.Subject != "")
		})
	if err != nil {
		return nil, err
	}
	return &out, nil
}
