package backend

import (
	"context"
	"encoding/json"
)

// APIKey is Clerk's API key object ("object": "api_key"), as the verify
// endpoint returns it. Times are Unix milliseconds.
type APIKey struct {
	Object           string          `json:"object"`
	ID               string          `json:"id"`
	Type             string          `json:"type"`
	Subject          string          `json:"subject"` // user_…, org_… or mch_…
	Name             string          `json:"name"`
	Description      *string         `json:"description"`
	Claims           json.RawMessage `json:"claims"`
	Scopes           []string        `json:"scopes"`
	Revoked          bool            `json:"revoked"`
	RevocationReason *string         `json:"revocation_reason"`
	Expired          bool            `json:"expired"`
	Expiration       *int64          `json:"expiration"`
	CreatedBy        *string         `json:"created_by"`
	LastUsedAt       *int64          `json:"last_used_at"`
	CreatedAt        int64           `json:"created_at"`
	UpdatedAt        int64           `json:"updated_at"`
}

// VerifyAPIKey asks Clerk whether an API key secret (ak_…) is valid:
// POST /api_keys/verify, always with the instance secret key (never the
// machine secret key, which is not what this endpoint takes).
//
// A 2xx answer is returned as is, including one that says the key is
// revoked or expired.
func (c *Client) VerifyAPIKey(ctx context.Context, secret string) (*APIKey, error) {
	var out APIKey
	err := c.verify(ctx, "/api_keys/verify", c.secretKey, map[string]string{"secret": secret}, &out,
		func() bool { return out.Object == "api_key" && out.ID != "" && out.Subject != "" })
	if err != nil {
		return nil, err
	}
	return &out, nil
}
