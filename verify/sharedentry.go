package verify

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"time"
)

// The format of an entry of the shared cache: a header line, then the
// identity as JSON.
//
//	clerk_m2m-verdict 1 <expiry, Unix milliseconds> <HMAC-SHA256, hex>
//	{"subject":"mch_…",…}
//
// The expiry is readable without any key, so that whoever sweeps the store
// can tell what has expired; it is covered by the MAC all the same, so a
// writer without the secret can shorten an entry's life (as it could
// delete it) but never lengthen it.
const (
	sharedEntryMagic   = "clerk_m2m-verdict"
	sharedEntryVersion = "1"

	// MaxSharedEntryBytes bounds an entry: a verdict whose identity takes
	// more (outsized claims) is not shared, and a larger entry read from
	// the store is ignored.
	MaxSharedEntryBytes = 64 << 10
)

// The labels of the keys derived from Options.SharedCacheSecret, one per
// use, so that no key serves two purposes.
const (
	sharedSalt        = "clerk_m2m shared verdicts"
	sharedScopeLabel  = "clerk_m2m shared verdicts v1: scope"
	sharedTokenLabel  = "clerk_m2m shared verdicts v1: token"
	sharedEntryLabel  = "clerk_m2m shared verdicts v1: entry"
	sharedDerivedSize = sha256.Size
)

// sharedKeys are what a Verifier names and authenticates its entries in
// the shared cache with.
type sharedKeys struct {
	scope    string // hex of the MAC naming what makes its verdicts valid
	tokenKey []byte // keys the MAC of a credential, which names its entry
	entryKey []byte // keys the MAC of an entry
}

// newSharedKeys derives the keys from secret (HKDF-SHA256, one label per
// key) and names the scope: a MAC over what makes a verdict on an opaque
// credential valid (opaqueScope).
func newSharedKeys(secret []byte, opaqueScope []byte) *sharedKeys {
	derive := func(label string) []byte {
		key, err := hkdf.Key(sha256.New, secret, []byte(sharedSalt), label, sharedDerivedSize)
		if err != nil {
			panic(err) // only for a length HKDF cannot give, and sharedDerivedSize is one it can
		}
		return key
	}
	return &sharedKeys{
		scope:    hex.EncodeToString(mac(derive(sharedScopeLabel), opaqueScope)),
		tokenKey: derive(sharedTokenLabel),
		entryKey: derive(sharedEntryLabel),
	}
}

// mac is HMAC-SHA256 of the length-prefixed parts under key.
func mac(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, part := range parts {
		writePart(m, string(part))
	}
	return m.Sum(nil)
}

// writePart writes value length-prefixed, so that no two lists of parts
// write alike.
func writePart(h hash.Hash, value string) { fmt.Fprintf(h, "%d:%s,", len(value), value) }

// name is the key of the entry for token: the scope, then the token's MAC.
func (k *sharedKeys) name(token string) (name string, tokenMAC []byte) {
	tokenMAC = mac(k.tokenKey, []byte(token))
	return k.scope + "/" + hex.EncodeToString(tokenMAC), tokenMAC
}

// entryMAC authenticates an entry: its version, scope, token MAC, expiry
// and identity.
func (k *sharedKeys) entryMAC(tokenMAC []byte, expiry string, identity []byte) []byte {
	return mac(k.entryKey, []byte(sharedEntryVersion), []byte(k.scope), tokenMAC, []byte(expiry), identity)
}

// sharedIdentity is the JSON form of an opaque credential's Identity in
// the shared cache.
type sharedIdentity struct {
	Subject   string          `json:"subject"`
	TokenType TokenType       `json:"token_type"`
	TokenID   string          `json:"token_id,omitempty"`
	Scopes    []string        `json:"scopes"`
	ExpiresAt int64           `json:"expires_at,omitempty"` // Unix milliseconds; 0 for never
	ClientID  string          `json:"client_id,omitempty"`
	OrgID     string          `json:"org_id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Actor     string          `json:"actor,omitempty"`
	Claims    json.RawMessage `json:"claims,omitempty"`
}

// seal returns the entry that shares identity, verified for token, until
// expiry; false when it would be larger than MaxSharedEntryBytes.
func (k *sharedKeys) seal(tokenMAC []byte, identity *Identity, expiry time.Time) ([]byte, bool) {
	shared := sharedIdentity{
		Subject: identity.Subject, TokenType: identity.TokenType, TokenID: identity.TokenID, Scopes: identity.Scopes,
		ClientID: identity.ClientID, OrgID: identity.OrgID, Name: identity.Name, Actor: identity.Actor,
		Claims: identity.claimsJSON,
	}
	if !identity.ExpiresAt.IsZero() {
		shared.ExpiresAt = identity.ExpiresAt.UnixMilli()
	}
	body, err := json.Marshal(shared)
	if err != nil {
		return nil, false // claims that are not JSON: never, they were checked
	}
	exp := strconv.FormatInt(expiry.UnixMilli(), 10)
	header := sharedEntryMagic + " " + sharedEntryVersion + " " + exp + " " + hex.EncodeToString(k.entryMAC(tokenMAC, exp, body)) + "\n"
	if len(header)+len(body) > MaxSharedEntryBytes {
		return nil, false
	}
	return append([]byte(header), body...), true
}

// errEntryFormat says an entry is not one this version reads.
var errEntryFormat = errors.New("not an entry of this format")

// SharedEntryExpiry returns the expiry an entry of the shared cache
// declares in its header, without checking its authenticity: enough to
// tell what can be removed from a store, never to trust an entry.
func SharedEntryExpiry(entry []byte) (time.Time, error) {
	exp, _, _, err := splitEntry(entry)
	if err != nil {
		return time.Time{}, err
	}
	ms, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}, errEntryFormat
	}
	return time.UnixMilli(ms), nil
}

// splitEntry returns an entry's expiry and MAC, as written, and its body.
func splitEntry(entry []byte) (exp string, entryMAC []byte, body []byte, err error) {
	if len(entry) > MaxSharedEntryBytes {
		return "", nil, nil, errEntryFormat
	}
	header, body, found := bytes.Cut(entry, []byte("\n"))
	fields := bytes.Split(header, []byte(" "))
	if !found || len(fields) != 4 || string(fields[0]) != sharedEntryMagic || string(fields[1]) != sharedEntryVersion {
		return "", nil, nil, errEntryFormat
	}
	entryMAC, err = hex.DecodeString(string(fields[3]))
	if err != nil || len(entryMAC) != sha256.Size {
		return "", nil, nil, errEntryFormat
	}
	return string(fields[2]), entryMAC, body, nil
}

// open checks entry, read under the name of tokenMAC, and returns the
// identity it shares, of type tokenType, and its expiry. Any entry that
// is malformed, too large, fails its MAC, or names another type is an
// error.
func (k *sharedKeys) open(tokenMAC []byte, entry []byte, tokenType TokenType) (*Identity, time.Time, error) {
	exp, entryMAC, body, err := splitEntry(entry)
	if err != nil {
		return nil, time.Time{}, err
	}
	if !hmac.Equal(entryMAC, k.entryMAC(tokenMAC, exp, body)) {
		return nil, time.Time{}, errors.New("the entry's MAC does not match")
	}
	expiry, err := SharedEntryExpiry(entry)
	if err != nil {
		return nil, time.Time{}, err
	}
	identity, err := decodeSharedIdentity(body, tokenType)
	return identity, expiry, err
}

// decodeSharedIdentity reads an authenticated entry's identity, strictly:
// written by this code, it has exactly this form.
func decodeSharedIdentity(body []byte, tokenType TokenType) (*Identity, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var shared sharedIdentity
	if err := dec.Decode(&shared); err != nil || dec.More() {
		return nil, errEntryFormat
	}
	if shared.TokenType != tokenType || shared.Subject == "" || shared.Scopes == nil {
		return nil, errEntryFormat
	}
	claims, err := objectClaims(tokenType, shared.Claims)
	if err != nil {
		return nil, err
	}
	identity := &Identity{
		Subject: shared.Subject, TokenType: shared.TokenType, Format: Opaque, TokenID: shared.TokenID,
		Scopes: shared.Scopes, ClientID: shared.ClientID, OrgID: shared.OrgID, Name: shared.Name, Actor: shared.Actor,
		claimsJSON: claims,
	}
	if shared.ExpiresAt != 0 {
		identity.ExpiresAt = time.UnixMilli(shared.ExpiresAt)
	}
	return identity, nil
}
