package verify

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unsafe"
)

// JWT categories, carried in the "cat" JOSE header by Clerk (and covered by
// the signature). A token of one category must never pass as another.
const (
	categorySession     = "cl_B7d4PD111AAA"
	categoryJWTTemplate = "cl_B7d4PD222AAA"
	categoryM2M         = "cl_B7d4PD333AAA"
	// categoryIgnore is stamped on every kind of token by instances that
	// opted out of categories; it says nothing about the kind.
	categoryIgnore = "cl_I7d4PD111III"
)

// algorithms maps the JWS algorithms Clerk signs with to their hash. Nothing
// else is ever accepted: not "none", not HMAC (which a public key could
// "sign"), not PSS or elliptic curves.
var algorithms = map[string]crypto.Hash{
	"RS256": crypto.SHA256,
	"RS384": crypto.SHA384,
	"RS512": crypto.SHA512,
}

// jwtHeader holds the JOSE header fields that matter. The has* fields tell
// an absent field from an empty one, as Clerk's rules do.
type jwtHeader struct {
	alg    string
	typ    string
	hasTyp bool
	kid    string
	cat    string
	hasCat bool

	// critical: the header lists extensions that must be understood
	// ("crit"); none is. selfKeyed: the token names its own key or key URL
	// ("jku", "jwk", "x5u", "x5c"), which must never be used.
	critical  bool
	selfKeyed bool
}

// jwtToken is a decoded, not yet verified, compact JWS. The payload's
// values are decoded only when a rule or a placeholder needs them.
type jwtToken struct {
	header    jwtHeader
	payload   []byte   // the payload JSON
	claims    []member // its top-level members
	signed    string   // base64url(header) "." base64url(payload)
	signature []byte

	sub     stringClaimValue // "sub", once read (subject)
	subRead bool

	claimsBuf [16]member // room for a typical payload's members
}

// looksLikeJWT reports whether s has the form of a compact JWS: three
// non-empty base64url segments separated by dots and nothing else (Clerk's
// JwtFormatRegExp). The dots are found first (a search the CPU does many
// bytes at a time), and the characters checked eight at a time.
func looksLikeJWT(s string) bool {
	header, payload, signature, ok := jwtSegments(s)
	return ok && base64URLOnly(header) && base64URLOnly(payload) && base64URLOnly(signature)
}

// jwtShaped reports whether s has the shape of a compact JWS, its
// characters unchecked: three non-empty segments separated by dots, and no
// CR or LF (which base64 decoding would skip).
func jwtShaped(s string) bool {
	_, _, _, ok := jwtSegments(s)
	return ok && strings.IndexByte(s, '\r') < 0 && strings.IndexByte(s, '\n') < 0
}

// jwtSegments splits s at its two dots into three non-empty segments, or
// reports that it has not exactly two such dots.
func jwtSegments(s string) (header, payload, signature string, ok bool) {
	header, rest, found := strings.Cut(s, ".")
	if !found {
		return "", "", "", false
	}
	payload, signature, found = strings.Cut(rest, ".")
	ok = found && header != "" && payload != "" && signature != "" && strings.IndexByte(signature, '.') < 0
	return header, payload, signature, ok
}

// base64URLOnly reports whether s holds only unpadded base64url.
func base64URLOnly(s string) bool {
	for ; len(s) >= 8; s = s[8:] {
		if base64URLTable[s[0]]&base64URLTable[s[1]]&base64URLTable[s[2]]&base64URLTable[s[3]]&
			base64URLTable[s[4]]&base64URLTable[s[5]]&base64URLTable[s[6]]&base64URLTable[s[7]] == 0 {
			return false
		}
	}
	for i := 0; i < len(s); i++ {
		if base64URLTable[s[i]] == 0 {
			return false
		}
	}
	return true
}

// base64URLTable is base64URLBytes as numbers, 1 for a base64url byte, to
// be and-ed together.
var base64URLTable = func() (table [256]uint8) {
	for c, ok := range base64URLBytes {
		if ok {
			table[c] = 1
		}
	}
	return table
}()

// decodeJWT decodes a string that looksLikeJWT. It checks that the parts
// decode, that header and payload are JSON objects without duplicate
// members, and that the header fields it reads are strings.
func decodeJWT(s string) (*jwtToken, error) {
	headerPart, rest, _ := strings.Cut(s, ".")
	payloadPart, signaturePart, _ := strings.Cut(rest, ".")

	tok := &jwtToken{signed: s[:len(headerPart)+1+len(payloadPart)]}
	// One buffer for the three decoded parts.
	enc := base64.RawURLEncoding.Strict()
	buf := make([]byte, enc.DecodedLen(len(headerPart))+enc.DecodedLen(len(payloadPart))+enc.DecodedLen(len(signaturePart)))
	headerJSON, buf, err := decodeSegment(headerPart, buf)
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if tok.header, err = parseHeader(headerJSON); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if tok.payload, buf, err = decodeSegment(payloadPart, buf); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	if tok.claims, err = scanObject(tok.payload, tok.claimsBuf[:0]); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	if tok.signature, _, err = decodeSegment(signaturePart, buf); err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	return tok, nil
}

func parseHeader(data []byte) (jwtHeader, error) {
	var h jwtHeader
	var buf [8]member
	members, err := scanObject(data, buf[:0])
	if err != nil {
		return h, err
	}
	for _, m := range members {
		var field *string
		switch string(m.name) {
		case "alg":
			field = &h.alg
		case "typ":
			field, h.hasTyp = &h.typ, true
		case "kid":
			field = &h.kid
		case "cat":
			field, h.hasCat = &h.cat, true
		case "crit":
			h.critical = true
		case "jku", "jwk", "x5u", "x5c":
			h.selfKeyed = true
		}
		if field != nil {
			var ok bool
			if *field, ok = jsonStringOf(m.value, decodedText); !ok {
				return h, fmt.Errorf("%q is not a string", m.name)
			}
		}
	}
	return h, nil
}

// decodeSegment decodes unpadded base64url strictly (so that one token has
// exactly one spelling) into the front of buf, and returns the decoded bytes
// and the rest of buf.
func decodeSegment(s string, buf []byte) (decoded, rest []byte, err error) {
	n, err := base64.RawURLEncoding.Strict().Decode(buf, unsafe.Slice(unsafe.StringData(s), len(s))) // only read: no copy
	if err != nil {
		return nil, nil, err
	}
	return buf[:n:n], buf[n:], nil
}

// claim returns the raw JSON value of a payload member.
func (t *jwtToken) claim(name string) ([]byte, bool) {
	for _, m := range t.claims {
		if string(m.name) == name {
			return m.value, true
		}
	}
	return nil, false
}

// stringClaimValue is a string claim as read: its value, whether it is
// present, and why it is not a string.
type stringClaimValue struct {
	value   string
	present bool
	err     error
}

// subject returns "sub", read once however many rules ask for it.
func (t *jwtToken) subject() (string, bool, error) {
	if !t.subRead {
		value, present, err := t.stringClaim("sub")
		t.sub, t.subRead = stringClaimValue{value, present, err}, true
	}
	return t.sub.value, t.sub.present, t.sub.err
}

// stringClaim returns a claim that must be a string when present.
func (t *jwtToken) stringClaim(name string) (value string, present bool, err error) {
	raw, ok := t.claim(name)
	if !ok {
		return "", false, nil
	}
	s, ok := jsonStringOf(raw, decodedText)
	if !ok {
		return "", true, fmt.Errorf("claim %q is not a string", name)
	}
	return s, true, nil
}

// decodedText is part of a token's decoded header or payload as a
// string, without a copy: decodeJWT never writes them once decoded, and a
// verdict that is kept has its strings copied out of them
// (cacheEntry.compact), so that the cache keeps no token's buffer alive.
func decodedText(part []byte) string { return unsafe.String(unsafe.SliceData(part), len(part)) }

// maxNumericDate is how far from 1970, in seconds either way, a date of
// JavaScript (and so of Clerk's SDK) reaches. Beyond it the SDK's dates are
// invalid and every comparison with them false, so that such an exp never
// expires: such a claim is malformed.
const maxNumericDate = 8.64e12

// timeClaim returns a NumericDate claim in whole seconds since the epoch,
// any fraction dropped as Clerk's SDK drops it (a JavaScript date set in
// seconds truncates them); it must be a number within maxNumericDate when
// present.
func (t *jwtToken) timeClaim(name string) (seconds float64, present bool, err error) {
	raw, ok := t.claim(name)
	if !ok {
		return 0, false, nil
	}
	seconds, ok = jsonNumber(raw)
	if seconds = math.Trunc(seconds); !ok || math.Abs(seconds) > maxNumericDate {
		return 0, true, fmt.Errorf("claim %q is not a usable number of seconds", name)
	}
	return seconds, true, nil
}

// checkHeader applies the header rules that need no key: a known RSA
// algorithm, no critical extensions, no key or key URL carried by the token,
// and a type typeOK allows (nil: the kind's classification tested it).
func (t *jwtToken) checkHeader(tokenType TokenType, typeOK func(*jwtHeader) bool) error {
	h := &t.header
	if _, ok := algorithms[h.alg]; !ok {
		return invalid(tokenType, "the token's algorithm is not RS256, RS384 or RS512")
	}
	if h.critical {
		return invalid(tokenType, "the token has critical header extensions")
	}
	if h.selfKeyed {
		return invalid(tokenType, "the token names its own key; only Clerk's keys are used")
	}
	if typeOK != nil && !typeOK(h) {
		return invalid(tokenType, "the token's type is not one Clerk uses for this kind of token")
	}
	return nil
}

// plainJWTType allows "typ" JWT, or none, as Clerk's assertHeaderType does
// for M2M and session tokens.
func plainJWTType(h *jwtHeader) bool { return !h.hasTyp || h.typ == "JWT" }

// verifySignature checks the signature with key. The key's own algorithm,
// when it has one, must be the token's.
func (t *jwtToken) verifySignature(key *signingKey) error {
	if key.algorithm != "" && key.algorithm != t.header.alg {
		return errors.New("the token's algorithm does not match its key")
	}
	hash := algorithms[t.header.alg]
	var sum [sha512.Size]byte // the digest on the stack: hash.New allocates a hash for each token
	switch data := []byte(t.signed); hash {
	case crypto.SHA256:
		*(*[sha256.Size]byte)(sum[:]) = sha256.Sum256(data)
	case crypto.SHA384:
		*(*[sha512.Size384]byte)(sum[:]) = sha512.Sum384(data)
	default:
		sum = sha512.Sum512(data)
	}
	return rsa.VerifyPKCS1v15(key.public, hash, sum[:hash.Size()], t.signature)
}

// validity is when a JWT may be used, by its claims: from notBefore (the
// later of nbf and iat; zero when neither is present) until expiresAt. It
// was issued at issuedAt (zero when it has no iat).
type validity struct {
	notBefore time.Time
	expiresAt time.Time
	issuedAt  time.Time
}

// checkTimes applies Clerk's time rules with leeway skew: exp is required and
// the token is expired when exp <= now - skew; nbf and iat, when present,
// must not be later than now + skew.
func (t *jwtToken) checkTimes(tokenType TokenType, now time.Time, skew time.Duration) (validity, error) {
	nowSeconds := float64(now.UnixMilli()) / 1000
	leeway := skew.Seconds()

	exp, present, err := t.timeClaim("exp")
	if err != nil {
		return validity{}, invalidBecause(tokenType, "the token's expiry is malformed", err)
	}
	if !present {
		return validity{}, invalid(tokenType, "the token has no expiry")
	}
	if exp <= nowSeconds-leeway {
		return validity{}, &Error{Reason: ReasonExpired, TokenType: tokenType, Description: "the token has expired"}
	}
	window := validity{expiresAt: secondsToTime(exp)}
	for _, claim := range []string{"nbf", "iat"} {
		when, present, err := t.timeClaim(claim)
		if err != nil {
			return validity{}, invalidBecause(tokenType, "the token's "+claim+" claim is malformed", err)
		}
		if !present {
			continue
		}
		if when > nowSeconds+leeway {
			return validity{}, invalid(tokenType, "the token is not valid yet")
		}
		start := secondsToTime(when)
		if start.After(window.notBefore) {
			window.notBefore = start
		}
		if claim == "iat" {
			window.issuedAt = start
		}
	}
	return window, nil
}

// secondsToTime converts a NumericDate that timeClaim returned.
func secondsToTime(seconds float64) time.Time {
	return time.Unix(int64(seconds), 0)
}
