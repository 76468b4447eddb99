package backendtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// RevocationReason is the revocation_reason the fake reports for the
// credentials revoked with Server.RevokeM2MToken, Server.RevokeAPIKey and
// Server.RevokeOAuthToken.
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
	// to the M2M verify and create routes.
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
	if o.NoExpiry {
		return time.Time{}
	}
	return expiresAfter(now, o.TTL, defaultTTL)
}

// expiresAfter returns when something made at now with lifetime ttl expires:
// a ttl of 0 means def, and a def of 0 never (the zero Time).
func expiresAfter(now time.Time, ttl, def time.Duration) time.Time {
	if ttl == 0 {
		ttl = def
	}
	if ttl == 0 {
		return time.Time{}
	}
	return now.Add(ttl)
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
	obj := rec.asM2MToken(now)
	obj.Token, _ = s.store(rec, string(m2mKind)+randomString(hexDigits, 32))
	return obj
}

// liveOpaque finds the newest opaque token of like's subject and claims
// that is not revoked and has at least minTTL to live from now, and returns
// it as the create route reports it, token included.
func (s *Server) liveOpaque(like *tokenRecord, now time.Time, minTTL time.Duration) (m2mToken, bool) {
	until := now.Add(minTTL)
	s.mu.Lock()
	defer s.mu.Unlock()
	var newest *tokenRecord
	var secret string
	for token, rec := range s.records {
		switch {
		case rec.kind != m2mKind || rec.subject != like.subject || !bytes.Equal(rec.claims, like.claims):
		case rec.revocationReason != nil || (!rec.expiresAt.IsZero() && rec.expiresAt.Before(until)):
		case newest == nil || rec.createdAt.After(newest.createdAt):
			newest, secret = rec, token
		}
	}
	if newest == nil {
		return m2mToken{}, false
	}
	obj := newest.asM2MToken(now)
	obj.Token = secret
	return obj, true
}

// RevokeM2MToken revokes the opaque token with the given id: verification
// still answers 200, with "revoked": true and "revocation_reason":
// RevocationReason. It panics if no token has that id.
func (s *Server) RevokeM2MToken(id string) { s.revoke(m2mKind, id, "RevokeM2MToken") }

// credentialKind is what a stored secret is, named by the prefix of its id.
type credentialKind string

const (
	m2mKind    credentialKind = "mt_"
	apiKeyKind credentialKind = "ak_"
	oauthKind  credentialKind = "oat_"
)

// tokenRecord is a credential as the fake stores it: an opaque M2M token, an
// API key or an opaque OAuth access token.
type tokenRecord struct {
	kind             credentialKind
	id               string
	subject          string
	scopes           []string
	claims           json.RawMessage // M2M tokens and API keys
	name             string          // API keys
	clientID         string          // OAuth access tokens
	audience         []string        // OAuth access tokens
	actor            *Actor          // OAuth access tokens
	revocationReason *string         // nil while not revoked
	expiresAt        time.Time
	lastUsedAt       time.Time
	createdAt        time.Time
	updatedAt        time.Time
}

func newRecord(kind credentialKind, subject string, scopes []string, expiresAt, now time.Time) *tokenRecord {
	return &tokenRecord{
		kind:      kind,
		id:        string(kind) + randomString(hexDigits, 32),
		subject:   subject,
		scopes:    append([]string{}, scopes...), // [] rather than null
		expiresAt: expiresAt,
		createdAt: now,
		updatedAt: now,
	}
}

func newTokenRecord(subject string, opts TokenOptions, now time.Time) *tokenRecord {
	rec := newRecord(m2mKind, subject, opts.Scopes, opts.expiry(now), now)
	rec.claims = marshalClaims(opts.Claims)
	return rec
}

// marshalClaims returns claims as JSON, null for nil.
func marshalClaims(claims map[string]any) json.RawMessage {
	b, err := json.Marshal(claims)
	if err != nil {
		panic(fmt.Sprintf("backendtest: token claims: %v", err))
	}
	return b
}

// store keeps rec, to be found by secret and by its id, and returns the
// secret and the id.
func (s *Server) store(rec *tokenRecord, secret string) (string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[secret] = rec
	s.recordIDs[rec.id] = rec
	return secret, rec.id
}

// revoke revokes the credential of kind with the given id; method names the
// exported method for its panic when there is none.
func (s *Server) revoke(kind credentialKind, id, method string) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.recordIDs[id]
	if !ok || rec.kind != kind {
		panic(fmt.Sprintf("backendtest: %s: unknown id %q", method, id))
	}
	reason := RevocationReason
	rec.revocationReason = &reason
	rec.updatedAt = now
}

// use looks up the credential of kind with secret for a verification by who,
// records the use and returns a copy of it and the time of the verification.
// A credential that who may not see is reported as absent: a machine sees
// only the tokens whose scopes include it.
func (s *Server) use(kind credentialKind, secret string, who principal) (*tokenRecord, time.Time, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.records[secret]
	if !ok || rec.kind != kind || (who.kind == machineKey && !slices.Contains(rec.scopes, who.machineID)) {
		return nil, now, false
	}
	rec.lastUsedAt = now
	cp := *rec
	return &cp, now, true
}

// validity is the part of a credential's object that says whether it may
// still be used.
type validity struct {
	Revoked          bool    `json:"revoked"`
	RevocationReason *string `json:"revocation_reason"`
	Expired          bool    `json:"expired"`
	Expiration       *int64  `json:"expiration"` // Unix ms, null for never
}

// stamps are the creation and update times of a credential, in Unix ms.
type stamps struct {
	CreatedAt int64 `json:"created_at"`
	UpdatedAt int64 `json:"updated_at"`
}

func (t *tokenRecord) expired(now time.Time) bool {
	return !t.expiresAt.IsZero() && !t.expiresAt.After(now)
}

func (t *tokenRecord) validity(now time.Time) validity {
	return validity{
		Revoked:          t.revocationReason != nil,
		RevocationReason: t.revocationReason,
		Expired:          t.expired(now),
		Expiration:       unixMilli(t.expiresAt),
	}
}

func (t *tokenRecord) stamps() stamps {
	return stamps{CreatedAt: t.createdAt.UnixMilli(), UpdatedAt: t.updatedAt.UnixMilli()}
}

// m2mToken is Clerk's M2M token object (object "machine_to_machine_token").
type m2mToken struct {
	Object  string          `json:"object"`
	ID      string          `json:"id"`
	Subject string          `json:"subject"`
	Scopes  []string        `json:"scopes"`
	Claims  json.RawMessage `json:"claims"`
	validity
	LastUsedAt *int64 `json:"last_used_at"`
	stamps
	Token string `json:"token,omitempty"`
}

// asM2MToken reports the token as Clerk does at time now. Times are Unix
// milliseconds; the opaque token itself is left out (only creation shows it).
func (t *tokenRecord) asM2MToken(now time.Time) m2mToken {
	return m2mToken{
		Object:     "machine_to_machine_token",
		ID:         t.id,
		Subject:    t.subject,
		Scopes:     slices.Clone(t.scopes),
		Claims:     t.claims,
		validity:   t.validity(now),
		LastUsedAt: unixMilli(t.lastUsedAt),
		stamps:     t.stamps(),
	}
}

// m2mAnswer is the M2M verify route's answer.
func (t *tokenRecord) m2mAnswer(now time.Time) any { return t.asM2MToken(now) }

// unixMilli returns t in Unix milliseconds, or nil (JSON null) for the zero
// Time.
func unixMilli(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	ms := t.UnixMilli()
	return &ms
}
