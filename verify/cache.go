package verify

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// DefaultCacheEntries bounds each cache of verified credentials when
// Options does not.
const DefaultCacheEntries = 10_000

// negativeTTL is how long Clerk's "no" to an opaque token is remembered: long
// enough to spare Clerk a client retrying a dead token in a loop, too short to
// matter for a token that was just minted and is not yet known everywhere.
const negativeTTL = time.Second

// tokenKey identifies a credential in caches without keeping it: its SHA-256.
type tokenKey [sha256.Size]byte

// keyOf hashes token in place: a []byte copy of every token on every
// request would be garbage for nothing. Sum256 only reads its input.
func keyOf(token string) tokenKey {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
}

// cacheEntry is a remembered verdict on one credential: an identity valid
// from notBefore until until, or a refusal until until.
type cacheEntry struct {
	key       tokenKey
	identity  *Identity
	refusal   error
	signer    *signingKey // for a JWT, the key that verified it
	notBefore time.Time
	until     time.Time

	// referenced is set on every hit and cleared by eviction, which gives
	// entries in use a second chance (the CLOCK approximation of LRU)
	// without taking the write lock on hits.
	referenced atomic.Bool
}

// usable reports whether the entry may answer at now.
func (e *cacheEntry) usable(now time.Time) bool {
	return now.Before(e.until) && !now.Before(e.notBefore)
}

// verdictCache remembers verdicts on credentials, keyed by the SHA-256 of
// the credential, bounded in size. Lookups take only a read lock.
type verdictCache struct {
	maxEntries int

	mu      sync.RWMutex
	entries map[tokenKey]*list.Element // of *cacheEntry
	order   *list.List                 // eviction order, oldest first
}

func newVerdictCache(maxEntries int) *verdictCache {
	if maxEntries <= 0 {
		maxEntries = DefaultCacheEntries
	}
	return &verdictCache{maxEntries: maxEntries, entries: make(map[tokenKey]*list.Element), order: list.New()}
}

// get returns the entry for key if it may answer at now.
func (c *verdictCache) get(key tokenKey, now time.Time) *cacheEntry {
	c.mu.RLock()
	element, ok := c.entries[key]
	c.mu.RUnlock()
	if !ok {
		return nil
	}
	entry := element.Value.(*cacheEntry)
	if !entry.usable(now) {
		return nil
	}
	if !entry.referenced.Load() {
		entry.referenced.Store(true)
	}
	return entry
}

// put stores entry, replacing any entry for the same credential and
// evicting old ones beyond the bound.
func (c *verdictCache) put(entry *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if element, ok := c.entries[entry.key]; ok {
		c.remove(element)
	}
	for len(c.entries) >= c.maxEntries {
		c.evictOne()
	}
	c.entries[entry.key] = c.order.PushBack(entry)
}

// drop forgets the credential's entry.
func (c *verdictCache) drop(key tokenKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if element, ok := c.entries[key]; ok {
		c.remove(element)
	}
}

// evictOne removes one entry: the oldest that was not used since eviction
// last passed it. After two passes over the entries (hits keep setting the
// flag concurrently) it removes the oldest regardless.
func (c *verdictCache) evictOne() {
	for chances := 2 * c.order.Len(); chances > 0; chances-- {
		element := c.order.Front()
		if !element.Value.(*cacheEntry).referenced.Swap(false) {
			c.remove(element)
			return
		}
		c.order.MoveToBack(element)
	}
	if front := c.order.Front(); front != nil {
		c.remove(front)
	}
}

func (c *verdictCache) remove(element *list.Element) {
	c.order.Remove(element)
	delete(c.entries, element.Value.(*cacheEntry).key)
}

// len reports how many entries are held.
func (c *verdictCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
