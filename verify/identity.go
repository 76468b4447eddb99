package verify

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Identity is a verified credential: who presented it and what it carries.
// It is shared by every request that presents the same credential while it
// is cached, so it must not be modified.
//
// Its fields are its one definition: their JSON names are the names Field
// answers to (and a gateway's placeholders use), and the JSON form is how
// a verdict is kept in a Store.
type Identity struct {
	// Subject is who the credential stands for: a machine (mch_…), a user
	// (user_…) or an organization (org_…).
	Subject   string    `json:"id"`
	TokenType TokenType `json:"token_type"`
	Format    Format    `json:"token_format"`
	// TokenID is the credential's id (mt_…, ak_…, oat_…) or a JWT's jti;
	// empty when it has none.
	TokenID string `json:"token_id,omitempty"`
	// Scopes are the scopes the credential grants; for M2M tokens, the
	// machines it may call.
	Scopes []string `json:"scopes"`
	// ExpiresAt is when the credential expires; zero when it never does.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// IssuedAt is when a JWT was issued (its iat); zero when it does not
	// say, and for opaque credentials.
	IssuedAt time.Time `json:"issued_at,omitzero"`

	// Set where the credential type has them: the OAuth application's
	// client id, the session id, the organization (of an API key owned by
	// one, or the active organization of a session), the API key's name.
	ClientID  string `json:"client_id,omitempty"`
	SessionID string `json:"session_id,omitempty"`
	OrgID     string `json:"org_id,omitempty"`
	Name      string `json:"name,omitempty"`
	// Actor is who acts for the subject, the "sub" of the token's "act"
	// claim (RFC 8693): the client an OAuth token was exchanged for, or
	// the user impersonating a session's. Its whole chain stays in the
	// claims, under "act". Empty when the token names none.
	Actor string `json:"actor,omitempty"`

	// The custom claims, kept as the JSON object they came in and decoded
	// only if someone asks: most requests never look at them.
	claimsJSON []byte
	omitClaims []string // members of claimsJSON that are not custom claims
	claimsOnce sync.Once
	claims     map[string]any
	renderOnce sync.Once
	claimsText string
}

// claimsField is the name Field answers the custom claims to, as a JSON
// object.
const claimsField = "claims"

// Field returns one of the identity's fields as text, by its JSON name:
// strings as they are, scopes separated by one space, times in Unix
// seconds (empty when zero), and "claims" as ClaimsJSON. It is false for
// a name that is no field.
func (id *Identity) Field(name string) (string, bool) {
	if name == claimsField {
		return id.ClaimsJSON(), true
	}
	i, ok := identityFields[name]
	if !ok {
		return "", false
	}
	// By kind, so that reading a string, as nearly every request does,
	// copies nothing.
	switch field := reflect.ValueOf(id).Elem().Field(i); field.Kind() {
	case reflect.String:
		return field.String(), true
	case reflect.Slice:
		return strings.Join(field.Interface().([]string), " "), true
	default:
		if at := field.Interface().(time.Time); !at.IsZero() {
			return strconv.FormatInt(at.Unix(), 10), true
		}
		return "", true
	}
}

// FieldNames lists the names Field answers to, in the order of the
// fields, "claims" last.
func (id *Identity) FieldNames() []string {
	return append(slices.Clone(identityNames), claimsField)
}

// identityNames are the JSON names of the fields of Identity, in order,
// and identityFields their indexes, read from the type itself.
var identityNames, identityFields = func() ([]string, map[string]int) {
	var names []string
	fields := map[string]int{}
	t := reflect.TypeFor[Identity]()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" {
			names, fields[name] = append(names, name), i
		}
	}
	return names, fields
}()

// textSize is what the identity's strings and scopes hold, in bytes: the
// variable part of its size in memory.
func (id *Identity) textSize() int64 {
	var size int64
	v := reflect.ValueOf(id).Elem()
	for _, i := range identityFields {
		switch field := v.Field(i); field.Kind() {
		case reflect.String:
			size += int64(field.Len())
		case reflect.Slice:
			for j := range field.Len() {
				size += int64(field.Index(j).Len()) + int64(unsafe.Sizeof(""))
			}
		}
	}
	return size
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
