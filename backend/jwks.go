package backend

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// JWKS is the instance's JSON Web Key Set. Keys are left undecoded so that
// the caller can skip the ones it cannot use and keep the others.
type JWKS struct {
	Keys []json.RawMessage `json:"keys"`
}

// JWKS fetches the keys that sign the instance's JWTs: GET /v1/jwks,
// authenticated with the instance secret key (the only key Clerk's SDKs use
// for it).
func (c *Client) JWKS(ctx context.Context) (*JWKS, error) {
	const path = "/v1/jwks"
	if c.secretKey == "" {
		return nil, &Error{Method: http.MethodGet, Path: path, Err: errors.New("no instance secret key configured")}
	}
	var out JWKS
	if err := c.do(ctx, http.MethodGet, path, c.secretKey, nil, &out, maxAttempts); err != nil {
		return nil, err
	}
	return &out, nil
}

// FrontendJWKS fetches the instance's signing keys from its Frontend API,
// where they are public: GET /.well-known/jwks.json, with no secret at all.
// The client's URL must then be the Frontend API's (see PublishableKey.URL).
func (c *Client) FrontendJWKS(ctx context.Context) (*JWKS, error) {
	var out JWKS
	if err := c.do(ctx, http.MethodGet, "/.well-known/jwks.json", "", nil, &out, maxAttempts); err != nil {
		return nil, err
	}
	return &out, nil
}
