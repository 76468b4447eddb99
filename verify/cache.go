package verify

import (
	"container/list"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// negativeTTL is how long Clerk's "no" to an opaque token is remembered: long
// enough to spare Clerk a client retrying a dead token in a loop, too short to
// matter for a token that was just minted and is not yet known everywhere.
const negativeTTL = time.Second

// scope names what makes a Verifier's verdicts valid (see Verifier.scope):
// Verifiers of one scope answer from each other's cached verdicts, and
// from no others'.
type scope [16]byte

// cacheKey is a verdict's key: the Verifier's scope and the credential
// itself. Go's map hashes it with a seed drawn at random for each map, so
// no one can craft credentials that collide to slow the lookups down, and
// compares the whole credential on a match, so that a verdict answers for
// that very credential and no other. A lookup hashes the credential as the
// request holds it, in far less time than a SHA-256 of it would take;
// the cache holds a copy of each credential it remembers, in memory only
// (see put), for no longer than the verdict.
type cacheKey struct {
	scope scope
	token string
}

// cacheEntry is a remembered verdict on one credential: an identity valid
// from notBefore until until, or a refusal until until.
type cacheEntry struct {
	key       cacheKey
	identity  *Identity
	refusal   error
	signer    *signingKey // for a JWT, the key that verified it
	notBefore time.Time
	until     time.Time
	size      int64 // what the entry holds in memory, estimated (entrySize)

	// referenced is set on every hit and cleared by eviction, which gives
	// entries in use a second chance (the CLOCK approximation of LRU)
	// without taking the write lock on hits.
	referenced atomic.Bool
}

// format is how the credential of the entry is carried.
func (e *cacheEntry) format() Format {
	if e.identity != nil {
		return e.identity.Format
	}
	return refusal(e.refusal).Format
}

// usable reports whether the entry may answer at now.
func (e *cacheEntry) usable(now time.Time) bool {
	return now.Before(e.until) && !now.Before(e.notBefore)
}

// expired reports whether the entry can answer no more.
func (e *cacheEntry) expired(now time.Time) bool { return !now.Before(e.until) }

// verdictCache remembers verdicts on credentials, keyed by the scope of
// the Verifier and the credential, bounded by an estimate
// of the memory its entries hold. Lookups take only a read lock. Expired
// entries are dropped as they reach the front of the order when an entry
// is added, and all of them when the cache is swept (by Pool.Run).
type verdictCache struct {
	maxBytes int64
	now      func() time.Time

	mu      sync.RWMutex
	entries map[cacheKey]*list.Element // of *cacheEntry
	order   *list.List                 // eviction order, oldest first
	bytes   int64                      // the sum of the entries' sizes
	closed  bool
}

func newVerdictCache(maxBytes int64, now func() time.Time) *verdictCache {
	return &verdictCache{maxBytes: maxBytes, now: now, entries: make(map[cacheKey]*list.Element), order: list.New()}
}

// get returns the entry for key if it may answer at now.
func (c *verdictCache) get(key cacheKey, now time.Time) *cacheEntry {
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

// put stores entry, replacing any entry for the same key, dropping the
// entries at the front that are expired at now and evicting others until
// the entries fit the bound. An entry larger than the whole bound is not
// kept.
func (c *verdictCache) put(entry *cacheEntry, now time.Time) {
	// The credential may be part of a larger string (a Cookie header) that
	// the entry must not keep alive.
	entry.key.token = strings.Clone(entry.key.token)
	entry.size = entrySize(entry)
	c.mu.Lock()
	defer c.mu.Unlock()
	if element, ok := c.entries[entry.key]; ok {
		c.remove(element)
	}
	if c.closed || entry.size > c.maxBytes {
		return
	}
	c.dropExpiredFront(now)
	for c.bytes+entry.size > c.maxBytes && c.order.Len() > 0 {
		c.evictOne()
	}
	c.entries[entry.key] = c.order.PushBack(entry)
	c.bytes += entry.size
}

// drop forgets the entry of key.
func (c *verdictCache) drop(key cacheKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if element, ok := c.entries[key]; ok {
		c.remove(element)
	}
}

// dropExpiredFront removes the expired entries at the front of the order:
// entries are added in time order and most live alike, so the front is
// where the expired ones gather.
func (c *verdictCache) dropExpiredFront(now time.Time) {
	for front := c.order.Front(); front != nil && front.Value.(*cacheEntry).expired(now); front = c.order.Front() {
		c.remove(front)
	}
}

// sweep removes every expired entry.
func (c *verdictCache) sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for element := c.order.Front(); element != nil; {
		next := element.Next()
		if element.Value.(*cacheEntry).expired(now) {
			c.remove(element)
		}
		element = next
	}
}

// close forgets every entry; nothing is kept after.
func (c *verdictCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	clear(c.entries)
	c.order.Init()
	c.bytes = 0
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
	entry := element.Value.(*cacheEntry)
	c.order.Remove(element)
	delete(c.entries, entry.key)
	c.bytes -= entry.size
}

// Estimates of what a cache entry holds, in bytes.
const (
	// entryOverhead is what every entry holds whatever its credential: the
	// entry, its list element, its slot in the map (at the map's load),
	// and the Identity with its fixed fields.
	entryOverhead = 1024
	// decodedValueCost is what one JSON value of the claims costs once
	// decoded (Identity.Claims): an interface, a boxed value or a string
	// header, a map slot or a slice element, and the slack of growth
	// (about half of it, measured).
	decodedValueCost = 64
)

// entrySize estimates the memory an entry holds, on the high side: the
// fixed overhead, the credential, the identity's strings and scopes, and its claims in the
// three forms an Identity may keep them (the JSON as received, decoded by
// Claims, rendered again by ClaimsJSON).
func entrySize(e *cacheEntry) int64 {
	size := int64(entryOverhead) + int64(len(e.key.token))
	if e.refusal != nil {
		size += int64(len(e.refusal.Error()))
	}
	if id := e.identity; id != nil {
		size += id.textSize() + claimsSize(id.claimsJSON)
	}
	return size
}

// claimsSize estimates what claims hold: the JSON itself; decoded, its
// text again and each value (counted by the punctuation that starts or
// separates values, a count on the high side) at decodedValueCost;
// rendered again, the text once more, with <, > and & escaped in six bytes
// each; and a fourth time the text for what the allocator rounds up.
func claimsSize(claims []byte) int64 {
	values, escaped := 1, 0
	for _, b := range claims {
		switch b {
		case ',', ':', '[', '{':
			values++
		case '<', '>', '&':
			escaped++
		}
	}
	return int64(4*len(claims) + values*decodedValueCost + 5*escaped)
}
