package backend

import (
	"context"
	"errors"
	"net/http"
)

// CreateM2MTokenOptions describe a token to mint.
type CreateM2MTokenOptions struct {
	// Format is "opaque" (an mt_… token verified by Clerk) or "jwt" (a
	// JWT verified locally); "" lets Clerk choose (opaque).
	Format string `json:"token_format,omitempty"`
	// SecondsUntilExpiration is the token's lifetime; 0 asks for a token
	// that never expires.
	SecondsUntilExpiration int64 `json:"seconds_until_expiration,omitempty"`
	// Claims are custom claims carried by the token.
	Claims map[string]any `json:"claims,omitempty"`
	// MinRemainingTTLSeconds, when above 0, lets Clerk hand back a live
	// opaque token of the machine with at least that many seconds left,
	// instead of minting a new one.
	MinRemainingTTLSeconds int64 `json:"min_remaining_ttl_seconds,omitempty"`
}

// CreatedM2MToken is a freshly minted token: the token object and, only in
// this answer, the token itself.
type CreatedM2MToken struct {
	M2MToken
	Token string `json:"token"`
}

// CreateM2MToken mints an M2M token for the machine whose secret key the
// client holds: POST /m2m_tokens. Only a machine secret key may do this;
// Clerk refuses the instance secret key. The call is never retried: a
// second attempt could mint a second token.
func (c *Client) CreateM2MToken(ctx context.Context, opts CreateM2MTokenOptions) (*CreatedM2MToken, error) {
	const path = "/m2m_tokens"
	if c.machineSecretKey == "" {
		return nil, &Error{Method: http.MethodPost, Path: path, Err: errors.New("no machine secret key configured")}
	}
	var out CreatedM2MToken
	if err := c.do(ctx, http.MethodPost, path, c.machineSecretKey, opts, &out, 1); err != nil {
		return nil, err
	}
	if out.Token == "" || out.Subject == "" {
		return nil, &Error{Method: http.MethodPost, Path: path, Status: http.StatusCreated,
			Err: errors.New("the answer holds no token")}
	}
	return &out, nil
}
