package backendtest

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// RevocationReason is the revocation_reason the fake reports for tokens
// revoked with Server.RevokeM2MToken.
const RevocationReason = "revoked by test"

// defaultTTL is the lifetime of a token whose TokenOptions.TTL is zero.
const defaultTTL = time.Hour

// Machine is a Clerk machine of the fake's instance.
type Machine struct {
	// ID is the machine id, "mch_" and 27 alphanumerics.
	ID string
	// Name is the name given to Server.NewMachine.
	Name string
	// SecretKey is the machine secret key ("ak_" and 32 hex digits), the
	// equivalent of CLERK_MACHINE_SECRET_KEY. It authenticates the machine
	// to the verify and create routes.
	SecretKey string
}

// NewMachine creates a machine with a fresh id and secret key.
func (s *Server) NewMachine(name string) *Machine {
	m := Machine{
		ID:        "mch_" + randomString(alphanumerics, 27),
		Name:      name,
		SecretKey: "ak_" + randomString(hexDigits, 32),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grants[m.ID] = []string{}
	s.machineKeys[m.SecretKey] = m.ID
	return &m
}

// GrantScopes lets machine m call the machines with the given ids: tokens
// that m creates through the create route (POST /m2m_tokens) carry them as
// scopes, as in Clerk where a machine's scopes are configured in the
// Dashboard. It panics if m was not created by this Server.
func (s *Server) GrantScopes(m *Machine, machineIDs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	scopes, ok := s.grants[m.ID]
	if !ok {
		panic(fmt.Sprintf("backendtest: GrantScopes: unknown machine %q", m.ID))
	}
	for _, id := range machineIDs {
		if !slices.Contains(scopes, id) {
			scopes = append(scopes, id)
		}
	}
	s.grants[m.ID] = scopes
}

func (s *Server) grantedScopes(machineID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.grants[machineID])
}

// TokenOptions describes an M2M token to mint.
type TokenOptions struct {
	// Scopes are the ids of the machines the token grants access to.
	Scopes []string
	// Claims are custom claims; nil is reported as null.
	Claims map[string]any
	// TTL is the token's lifetime: 0 means one hour, a negative TTL makes a
	// token that expired that long ago.
	TTL time.Duration
	// NoExpiry makes a token that never expires (expiration null, no "exp").
	NoExpiry bool
}

// expiry returns when a token issued at now expires; the zero Time means
// never.
func (o TokenOptions) expiry(now time.Time) time.Time {
	switch {
	case o.NoExpiry:
		return time.Time{}
	case o.TTL == 0:
		return now.Add(defaultTTL)
	}
	return now.Add(o.TTL)
}

// CreateM2MToken mints an opaque M2M token for machine m, as if m had created
// it, and returns the token ("mt_" and 32 hex digits) and its id (a
// different "mt_" string, used by RevokeM2MToken). It panics if opts.Claims
// cannot be marshalled to JSON.
func (s *Server) CreateM2MToken(m *Machine, opts TokenOptions) (token, id string) {
	now := s.now()
	obj := s.storeOpaque(newTokenRecord(m.ID, opts, now), now)
	return obj.Token, obj.ID
}

// storeOpaque gives rec an opaque token, stores it and returns it as the
// create route reports it, token included.
func (s *Server) storeOpaque(rec *tokenRecord, now time.Time) m2mToken {
	obj := rec.object(now)
	obj.Token = "mt_" + randomString(hexDigits, 32)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[obj.Token] = rec
	s.tokenIDs[rec.id] = rec
	return obj
}

// RevokeM2MToken revokes the opaque token with the given id: verification
// still answers 200, with "revoked": true and "revocation_reason":
// RevocationReason. It panics if no token has that id.
func (s *Server) RevokeM2MToken(id string) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.tokenIDs[id]
	if !ok {
		panic(fmt.Sprintf("backendtest: RevokeM2MToken: unknown token id %q", id))
	}
	reason := RevocationReason
	rec.revocationReason = &reason
	rec.updatedAt = now
}

// useToken looks up an opaque token for a verification by who, records the
// use and returns the token as Clerk reports it. A token that who may not
// see is reported as absent.
func (s *Server) useToken(token string, who principal) (m2mToken, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.tokens[token]
	if !ok || (who.kind == machineKey && !slices.Contains(rec.scopes, who.machineID)) {
		return m2mToken{}, false
	}
	rec.lastUsedAt = now
	return rec.object(now), true
}

// tokenRecord is an M2M token as the fake stores it.
type tokenRecord struct {
	id               string
	subject          string
	scopes           []string
	claims           json.RawMessage
	revocationReason *string // nil while not revoked
	expiresAt        time.Time
	lastUsedAt       time.Time
	createdAt        time.Time
	updatedAt        time.Time
}

func newTokenRecord(subject string, opts TokenOptions, now time.Time) *tokenRecord {
	claims, err := json.Marshal(opts.Claims)
	if err != nil {
		panic(fmt.Sprintf("backendtest: token claims: %v", err))
	}
	return &tokenRecord{
		id:        "mt_" + randomString(hexDigits, 32),
		subject:   subject,
		scopes:    append([]string{}, opts.Scopes...), // [] rather than null
		claims:    claims,
		expiresAt: opts.expiry(now),
		createdAt: now,
		updatedAt: now,
	}
}

// m2mToken is Clerk's M2M token object (object "machine_to_machine_token").
type m2mToken struct {
	Object           string          `json:"object"`
	ID               string          `json:"id"`
	Subject          string          `json:"subject"`
	Scopes           []string        `json:"scopes"`
	Claims           json.RawMessage `json:"claims"`
	Revoked          bool            `json:"revoked"`
	RevocationReason *string         `json:"revocation_reason"`
	Expired          bool            `json:"expired"`
	Expiration       *int64          `json:"expiration"`
	LastUsedAt       *int64          `json:"last_used_at"`
	CreatedAt        int64           `json:"created_at"`
	UpdatedAt        int64           `json:"updated_at"`
	Token            string          `json:"token,omitempty"`
}

// object reports the token as Clerk does at time now. Times are Unix
// milliseconds; the opaque token itself is left out (only creation shows it).
func (t *tokenRecord) object(now time.Time) m2mToken {
	return m2mToken{
		Object:           "machine_to_machine_token",
		ID:               t.id,
		Subject:          t.subject,
		Scopes:           slices.Clone(t.scopes),
		Claims:           t.claims,
		Revoked:          t.revocationReason != nil,
		RevocationReason: t.revocationReason,
		Expired:          !t.expiresAt.IsZero() && !t.expiresAt.After(now),
		Expiration:       unixMilli(t.expiresAt),
		LastUsedAt:       unixMilli(t.lastUsedAt),
		CreatedAt:        t.createdAt.UnixMilli(),
		UpdatedAt:        t.updatedAt.UnixMilli(),
	}
}

// unixMilli returns t in Unix milliseconds, or nil (JSON null) for the zero
// Time.
func unixMilli(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	ms := t.UnixMilli()
	return &ms
}
