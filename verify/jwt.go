package verify

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	_ "crypto/sha256" // RS256
	_ "crypto/sha512" // RS384, RS512
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// JWT categories, carried in the "cat" JOSE header by Clerk (and covered by
// the signature). A token of one category must never pass as another.
const (
	CategorySession     = "cl_B7d4PD111AAA"
	CategoryJWTTemplate = "cl_B7d4PD222AAA"
	CategoryM2M         = "cl_B7d4PD333AAA"
	// CategoryIgnore is stamped on every kind of token by instances that
	// opted out of categories; it says nothing about the kind.
	CategoryIgnore = "cl_I7d4PD111III"
)

// algorithms maps the JWS algorithms Clerk signs with to their hash. Nothing
// else is ever accepted: not "none", not HMAC (which a public key could
// "sign"), not PSS or elliptic curves.
var algorithms = map[string]crypto.Hash{
	"RS256": crypto.SHA256,
	"RS384": crypto.SHA384,
	"RS512": crypto.SHA512,
}

// jwtHeader holds the JOSE header fields that matter. Pointers tell an
// absent field from an empty one, as Clerk's rules do.
type jwtHeader struct {
	Alg string  `json:"alg"`
	Typ *string `json:"typ"`
	Kid string  `json:"kid"`
	Cat *string `json:"cat"`

	// Present only to be refused: a key or key URL named by the token
	// itself must never be used, and critical extensions are not understood.
	Crit json.RawMessage `json:"crit"`
	JKU  json.RawMessage `json:"jku"`
	JWK  json.RawMessage `json:"jwk"`
	X5U  json.RawMessage `json:"x5u"`
	X5C  json.RawMessage `json:"x5c"`
}

// jwtToken is a decoded, not yet verified, compact JWS.
type jwtToken struct {
	header    jwtHeader
	claims    map[string]any
	signed    string // base64url(header) "." base64url(payload)
	signature []byte
}

var errNotJWT = errors.New("not in JWT form")

// looksLikeJWT reports whether s has the form of a compact JWS: three
// non-empty base64url segments separated by dots and nothing else (Clerk's
// JwtFormatRegExp).
func looksLikeJWT(s string) bool {
	segments := 0
	length := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if length == 0 {
				return false
			}
			segments++
			length = 0
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			length++
		default:
			return false
		}
	}
	return segments == 2 && length > 0
}

// decodeJWT decodes a string that looksLikeJWT. It checks only that the
// parts decode: header and payload must be JSON objects.
func decodeJWT(s string) (*jwtToken, error) {
	headerPart, rest, _ := strings.Cut(s, ".")
	payloadPart, signaturePart, _ := strings.Cut(rest, ".")

	tok := &jwtToken{signed: s[:len(headerPart)+1+len(payloadPart)]}
	headerJSON, err := decodeSegment(headerPart)
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if err := decodeObject(headerJSON, &tok.header); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	payloadJSON, err := decodeSegment(payloadPart)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	if err := decodeObject(payloadJSON, &tok.claims); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	if tok.signature, err = decodeSegment(signaturePart); err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	return tok, nil
}

// decodeSegment decodes unpadded base64url strictly, so that one token has
// exactly one spelling.
func decodeSegment(s string) ([]byte, error) {
	return base64.RawURLEncoding.Strict().DecodeString(s)
}

// decodeObject decodes one JSON object into v, keeping numbers exact and
// refusing anything after it.
func decodeObject(data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.InputOffset() != int64(len(data)) {
		return errors.New("data after the JSON object")
	}
	return nil
}

// stringClaim returns a claim that must be a string when present.
func (t *jwtToken) stringClaim(name string) (value string, present bool, err error) {
	raw, ok := t.claims[name]
	if !ok {
		return "", false, nil
	}
	s, ok := raw.(string)
	if !ok {
		return "", true, fmt.Errorf("claim %q is not a string", name)
	}
	return s, true, nil
}

// timeClaim returns a NumericDate claim (seconds since the epoch, possibly
// fractional) that must be a finite number when present.
func (t *jwtToken) timeClaim(name string) (seconds float64, present bool, err error) {
	raw, ok := t.claims[name]
	if !ok {
		return 0, false, nil
	}
	num, ok := raw.(json.Number)
	if !ok {
		return 0, true, fmt.Errorf("claim %q is not a number", name)
	}
	seconds, err = num.Float64()
	if err != nil || math.IsInf(seconds, 0) || math.IsNaN(seconds) {
		return 0, true, fmt.Errorf("claim %q is not a usable number", name)
	}
	return seconds, true, nil
}

// checkHeader applies the header rules that need no key: a known RSA
// algorithm, no critical extensions, no key or key URL carried by the token,
// and a type from the allowed list (absent allowed only when the list says
// so, as Clerk's assertHeaderType does).
func (t *jwtToken) checkHeader(tokenType TokenType, typeOptional bool, allowedTypes ...string) error {
	h := &t.header
	if _, ok := algorithms[h.Alg]; !ok {
		return invalid(tokenType, "the token's algorithm is not RS256, RS384 or RS512")
	}
	if h.Crit != nil {
		return invalid(tokenType, "the token has critical header extensions")
	}
	if h.JKU != nil || h.JWK != nil || h.X5U != nil || h.X5C != nil {
		return invalid(tokenType, "the token names its own key; only Clerk's keys are used")
	}
	if h.Typ == nil {
		if typeOptional {
			return nil
		}
		return invalid(tokenType, "the token has no type")
	}
	if slices.Contains(allowedTypes, *h.Typ) {
		return nil
	}
	return invalid(tokenType, "the token's type is not one Clerk uses for this kind of token")
}

// verifySignature checks the signature with key. The key's own algorithm,
// when it has one, must be the token's.
func (t *jwtToken) verifySignature(key *Key) error {
	if key.Algorithm != "" && key.Algorithm != t.header.Alg {
		return errors.New("the token's algorithm does not match its key")
	}
	hash := algorithms[t.header.Alg]
	h := hash.New()
	h.Write([]byte(t.signed))
	return rsa.VerifyPKCS1v15(key.Public, hash, h.Sum(nil), t.signature)
}

// checkTimes applies Clerk's time rules with leeway skew: exp is required and
// the token is expired when exp <= now - skew; nbf and iat, when present,
// must not be later than now + skew. It returns the expiry.
func (t *jwtToken) checkTimes(tokenType TokenType, now time.Time, skew time.Duration) (time.Time, error) {
	nowSeconds := float64(now.UnixMilli()) / 1000
	leeway := skew.Seconds()

	exp, present, err := t.timeClaim("exp")
	if err != nil {
		return time.Time{}, invalidBecause(tokenType, "the token's expiry is malformed", err)
	}
	if !present {
		return time.Time{}, invalid(tokenType, "the token has no expiry")
	}
	if exp <= nowSeconds-leeway {
		return time.Time{}, &Error{Reason: ReasonExpired, TokenType: tokenType, Description: "the token has expired"}
	}
	for _, claim := range []string{"nbf", "iat"} {
		when, present, err := t.timeClaim(claim)
		if err != nil {
			return time.Time{}, invalidBecause(tokenType, "the token's "+claim+" claim is malformed", err)
		}
		if present && when > nowSeconds+leeway {
			return time.Time{}, invalid(tokenType, "the token is not valid yet")
		}
	}
	return secondsToTime(exp), nil
}

// secondsToTime converts a NumericDate, clamping values beyond what
// time.Time can hold so that a far-future expiry stays far in the future.
func secondsToTime(seconds float64) time.Time {
	const maxSeconds = 1 << 40 // year 36812
	seconds = math.Min(seconds, maxSeconds)
	whole, frac := math.Modf(seconds)
	return time.Unix(int64(whole), int64(frac*1e9))
}
