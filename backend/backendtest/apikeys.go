package backendtest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// defaultAPIKeyName is the name of an API key whose APIKeyOptions.Name is
// empty.
const defaultAPIKeyName = "test-api-key"

// APIKeyOptions describes an API key to create with Server.CreateAPIKey.
type APIKeyOptions struct {
	// Name is the key's name; "" means "test-api-key".
	Name string
	// Scopes are the key's scopes, free-form strings such as "read:invoices".
	Scopes []string
	// Claims are custom claims; nil is reported as null.
	Claims map[string]any
	// TTL is the key's lifetime: 0 means it never expires (expiration
	// null), as API keys usually do not; a negative TTL makes a key that
	// expired that long ago.
	TTL time.Duration
}

// CreateAPIKey creates an API key for subject, a user ("user_…"), an
// organization ("org_…") or a machine ("mch_…"), and returns its secret and
// its id. The secret is "ak_" and 40 characters of [A-Za-z0-9], the form a
// gateway sends to POST /api_keys/verify; it has the same "ak_" prefix as a
// machine secret key (Machine.SecretKey, "ak_" and 32 hex digits) but is
// never one. The id is "ak_" and 32 hex digits, used by RevokeAPIKey. It
// panics if subject has none of the three prefixes or opts.Claims cannot be
// marshalled to JSON.
func (s *Server) CreateAPIKey(subject string, opts APIKeyOptions) (secret, id string) {
	if !slices.ContainsFunc([]string{"user_", "org_", "mch_"}, func(p string) bool { return strings.HasPrefix(subject, p) }) {
		panic(fmt.Sprintf("backendtest: CreateAPIKey: subject %q is not a user_, org_ or mch_ id", subject))
	}
	now := s.now()
	rec := newRecord(apiKeyKind, subject, opts.Scopes, expiresAfter(now, opts.TTL, 0), now)
	rec.claims, rec.name = marshalClaims(opts.Claims), cmp.Or(opts.Name, defaultAPIKeyName)
	return s.store(rec, string(apiKeyKind)+randomString(alphanumerics, 40))
}

// RevokeAPIKey revokes the API key with the given id: verification still
// answers 200, with "revoked": true and "revocation_reason":
// RevocationReason. It panics if no API key has that id.
func (s *Server) RevokeAPIKey(id string) { s.revoke(apiKeyKind, id, "RevokeAPIKey") }

// apiKey is Clerk's API key object (object "api_key").
type apiKey struct {
	Object      string          `json:"object"`
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	Subject     string          `json:"subject"`
	Name        string          `json:"name"`
	Description *string         `json:"description"`
	Claims      json.RawMessage `json:"claims"`
	Scopes      []string        `json:"scopes"`
	validity
	CreatedBy  *string `json:"created_by"`
	LastUsedAt *int64  `json:"last_used_at"`
	stamps
}

// apiKeyAnswer is the API key verify route's answer: the key as Clerk
// reports it at time now, without its secret.
func (t *tokenRecord) apiKeyAnswer(now time.Time) any {
	return apiKey{
		Object:     "api_key",
		ID:         t.id,
		Type:       "api_key",
		Subject:    t.subject,
		Name:       t.name,
		Claims:     t.claims,
		Scopes:     slices.Clone(t.scopes),
		validity:   t.validity(now),
		LastUsedAt: unixMilli(t.lastUsedAt),
		stamps:     t.stamps(),
	}
}
