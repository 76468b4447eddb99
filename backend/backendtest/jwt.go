package backendtest

import (
	"cmp"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha256" // RS256
	_ "crypto/sha512" // RS384, RS512
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// The "cat" (category) JOSE header tells Clerk's JWT classes apart. It is
// in the protected header, so it is covered by the signature.
const (
	// SessionCategory is the "cat" of session tokens (and handshake tokens).
	SessionCategory = "cl_B7d4PD111AAA"
	// JWTTemplateCategory is the "cat" of JWT-template tokens, those that
	// getToken({template}) returns.
	JWTTemplateCategory = "cl_B7d4PD222AAA"
	// M2MCategory is the "cat" JOSE header Clerk puts on M2M JWTs.
	M2MCategory = "cl_B7d4PD333AAA"
	// IgnoreCategory is stamped on every class of JWT by instances that
	// have the "ignore" setting; it says nothing about the class.
	IgnoreCategory = "cl_I7d4PD111III"
)

const (
	// Issuer is the "iss" claim of the JWTs the fake mints.
	Issuer = "https://clerk.fake.example.test"
)

// PublishableKey is a publishable key of the fake's instance, production
// (pk_live_) or development (pk_test_): the Frontend API it names is the
// host of Issuer, so that a gateway configured with it takes the fake's
// session tokens in a browser's plain cookies for its own (no network call
// is made to that host while a secret or JWT key verifies them).
func PublishableKey(development bool) string {
	prefix := "pk_live_"
	if development {
		prefix = "pk_test_"
	}
	return prefix + base64.RawStdEncoding.EncodeToString([]byte(strings.TrimPrefix(Issuer, "https://")+"$"))
}

// rsaHashes maps the JWS algorithms Clerk signs with to their hash.
var rsaHashes = map[string]crypto.Hash{
	"RS256": crypto.SHA256,
	"RS384": crypto.SHA384,
	"RS512": crypto.SHA512,
}

type signingKey struct {
	kid  string
	priv *rsa.PrivateKey
}

func newSigningKey(kid string) signingKey {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(fmt.Sprintf("backendtest: generating an RSA key: %v", err))
	}
	return signingKey{kid: kid, priv: priv}
}

func (s *Server) currentKey() signingKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[len(s.keys)-1]
}

// KeyID returns the kid of the current signing key.
func (s *Server) KeyID() string { return s.currentKey().kid }

// PublicKeyPEM returns the current signing key as a PKIX "PUBLIC KEY" PEM
// block: what Clerk's Dashboard shows as the JWT public key, the value of
// CLERK_JWT_KEY for networkless verification.
func (s *Server) PublicKeyPEM() string {
	der, err := x509.MarshalPKIXPublicKey(&s.currentKey().priv.PublicKey)
	if err != nil {
		panic(fmt.Sprintf("backendtest: marshalling the public key: %v", err))
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// RotateKey makes a new RSA-2048 key, with a new "ins_…" kid, the current
// signing key. With keepOld the JWKS serves the previous keys as well (a
// rotation in progress); without, only the new key.
func (s *Server) RotateKey(keepOld bool) {
	key := newSigningKey("ins_" + randomString(alphanumerics, 27))
	s.mu.Lock()
	defer s.mu.Unlock()
	if !keepOld {
		s.keys = nil
	}
	s.keys = append(s.keys, key)
}

// AddJWK adds raw to the keys served by both JWKS routes, after the signing
// keys, to test that clients skip keys they cannot use (for example an
// "RSA-OAEP" encryption key or an EC key). It panics if raw is not valid
// JSON.
func (s *Server) AddJWK(raw json.RawMessage) {
	if !json.Valid(raw) {
		panic("backendtest: AddJWK: invalid JSON")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.extraJWKs = append(s.extraJWKs, append(json.RawMessage(nil), raw...))
}

// rsaJWK is a public signing key as Clerk publishes it.
type rsaJWK struct {
	Use string `json:"use"`
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// jwks returns the JSON Web Key Set: the signing keys, then the extra keys.
func (s *Server) jwks() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]any, 0, len(s.keys)+len(s.extraJWKs))
	for _, k := range s.keys {
		pub := k.priv.PublicKey
		keys = append(keys, rsaJWK{
			Use: "sig",
			Kty: "RSA",
			Kid: k.kid,
			Alg: "RS256",
			N:   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			E:   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		})
	}
	for _, raw := range s.extraJWKs {
		keys = append(keys, raw)
	}
	return mustMarshal(map[string]any{"keys": keys})
}

// JWTOptions describes an M2M JWT to mint with Server.MintM2MJWT.
type JWTOptions struct {
	TokenOptions
	// Category is the "cat" JOSE header; "" means M2MCategory.
	Category string
	// OmitCategory leaves out "cat", like M2M JWTs minted before Clerk's
	// rollout of the header.
	OmitCategory bool
	// Header adds or overrides JOSE header fields, after everything else; a
	// nil value removes the field. An "alg" of RS384 or RS512 also changes
	// the signature algorithm; any other non-RS256 "alg" is written as given
	// over an RS256 signature (see SignRaw).
	Header map[string]any
	// Payload adds or overrides claims, after everything else (including
	// the registered claims that Claims cannot override); a nil value
	// removes the claim.
	Payload map[string]any
}

// MintM2MJWT returns an M2M JWT for machine m signed with the current key,
// as Clerk mints them. The header is {"alg":"RS256","typ":"JWT","kid":
// KeyID(),"cat":M2MCategory}; the payload has the custom Claims at top level
// and "jti" ("mt_" and 32 hex digits), "sub" (m.ID), "aud" (the scopes),
// "scopes" (the scopes joined by a space), "iss" (Issuer), "iat" and "nbf"
// (now) and "exp" (unless NoExpiry). It panics if the header or payload
// cannot be marshalled to JSON.
func (s *Server) MintM2MJWT(m *Machine, opts JWTOptions) string {
	return s.mintJWT(m.ID, "mt_"+randomString(hexDigits, 32), s.now(), opts)
}

func (s *Server) mintJWT(subject, jti string, now time.Time, opts JWTOptions) string {
	scopes := append([]string{}, opts.Scopes...)
	return s.mint(jwtSpec{
		typ:      "JWT",
		category: category(opts.Category, opts.OmitCategory, M2MCategory),
		claims: withClaims(opts.Claims, map[string]any{
			"jti":    jti,
			"sub":    subject,
			"aud":    scopes,
			"scopes": strings.Join(scopes, " "),
		}),
		issued:  now,
		expires: opts.expiry(now),
	}, opts.Header, opts.Payload)
}

// jwtSpec is a JWT for mint to sign.
type jwtSpec struct {
	typ      string         // the "typ" header
	category string         // the "cat" header; "" leaves it out
	claims   map[string]any // the payload but for "iss", "iat", "nbf" and "exp"
	issued   time.Time      // "iat" and "nbf"
	expires  time.Time      // "exp"; the zero Time leaves it out
}

// mint signs a JWT with the current key. The header is "alg" RS256, "kid"
// the key's, and spec's "typ" and "cat"; the payload is spec.claims with
// "iss" (Issuer), "iat", "nbf" and "exp" set over it. Then header and
// payload override fields of each, a nil value removing one.
func (s *Server) mint(spec jwtSpec, header, payload map[string]any) string {
	key := s.currentKey()
	h := map[string]any{"alg": "RS256", "typ": spec.typ, "kid": key.kid}
	if spec.category != "" {
		h["cat"] = spec.category
	}
	override(h, header)

	p := withClaims(spec.claims, map[string]any{"iss": Issuer, "iat": spec.issued.Unix(), "nbf": spec.issued.Unix()})
	if !spec.expires.IsZero() {
		p["exp"] = spec.expires.Unix()
	}
	override(p, payload)

	return key.signJWS(h, p)
}

// category returns the "cat" header: def when cat is "", none ("") when
// omit.
func category(cat string, omit bool, def string) string {
	if omit {
		return ""
	}
	return cmp.Or(cat, def)
}

// withClaims returns the custom claims with the registered ones set over
// them, so that custom claims cannot override registered ones.
func withClaims(custom, registered map[string]any) map[string]any {
	claims := maps.Clone(custom)
	if claims == nil {
		claims = make(map[string]any)
	}
	maps.Copy(claims, registered)
	return claims
}

// override sets each field of with in m, deleting those whose value is nil.
func override(m, with map[string]any) {
	for k, v := range with {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
}

// signJWS signs with lestrrat-go/jwx, so that the tokens come from a JOSE
// implementation other than the verifier under test. jwx always writes the
// "alg" it signs with and type-checks the standard header fields, so a
// header it cannot reproduce exactly is signed verbatim by signRaw instead.
func (k signingKey) signJWS(header, payload map[string]any) string {
	alg, _ := header["alg"].(string)
	if _, ok := rsaHashes[alg]; !ok {
		return k.signRaw(header, payload)
	}
	protected := jws.NewHeaders()
	for name, v := range header {
		if err := protected.Set(name, v); err != nil {
			return k.signRaw(header, payload)
		}
	}
	token, err := jws.Sign(mustMarshal(payload), jws.WithKey(jwa.SignatureAlgorithm(alg), k.priv, jws.WithProtectedHeaders(protected)))
	if err != nil {
		panic(fmt.Sprintf("backendtest: signing a JWT: %v", err))
	}
	return string(token)
}

// SignRaw returns a compact JWS of exactly header and payload, signed with
// the current key, for adversarial tests. Each is marshalled with
// encoding/json, except a json.RawMessage or []byte, which is used verbatim
// (to produce duplicate keys, odd spacing or invalid JSON). The signature is
// RSASSA-PKCS1-v1_5 over base64url(header) "." base64url(payload), with the
// hash named by the header's "alg" when that is RS256, RS384 or RS512 and
// SHA-256 otherwise. No field is added: no "kid" unless header has one. It
// panics if header or payload cannot be marshalled.
func (s *Server) SignRaw(header, payload any) string {
	return s.currentKey().signRaw(header, payload)
}

func (k signingKey) signRaw(header, payload any) string {
	h, p := rawJSON(header), rawJSON(payload)
	var fields struct {
		Alg any `json:"alg"`
	}
	_ = json.Unmarshal(h, &fields) // a header that is not an object signs with SHA-256
	alg, _ := fields.Alg.(string)
	hash, ok := rsaHashes[alg]
	if !ok {
		hash = crypto.SHA256
	}
	return k.signInput(base64.RawURLEncoding.EncodeToString(h)+"."+base64.RawURLEncoding.EncodeToString(p), hash)
}

// SignSegments returns a compact JWS of two segments taken as they are
// given, already encoded, with an RS256 signature over them: for tests of
// encodings a JOSE library would not produce (padding, other alphabets,
// stray bits). It never fails; the segments need not decode.
func (s *Server) SignSegments(header, payload string) string {
	return s.currentKey().signInput(header+"."+payload, crypto.SHA256)
}

// signInput signs a JWS signing input and returns the whole JWS.
func (k signingKey) signInput(input string, hash crypto.Hash) string {
	digest := hash.New()
	digest.Write([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.priv, hash, digest.Sum(nil))
	if err != nil {
		panic(fmt.Sprintf("backendtest: signing: %v", err))
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func rawJSON(v any) []byte {
	switch b := v.(type) {
	case json.RawMessage:
		return b
	case []byte:
		return b
	}
	return mustMarshal(v)
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("backendtest: marshalling JSON: %v", err))
	}
	return b
}
