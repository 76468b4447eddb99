package backend

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// M2MToken is Clerk's machine-to-machine token object
// ("object": "machine_to_machine_token"), as the verify endpoint returns it.
// Times are Unix milliseconds as Clerk sends them.
type M2MToken struct {
	Object           string          `json:"object"`
	ID               string          `json:"id"`
	Subject          string          `json:"subject"`
	Scopes           []string        `json:"scopes"`
	Claims           json.RawMessage `json:"claims"`
	Revoked          bool            `json:"revoked"`
	RevocationReason *string         `json:"revocation_reason"`
	Expired          bool            `json:"expired"`
	Expiration       *int64          `json:"expiration"`
	LastUsedAt       *int64          `json:"last_used_at"`
	CreatedAt        int64           `json:"created_at"`
	UpdatedAt        int64           `json:"updated_at"`
}

// m2mTokenObject is the "object" value of an M2M token answer.
const m2mTokenObject = "machine_to_machine_token"

// VerifyM2MToken asks Clerk whether an opaque M2M token (mt_…) is valid:
// POST /m2m_tokens/verify, authenticated with the machine secret key when
// one is configured (Clerk then also checks that the token was granted
// access to that machine), else with the instance secret key.
//
// A 2xx answer is returned as is, including one that says the token is
// revoked or expired: judging it is the caller's business.
func (c *Client) VerifyM2MToken(ctx context.Context, token string) (*M2MToken, error) {
	const path = "/m2m_tokens/verify"
	key := c.machineSecretKey
	if key == "" {
		key = c.secretKey
	}
	if key == "" {
		return nil, &Error{Method: http.MethodPost, Path: path, Err: errors.New("no secret key configured")}
	}
	var out M2MToken
	if err := c.do(ctx, http.MethodPost, path, key, map[string]string{"token": token}, &out); err != nil {
		return nil, err
	}
	if out.Object != m2mTokenObject || out.ID == "" || out.Subject == "" {
		return nil, &Error{Method: http.MethodPost, Path: path, Status: http.StatusOK,
			Err: errors.New("answer is not a machine_to_machine_token object with an id and a subject")}
	}
	return &out, nil
}
