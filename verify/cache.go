package verify

import (
	"container/list"
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// DefaultCacheEntries bounds the opaque-token cache when Options does not.
const DefaultCacheEntries = 10_000

// tokenKey identifies a credential in caches without keeping it: its SHA-256.
type tokenKey [sha256.Size]byte

func keyOf(token string) tokenKey { return sha256.Sum256([]byte(token)) }

// opaqueCache remembers the identities of opaque tokens that Clerk verified,
// each until min(now + ttl, the token's expiry), and shares one call to Clerk
// among concurrent verifications of the same token. Failures are never
// cached. When full, the entry stored first is dropped.
type opaqueCache struct {
	ttl        time.Duration
	maxEntries int
	flight     singleflight.Group

	mu      sync.Mutex
	entries map[tokenKey]*list.Element // of *cacheEntry
	order   *list.List                 // oldest first
}

type cacheEntry struct {
	key      tokenKey
	identity *Identity
	until    time.Time
}

func newOpaqueCache(ttl time.Duration, maxEntries int) *opaqueCache {
	if maxEntries <= 0 {
		maxEntries = DefaultCacheEntries
	}
	return &opaqueCache{ttl: ttl, maxEntries: maxEntries, entries: make(map[tokenKey]*list.Element), order: list.New()}
}

// verify returns the cached identity of token, or runs call (once for all
// concurrent callers with the same token) and caches a success. The call
// runs with its own budget, detached from any one caller, and each caller
// stops waiting when its own context ends.
func (c *opaqueCache) verify(ctx context.Context, token string, now func() time.Time, budget time.Duration,
	call func(context.Context) (*Identity, error)) (*Identity, error) {
	key := keyOf(token)
	if identity, ok := c.get(key, now()); ok {
		return identity, nil
	}
	result := c.flight.DoChan(string(key[:]), func() (any, error) {
		callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
		defer cancel()
		identity, err := call(callCtx)
		if err == nil {
			c.put(key, identity, now())
		}
		return identity, err
	})
	select {
	case res := <-result:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*Identity), nil
	case <-ctx.Done():
		return nil, &Error{Reason: ReasonUnavailable, Description: "Clerk did not answer in time", Err: ctx.Err()}
	}
}

func (c *opaqueCache) get(key tokenKey, now time.Time) (*Identity, bool) {
	if c.ttl <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	element, ok := c.entries[key]
	if !ok {
		return nil, false
	}
	entry := element.Value.(*cacheEntry)
	if !now.Before(entry.until) {
		c.remove(element)
		return nil, false
	}
	return entry.identity, true
}

func (c *opaqueCache) put(key tokenKey, identity *Identity, now time.Time) {
	if c.ttl <= 0 {
		return
	}
	until := now.Add(c.ttl)
	if !identity.ExpiresAt.IsZero() && identity.ExpiresAt.Before(until) {
		until = identity.ExpiresAt
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if element, ok := c.entries[key]; ok {
		c.remove(element)
	}
	for len(c.entries) >= c.maxEntries {
		c.remove(c.order.Front())
	}
	c.entries[key] = c.order.PushBack(&cacheEntry{key: key, identity: identity, until: until})
}

func (c *opaqueCache) remove(element *list.Element) {
	c.order.Remove(element)
	delete(c.entries, element.Value.(*cacheEntry).key)
}

// len reports how many entries are held.
func (c *opaqueCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
