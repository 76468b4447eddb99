package verify

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// minKeyBits is the smallest RSA modulus accepted. Clerk signs with 2048-bit
// keys; anything smaller is forgeable in practice.
const minKeyBits = 2048

// signingKey is a public key that verifies Clerk JWTs.
type signingKey struct {
	// id is the key's "kid" (for Clerk, the instance id).
	id string
	// algorithm is the only JWS algorithm the key may be used with, or ""
	// when the key does not say (then any of RS256, RS384, RS512).
	algorithm string
	public    *rsa.PublicKey
}

// keySource holds the keys that verify JWTs: a static key (pemKey), or the
// instance's key set, fetched from Clerk (remoteKeys). It never takes a key
// from a token.
type keySource interface {
	// key returns the key for a token whose header names kid. It fails with
	// an *Error: ReasonInvalid when no such key exists, ReasonUnavailable
	// when the keys cannot be had right now.
	key(ctx context.Context, kid string) (*signingKey, error)

	// current reports whether key is still one of the source's keys at
	// now, so that a JWT it verified earlier may still be trusted.
	current(key *signingKey, now time.Time) bool

	// scope names the source: two sources of one scope hold the same keys.
	scope() string
}

// staticKey is the networkless key source: one public key.
type staticKey struct {
	signingKey
}

// pemKey returns the networkless key source: one RSA public key, the "JWT
// public key" of Clerk's dashboard (CLERK_JWT_KEY), in PEM form ("-----BEGIN
// PUBLIC KEY-----") or the bare base64 body of one. Line breaks written as
// the two characters \n (as they often are in environment files) are
// understood. As in Clerk's SDKs, a token's kid is not matched against it,
// and it verifies RS256 only.
func pemKey(text string) (*staticKey, error) {
	text = strings.TrimSpace(strings.ReplaceAll(text, `\n`, "\n"))
	if !strings.HasPrefix(text, "-----BEGIN") {
		body := strings.Join(strings.Fields(text), "")
		if _, err := base64.StdEncoding.DecodeString(body); err != nil || body == "" {
			return nil, errors.New("the JWT key is neither a PEM block nor base64")
		}
		text = "-----BEGIN PUBLIC KEY-----\n" + body + "\n-----END PUBLIC KEY-----"
	}
	parsed, err := jwk.ParseKey([]byte(text), jwk.WithPEM(true))
	if err != nil {
		return nil, fmt.Errorf("the JWT key is not a valid PEM public key: %v", err)
	}
	if _, private := parsed.(jwk.RSAPrivateKey); private {
		return nil, errors.New("the JWT key is a private key: use the instance's public key (PEM), never its private key")
	}
	public, err := rsaPublicKey(parsed)
	if err != nil {
		return nil, fmt.Errorf("the JWT key: %v", err)
	}
	return &staticKey{signingKey{id: "local", algorithm: "RS256", public: public}}, nil
}

// key returns the configured key whatever the kid.
func (s *staticKey) key(context.Context, string) (*signingKey, error) { return &s.signingKey, nil }

// current is true for the configured key, also as another staticKey of the
// same key holds it (the next configuration's, say).
func (s *staticKey) current(key *signingKey, _ time.Time) bool {
	return key == &s.signingKey || key.algorithm == s.algorithm && key.public.Equal(s.public)
}

// scope names the key itself: sources of the same key verify alike.
func (s *staticKey) scope() string {
	sum := sha256.Sum256(append(s.public.N.Bytes(), byte(s.public.E>>24), byte(s.public.E>>16), byte(s.public.E>>8), byte(s.public.E)))
	return "key " + s.algorithm + " " + hex.EncodeToString(sum[:])
}

// parseJWK reads one key of a JWKS and returns it if it can verify Clerk
// JWTs: an RSA public signing key with a kid, an RS* algorithm (or none
// named), and at least 2048 bits. Anything else is an error the caller
// skips, so that one odd key does not make the whole set unusable.
func parseJWK(raw json.RawMessage) (signingKey, error) {
	parsed, err := jwk.ParseKey(raw)
	if err != nil {
		return signingKey{}, err
	}
	if _, ok := parsed.(jwk.RSAPublicKey); !ok {
		return signingKey{}, fmt.Errorf("key type %s is not an RSA public key", parsed.KeyType())
	}
	if use := parsed.KeyUsage(); use != "" && use != string(jwk.ForSignature) {
		return signingKey{}, fmt.Errorf("key use %q is not signing", use)
	}
	if ops := parsed.KeyOps(); len(ops) > 0 && !slices.Contains(ops, jwk.KeyOpVerify) {
		return signingKey{}, errors.New("key operations do not include verify")
	}
	alg := ""
	if a := parsed.Algorithm(); a != nil && a.String() != "" {
		alg = a.String()
		if _, ok := algorithms[alg]; !ok {
			return signingKey{}, fmt.Errorf("key algorithm %q is not RS256, RS384 or RS512", alg)
		}
	}
	if parsed.KeyID() == "" {
		return signingKey{}, errors.New("key has no kid")
	}
	public, err := rsaPublicKey(parsed)
	if err != nil {
		return signingKey{}, err
	}
	return signingKey{id: parsed.KeyID(), algorithm: alg, public: public}, nil
}

func rsaPublicKey(key jwk.Key) (*rsa.PublicKey, error) {
	if key.KeyType() != jwa.RSA {
		return nil, fmt.Errorf("key type %s is not RSA", key.KeyType())
	}
	var public rsa.PublicKey
	if err := key.Raw(&public); err != nil {
		return nil, err
	}
	if bits := public.N.BitLen(); bits < minKeyBits {
		return nil, fmt.Errorf("RSA key of %d bits is too small (at least %d)", bits, minKeyBits)
	}
	return &public, nil
}
