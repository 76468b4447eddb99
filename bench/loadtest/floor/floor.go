// Package floor is the load run's floor for a JWT never seen before: a
// Caddy handler that does only what no verifier of such an RS256 JWT can
// skip (read the bearer token, decode its signature, hash the signing
// input, one RSA-2048 verification with crypto/rsa) and nothing else: no
// header, claims or times read, nothing remembered. What clerk_m2m costs
// beyond it is the verifier's own.
//
// The load run builds it into its Caddy (its source is copied into the
// build), configured in JSON: {"handler": "loadtest_floor", "key": PEM}.
package floor

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler checks the signature of the request's bearer token, then calls
// the next handler; it answers 401 to a request whose token does not
// verify.
type Handler struct {
	// Key is the RSA public key that signs the tokens, in PEM.
	Key string `json:"key"`

	public *rsa.PublicKey
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.loadtest_floor",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision reads the key.
func (h *Handler) Provision(caddy.Context) error {
	var err error
	h.public, err = ParsePublicKey(h.Key)
	return err
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return caddyhttp.Error(http.StatusUnauthorized, errors.New("no bearer token"))
	}
	if err := CheckSignature(h.public, token); err != nil {
		return caddyhttp.Error(http.StatusUnauthorized, err)
	}
	return next.ServeHTTP(w, r)
}

// CheckSignature verifies an RS256 JWT's signature, and nothing else:
// SHA-256 of the signing input, then RSA PKCS #1 v1.5.
func CheckSignature(key *rsa.PublicKey, token string) error {
	dot := strings.LastIndexByte(token, '.')
	if dot < 0 {
		return errors.New("not a JWT")
	}
	signature, err := base64.RawURLEncoding.DecodeString(token[dot+1:])
	if err != nil {
		return err
	}
	digest := sha256.Sum256([]byte(token[:dot]))
	return rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], signature)
}

// ParsePublicKey reads an RSA public key in PEM ("PUBLIC KEY").
func ParsePublicKey(text string) (*rsa.PublicKey, error) {
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		return nil, errors.New("the key is not PEM")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	public, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("the key is not an RSA public key")
	}
	return public, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
