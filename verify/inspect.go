package verify

import "encoding/json"

// Inspection is what a credential's shape alone says about it: its type
// and format, as a Verifier classifies it before anything else, and for a
// JWT its header and claims. Nothing in it is verified: it is for tools
// that explain a verdict, such as `caddy clerk-m2m inspect`.
type Inspection struct {
	TokenType TokenType
	Format    Format
	// Header and Claims are a JWT's, decoded but not verified (Claims is
	// its payload, a JSON object); nil for an opaque credential.
	Header *Header
	Claims json.RawMessage
}

// Header is the part of a JWT's JOSE header that Clerk's rules read. The
// Has fields tell an absent member from an empty one.
type Header struct {
	Alg, Kid, Typ, Cat string
	HasTyp, HasCat     bool
}

// Inspect classifies a credential as Verify does before it checks
// anything: from its shape alone, with no key and no call to Clerk. What
// Verify refuses at that stage (not a Clerk credential, a JWT whose parts
// do not decode) Inspect refuses too, with the same *Error.
func Inspect(token string) (*Inspection, error) {
	err := checkTokenLength(token)
	var cred *credential
	if err == nil {
		cred, err = classify(token)
	}
	if err != nil {
		return nil, refusal(err)
	}
	inspection := &Inspection{TokenType: cred.kind.tokenType, Format: cred.format}
	if t := cred.jwt; t != nil {
		h := t.header
		inspection.Header = &Header{Alg: h.alg, Kid: h.kid, Typ: h.typ, Cat: h.cat, HasTyp: h.hasTyp, HasCat: h.hasCat}
		inspection.Claims = json.RawMessage(t.payload)
	}
	return inspection, nil
}

// Category names the header's Clerk category ("cat") in words: "session",
// "M2M", "JWT template", "ignore" (stamped on every kind of token by
// instances that opted out of categories), "unknown" for any other value,
// and "absent" when the header has none.
func (h *Header) Category() string {
	if !h.HasCat {
		return "absent"
	}
	switch h.Cat {
	case categorySession:
		return "session"
	case categoryM2M:
		return "M2M"
	case categoryJWTTemplate:
		return "JWT template"
	case categoryIgnore:
		return "ignore"
	default:
		return "unknown"
	}
}
