package verify

import (
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
)

// TestIdentityField: Field answers every JSON name of Identity, and
// "claims", as text, and no other name.
func TestIdentityField(t *testing.T) {
	id := &Identity{Subject: "mch_caller", TokenType: M2MToken, Format: JWT, TokenID: "mt_1", Scopes: []string{"a", "b"},
		ExpiresAt: time.Unix(1795787600, 5e8), IssuedAt: time.Unix(1795784000, 0), ClientID: "client_1", SessionID: "sess_1",
		OrgID: "org_1", Name: "the key", Actor: "user_admin", claimsJSON: `{"b":12345678901234567890,"a":"<x>"}`}
	want := map[string]string{"id": "mch_caller", "token_type": "m2m_token", "token_format": "jwt", "token_id": "mt_1",
		"scopes": "a b", "expires_at": "1795787600", "issued_at": "1795784000", "client_id": "client_1", "session_id": "sess_1",
		"org_id": "org_1", "name": "the key", "actor": "user_admin", "claims": `{"a":"\u003cx\u003e","b":12345678901234567890}`}
	marshalled := jsonRoundTrip(t, id).(map[string]any)
	assert.ElementsMatch(t, append(slices.Collect(maps.Keys(marshalled)), "claims"), id.FieldNames(), "the JSON names, and claims")
	assert.ElementsMatch(t, slices.Collect(maps.Keys(want)), id.FieldNames(), "each is tried here")
	assert.Equal(t, "claims", id.FieldNames()[len(want)-1], "last")
	for name, value := range want {
		got, ok := id.Field(name)
		assert.True(t, ok, name)
		assert.Equal(t, value, got, name)
	}
	empty := &Identity{}
	for _, name := range empty.FieldNames() {
		got, ok := empty.Field(name)
		assert.True(t, ok, name)
		if name == "claims" {
			assert.Equal(t, "{}", got)
		} else {
			assert.Empty(t, got, "%s: nothing, and no time for a zero one", name)
		}
	}
	for _, name := range []string{"subject", "Subject", "claimsJSON", ""} {
		got, ok := id.Field(name)
		assert.False(t, ok, name)
		assert.Empty(t, got)
	}
}

// TestTextsAreEveryString holds Identity.texts to Identity's fields: every
// field of type string, and every element of one of type []string, is
// listed, and nothing else (the type and format, of types of their own,
// are constants and left out).
func TestTextsAreEveryString(t *testing.T) {
	id := &Identity{Scopes: []string{"mch_a", "mch_b"}}
	listed := map[*string]bool{}
	for _, text := range id.texts(nil) {
		listed[text] = true
	}
	found := 0
	v := reflect.ValueOf(id).Elem()
	for i := range v.NumField() {
		field := v.Field(i)
		var texts []*string
		switch field.Type() {
		case reflect.TypeFor[string]():
			texts = append(texts, (*string)(unsafe.Pointer(field.UnsafeAddr())))
		case reflect.TypeFor[[]string]():
			for j := range field.Len() {
				texts = append(texts, (*string)(unsafe.Pointer(field.Index(j).UnsafeAddr())))
			}
		}
		for _, text := range texts {
			found++
			assert.True(t, listed[text], "%s is not among the texts", v.Type().Field(i).Name)
		}
	}
	assert.Len(t, listed, found, "texts lists only the identity's strings")
}
