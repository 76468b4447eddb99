package verify

import (
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
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

	// The custom claims, kept as a JSON object (as Clerk answered for an
	// opaque credential, or customClaims of a JWT; "" for none) and decoded
	// only if someone asks (most requests never look at them), once.
	claimsJSON string
	claimsOnce sync.Once
	decoded    *decodedClaims // set by claimsOnce; nil without claims
}

// decodedClaims are an identity's custom claims decoded, and rendered
// again: apart, so that the many identities whose claims nobody reads do
// not hold room for them.
type decodedClaims struct {
	claims     map[string]any
	renderOnce sync.Once
	text       string
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

// texts appends pointers to the identity's text to list: its strings but
// for its type and format (constants), each of its scopes, and its claims
// (TestTextsAreEveryString holds it to Identity's fields).
func (id *Identity) texts(list []*string) []*string {
	list = append(list, &id.Subject, &id.TokenID, &id.ClientID, &id.SessionID, &id.OrgID, &id.Name, &id.Actor)
	for i := range id.Scopes {
		list = append(list, &id.Scopes[i])
	}
	return append(list, &id.claimsJSON)
}

// Claims returns the credential's custom claims (numbers as json.Number),
// or nil when it has none. Do not modify the map.
func (id *Identity) Claims() map[string]any {
	if d := id.decode(); d != nil {
		return d.claims
	}
	return nil
}

// decode decodes the claims once, and returns them; nil for none.
func (id *Identity) decode() *decodedClaims {
	id.claimsOnce.Do(func() {
		if id.claimsJSON == "" {
			return
		}
		var claims map[string]any
		if err := decodeJSON(id.claimsJSON, &claims); err != nil || len(claims) == 0 {
			return // validated when the credential was verified
		}
		id.decoded = &decodedClaims{claims: claims}
	})
	return id.decoded
}

// ClaimsJSON returns the custom claims as a compact JSON object with sorted
// keys; "{}" when there are none.
func (id *Identity) ClaimsJSON() string {
	d := id.decode()
	if d == nil {
		return "{}"
	}
	d.renderOnce.Do(func() {
		d.text = "{}"
		if data, err := json.Marshal(d.claims); err == nil {
			d.text = string(data)
		}
	})
	return d.text
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
func decodeJSON(data string, v any) error {
	dec := json.NewDecoder(strings.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}
