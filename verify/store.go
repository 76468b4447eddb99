package verify

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"time"
)

// Store is where the Verifiers of several processes (gateways behind one
// load balancer) share their verdicts on opaque credentials, behind the
// in-memory cache (Options.Store): bytes under string keys. Entries are
// authenticated and checked on every read, so a Store need not be trusted
// to keep them intact; it must give up when its context ends.
type Store interface {
	// Get returns the entry under key, if it expires by expiresBy (a
	// Store may look for it only there), or an error: fs.ErrNotExist
	// when there is none.
	Get(ctx context.Context, key string, expiresBy time.Time) ([]byte, error)
	// Put stores entry under key. It is of no use after expiry, when a
	// store may drop it.
	Put(ctx context.Context, key string, entry []byte, expiry time.Time) error
}

// Bounds of the use of a Store.
const (
	// maxStoreReadTime caps the share of a call's budget (the Pool's
	// timeout) that a lookup in the Store may take: a quarter of the
	// budget, at most this. A lookup that takes longer is given up, and
	// Clerk asked.
	maxStoreReadTime = 250 * time.Millisecond

	// maxStoreWrites bounds the writes in flight: a verdict that finds
	// every slot taken is not shared (and reported).
	maxStoreWrites = 8

	// storeWriteTimeout bounds one write.
	storeWriteTimeout = 5 * time.Second

	// maxEntryBytes bounds an entry: a verdict that takes more (outsized
	// claims) is not shared, and a larger entry read is ignored.
	maxEntryBytes = 64 << 10
)

// The operations of a Store, as Options.OnStoreError names them.
const (
	storeRead  = "read"
	storeWrite = "write"
)

// sharedVerdicts is a Verifier's use of a Store: the keys that name and
// authenticate its entries, derived from the Clerk keys it verifies
// opaque credentials with (HKDF-SHA256, one label per key), so that the
// store holds no credential, no secret and no unkeyed hash of either, and
// a writer without the keys can neither read nor plant a verdict.
type sharedVerdicts struct {
	store    Store
	scope    string // hex of the MAC of what makes its verdicts valid (opaqueScope)
	tokenKey []byte // keys the MAC of a credential, which names its entry
	entryKey []byte // keys the MAC of an entry
	writes   chan struct{}
	onError  func(op string, err error)
}

func newSharedVerdicts(store Store, secret, opaqueScope []byte, onError func(string, error)) *sharedVerdicts {
	derive := func(label string) []byte {
		key, err := hkdf.Key(sha256.New, secret, []byte("clerk_m2m shared verdicts"), "clerk_m2m shared verdicts v2: "+label, sha256.Size)
		if err != nil {
			panic(err) // only for a length HKDF cannot give, and sha256.Size is one it can
		}
		return key
	}
	if onError == nil {
		onError = func(string, error) {}
	}
	return &sharedVerdicts{
		store:    store,
		scope:    hex.EncodeToString(mac(derive("scope"), opaqueScope)),
		tokenKey: derive("token"),
		entryKey: derive("entry"),
		writes:   make(chan struct{}, maxStoreWrites),
		onError:  onError,
	}
}

// storedEntry is the body of an entry: the verdict, when Clerk gave it,
// and until when it may be used, all under the entry's MAC.
type storedEntry struct {
	Answered int64           `json:"answered"` // Unix milliseconds
	Expires  int64           `json:"expires"`  // Unix milliseconds
	Identity *Identity       `json:"identity"`
	Claims   json.RawMessage `json:"claims,omitempty"`
}

// name is the key of the entry for token: the scope, then the token's MAC.
func (s *sharedVerdicts) name(token string) (name string, tokenMAC []byte) {
	tokenMAC = mac(s.tokenKey, []byte(token))
	return s.scope + "/" + hex.EncodeToString(tokenMAC), tokenMAC
}

// share writes identity, verified for token by Clerk at answered, valid
// until expiry, in the background, if a write slot is free and the entry
// is not too large.
func (s *sharedVerdicts) share(token string, identity *Identity, answered, expiry time.Time) {
	name, tokenMAC := s.name(token)
	body, err := json.Marshal(storedEntry{answered.UnixMilli(), expiry.UnixMilli(), identity, claimsMessage(identity.claimsJSON)})
	if err != nil || len(body) > maxEntryBytes-2*sha256.Size-1 {
		return // outsized claims: not shared
	}
	entry := append(hex.AppendEncode(nil, s.entryMAC(tokenMAC, body)), '\n')
	entry = append(entry, body...)
	select {
	case s.writes <- struct{}{}:
	default:
		s.onError(storeWrite, errors.New("as many writes as allowed are in flight: a verdict was not shared"))
		return
	}
	go func() {
		defer func() { <-s.writes }()
		ctx, cancel := context.WithTimeout(context.Background(), storeWriteTimeout)
		defer cancel()
		if err := s.store.Put(ctx, name, entry, expiry); err != nil {
			s.onError(storeWrite, err)
		}
	}()
}

// recall looks token up within budget, among the entries that expire by
// expiresBy, and returns the verdict found, of type tokenType, when Clerk
// gave it and until when it may be used: nil for anything but an
// authentic entry for this credential, its trouble reported.
func (s *sharedVerdicts) recall(ctx context.Context, budget time.Duration, token string, tokenType TokenType,
	expiresBy time.Time) (*Identity, time.Time, time.Time) {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	name, tokenMAC := s.name(token)
	data, err := s.store.Get(ctx, name, expiresBy)
	if err == nil {
		var stored *storedEntry
		if stored, err = s.open(tokenMAC, data, tokenType); err == nil {
			return stored.Identity, time.UnixMilli(stored.Answered), time.UnixMilli(stored.Expires)
		}
		err = fmt.Errorf("an entry failed its check and was ignored: %w", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		s.onError(storeRead, err)
	}
	return nil, time.Time{}, time.Time{}
}

// open checks an entry read under the name of tokenMAC, strictly: written
// by share, it has exactly that form.
func (s *sharedVerdicts) open(tokenMAC, entry []byte, tokenType TokenType) (*storedEntry, error) {
	sum, body, found := bytes.Cut(entry, []byte("\n"))
	want := s.entryMAC(tokenMAC, body)
	if got, err := hex.DecodeString(string(sum)); !found || len(entry) > maxEntryBytes || err != nil || !hmac.Equal(got, want) {
		return nil, errors.New("its MAC does not match")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var stored storedEntry
	if err := dec.Decode(&stored); err != nil || dec.More() {
		return nil, errors.New("its body is malformed")
	}
	id := stored.Identity
	if id == nil || id.TokenType != tokenType || id.Format != Opaque || id.Subject == "" || id.Scopes == nil {
		return nil, errors.New("its identity is not one of this credential's type")
	}
	claims, err := objectClaims(tokenType, stored.Claims)
	id.claimsJSON = claims
	return &stored, err
}

// claimsMessage is claims as stored: left out when there are none.
func claimsMessage(claims string) json.RawMessage {
	if claims == "" {
		return nil
	}
	return json.RawMessage(claims)
}

// entryMAC authenticates an entry: its scope, its credential's MAC and
// its body, so that it answers for no other credential, nor in another
// scope.
func (s *sharedVerdicts) entryMAC(tokenMAC, body []byte) []byte {
	return mac(s.entryKey, []byte(s.scope), tokenMAC, body)
}

// sharedSecret is what a Verifier's entries are keyed with: the keys its
// opaque credentials are verified with, both of them, so that Verifiers
// verifying with another machine's key, or another instance's, share
// nothing.
func sharedSecret(secretKey, machineSecretKey string) []byte {
	h := sha256.New()
	writePart(h, secretKey)
	writePart(h, machineSecretKey)
	return h.Sum(nil)
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
