package verify

import (
	"bytes"
	"encoding/json"
	"sync"
	"time"
)

// Identity is a verified credential: who presented it and what it carries.
// It is shared by every request that presents the same credential while it
// is cached, so it must not be modified.
type Identity struct {
	// Subject is who the credential stands for: a machine (mch_…), a user
	// (user_…) or an organization (org_…).
	Subject   string
	TokenType TokenType
	Format    Format
	// TokenID is the credential's id (mt_…, ak_…, oat_…) or a JWT's jti;
	// empty when it has none.
	TokenID string
	// Scopes are the scopes the credential grants; for M2M tokens, the
	// machines it may call.
	Scopes []string
	// ExpiresAt is when the credential expires; zero when it never does.
	ExpiresAt time.Time
	// IssuedAt is when a JWT was issued (its iat); zero when it does not
	// say, and for opaque credentials.
	IssuedAt time.Time

	// Set where the credential type has them: the OAuth application's
	// client id, the session id, the organization (of an API key owned by
	// one, or the active organization of a session), the API key's name.
	ClientID  string
	SessionID string
	OrgID     string
	Name      string
	// Actor is who acts for the subject, the "sub" of the token's "act"
	// claim (RFC 8693): the client an OAuth token was exchanged for, or
	// the user impersonating a session's. Its whole chain stays in the
	// claims, under "act". Empty when the token names none.
	Actor string

	// The custom claims, kept as the JSON object they came in and decoded
	// only if someone asks: most requests never look at them.
	claimsJSON []byte
	omitClaims []string // members of claimsJSON that are not custom claims
	claimsOnce sync.Once
	claims     map[string]any
	renderOnce sync.Once
	claimsText string
}

// Claims returns the credential's custom claims (numbers as json.Number),
// or nil when it has none. Do not modify the map.
func (id *Identity) Claims() map[string]any {
	id.claimsOnce.Do(func() {
		if len(id.claimsJSON) == 0 {
			return
		}
		var claims map[string]any
		if err := decodeJSON(id.claimsJSON, &claims); err != nil {
			return // validated when the credential was verified
		}
		for _, name := range id.omitClaims {
			delete(claims, name)
		}
		if len(claims) > 0 {
			id.claims = claims
		}
	})
	return id.claims
}

// ClaimsJSON returns the custom claims as a compact JSON object with sorted
// keys; "{}" when there are none.
func (id *Identity) ClaimsJSON() string {
	id.renderOnce.Do(func() {
		id.claimsText = "{}"
		if claims := id.Claims(); claims != nil {
			if data, err := json.Marshal(claims); err == nil {
				id.claimsText = string(data)
			}
		}
	})
	return id.claimsText
}

// actorOf returns the acting subject an "act" claim names: its "sub", when
// the claim is an object and "sub" a string, as Clerk's SDK reads it.
func actorOf(act []byte) string {
	var named struct {
		Sub any `json:"sub"`
	}
	if json.Unmarshal(act, &named) != nil {
		return ""
	}
	sub, _ := named.Sub.(string)
	return sub
}

// decodeJSON decodes data keeping numbers exact (json.Number), so that a
// large integer claim is passed on as it was written.
func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}
