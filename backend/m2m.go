package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
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

// Time converts a Backend API timestamp. Clerk documents milliseconds, but
// some of its own fixtures carry seconds; a value below 10^11 cannot be
// milliseconds of any date after 1973, so it is read as seconds.
func Time(value int64) time.Time {
	const secondsBelow = 100_000_000_000
	if value < secondsBelow {
		return time.Unix(value, 0)
	}
	return time.UnixMilli(value)
}

// VerifyM2MToken asks Clerk whether an opaque M2M token (mt_…) is valid:
// POST /m2m_tokens/verify, authenticated with the machine secret key when
// one is configured (Clerk then also checks that the token was granted
// access to that machine), else with the instance secret key.
//
// A 2xx answer is returned as is, including one that says the token is
// revoked or expired: judging it is the caller's business.
func (c *Client) VerifyM2MToken(ctx context.Context, token string) (*M2MToken, error) {
	key := c.machineSecretKey
	if key == "" {
		key = c.secretKey
	}
	var out M2MToken
	err := c.verify(ctx, "/m2m_tokens/verify", key, map[string]string{"token": token}, &out,
		func() bool { return out.Object == "machine_to_machine_token" && out.ID != "" && out.Subject != "" })
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// verify posts body to one of Clerk's verify endpoints with key, decodes
// the answer into out, and checks with wellFormed that it is the object
// expected, not something else that happens to be JSON.
func (c *Client) verify(ctx context.Context, path, key string, body, out any, wellFormed func() bool) error {
	if key == "" {
		return &Error{Method: http.MethodPost, Path: path, Err: errors.New("no secret key configured")}
	}
	if err := c.do(ctx, http.MethodPost, path, key, body, out, maxAttempts); err != nil {
		return err
	}
	if !wellFormed() {
		return &Error{Method: http.MethodPost, Path: path, Status: http.StatusOK,
			Err: fmt.Errorf("the answer is not the object %s returns", path)}
	}
	return nil
}
