package verify

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// How long Clerk's "no" to an opaque credential is remembered (see
// refusalMemory). A credential Clerk does not know, or knows revoked or
// expired, or refuses as malformed, cannot become valid later: Clerk's
// SDK and API have no way back from any of these, and the machines a token
// is granted to are fixed when it is minted. The one risk is a token
// minted a moment ago that the Clerk server asked does not know yet. So
// the first "no" is remembered for negativeTTL, too short to matter for
// such a token; each "no" Clerk gives again, asked once the last stopped
// answering, twice as long as the last, up to maxRefusalMemory: a token
// refused wrongly is refused at most about as long again as Clerk took to
// learn it, and a client retrying a dead token in a loop costs a dozen
// calls to Clerk an hour at most, then one an hour.
const (
	negativeTTL      = time.Second
	maxRefusalMemory = time.Hour
)

// scope names what makes a Verifier's verdicts valid (see Verifier.scope):
// Verifiers of one scope answer from each other's cached verdicts, and
// from no others'.
type scope [16]byte

// cacheKey is a verdict's key: the Verifier's scope and the credential
// itself. The cache's index hashes it with Go's map hash, seeded at random
// for each index, so no one can craft credentials that collide to slow the
// lookups down, and compares the whole credential on a match, so that a
// verdict answers for that very credential and no other. A lookup hashes
// the credential as the request holds it, in far less time than a SHA-256
// of it would take; the cache holds a copy of each credential it
// remembers, in memory only (see compact), for no longer than the
// verdict.
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
	// refusedFor is, for Clerk's refusal, how long it answers; it is kept
	// as long again after, so that Clerk's next "no" is remembered twice
	// as long (refusalMemory).
	refusedFor time.Duration
	size       int64  // what the entry holds in memory, estimated (entrySize)
	hash       uint64 // of key, in the cache's index; set by put

	// referenced is set on every hit and cleared by eviction, which gives
	// entries in use a second chance (the CLOCK approximation of LRU)
	// without a lock on hits.
	referenced atomic.Bool
	kind       verdictKind // set by put

	prev, next *cacheEntry // in its kind's eviction order
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

// expired reports whether the entry is of no more use: it answers no
// more, and a refusal of Clerk's is past the time it is kept after.
func (e *cacheEntry) expired(now time.Time) bool { return !now.Before(e.until.Add(e.refusedFor)) }

// verdictKind sorts verdicts by what it takes to make many of them.
type verdictKind uint8

const (
	// cheapVerdict: a JWT's (any machine of the instance can mint many, as
	// large as it likes, without asking Clerk) and every refusal (anyone
	// can send junk).
	cheapVerdict verdictKind = iota
	// paidVerdict: an opaque credential Clerk accepted (asked here, or by
	// a gateway sharing the Store): each took a call to Clerk, within the
	// Pool's budget, for a credential that is valid.
	paidVerdict
	verdictKinds
)

// kindOf is the kind of a verdict.
func (e *cacheEntry) kindOf() verdictKind {
	if e.identity != nil && e.identity.Format == Opaque {
		return paidVerdict
	}
	return cheapVerdict
}

// verdictCache remembers verdicts on credentials, keyed by the scope of
// the Verifier and the credential, bounded by an estimate of the memory
// its entries hold. Each kind of verdict has half of the bound to itself,
// and may use what the other leaves free: when the cache is full, room is
// made in the kind that holds more than its half, so that what is cheap
// to make (JWTs, refusals) never pushes the verdicts Clerk was asked for
// below half of the bound, and the other way round. Lookups take no lock
// (see verdictIndex). Expired entries are dropped as they reach the front
// of their kind's order when an entry is added, and all of them when the
// cache is swept (by Pool.Run).
type verdictCache struct {
	maxBytes int64
	now      func() time.Time

	mu      sync.Mutex                 // held to change the cache; lookups take none
	entries *verdictIndex              // changed under mu
	orders  [verdictKinds]verdictOrder // eviction order of each kind, oldest first
	bytes   [verdictKinds]int64        // the sum of each kind's entries' sizes
	closed  bool

	seen *doorkeeper // the JWTs offered once (seenBefore)
}

func newVerdictCache(maxBytes int64, now func() time.Time) *verdictCache {
	return &verdictCache{maxBytes: maxBytes, now: now, entries: newVerdictIndex(), seen: newDoorkeeper(maxBytes)}
}

// verdictOrder is a list of entries, linked through the entries
// themselves (no element is allocated for each, as container/list does).
type verdictOrder struct {
	front, back *cacheEntry
	len         int
}

func (o *verdictOrder) pushBack(e *cacheEntry) {
	e.prev, e.next = o.back, nil
	if o.back != nil {
		o.back.next = e
	} else {
		o.front = e
	}
	o.back = e
	o.len++
}

func (o *verdictOrder) remove(e *cacheEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		o.front = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		o.back = e.prev
	}
	e.prev, e.next = nil, nil
	o.len--
}

// hash is the hash of key in the cache, for get and seenBefore: a lookup
// that misses hashes the credential once for both.
func (c *verdictCache) hash(key cacheKey) uint64 { return c.entries.hash(key) }

// get returns the entry for key, whose hash is hash, if it may answer at
// now.
func (c *verdictCache) get(key cacheKey, hash uint64, now time.Time) *cacheEntry {
	entry := c.entries.find(key, hash)
	if entry == nil || !entry.usable(now) {
		return nil
	}
	if !entry.referenced.Load() {
		entry.referenced.Store(true)
	}
	return entry
}

// peek returns the entry for key, whether it may answer or not.
func (c *verdictCache) peek(key cacheKey) *cacheEntry {
	return c.entries.find(key, c.entries.hash(key))
}

// refusalMemory is how long Clerk's refusal at now of the credential of
// key is remembered: negativeTTL, or twice as long as the last refusal,
// if it is still kept, up to maxRefusalMemory (see negativeTTL).
func (c *verdictCache) refusalMemory(key cacheKey, now time.Time) time.Duration {
	if last := c.peek(key); last != nil && last.refusedFor > 0 && !last.expired(now) {
		return min(2*last.refusedFor, maxRefusalMemory)
	}
	return negativeTTL
}

// seenBefore reports whether the key of hash was offered before, recently
// enough to be remembered (doorkeeper), and remembers it if not. A verdict that
// costs no call to Clerk to make again (a JWT's) is put only then, from
// its second use: a credential used once (and a flood of them) takes no
// place in the cache, nor pushes a verdict in use out, nor costs the
// memory and the insertion a verdict does.
func (c *verdictCache) seenBefore(hash uint64) bool { return c.seen.seenBefore(hash) }

// put stores entry, replacing any entry for the same key, dropping the
// entries at the fronts that are expired at now and evicting others until
// the entries fit the bound. An entry larger than half the bound is not
// kept.
func (c *verdictCache) put(entry *cacheEntry, now time.Time) {
	entry.compact()
	entry.size, entry.kind, entry.hash = entrySize(entry), entry.kindOf(), c.entries.hash(entry.key)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.entries.find(entry.key, entry.hash); old != nil {
		c.remove(old)
	}
	if c.closed || entry.size > c.maxBytes/2 {
		return
	}
	for kind := range c.orders {
		c.dropExpiredFront(&c.orders[kind], now)
	}
	for c.bytes[cheapVerdict]+c.bytes[paidVerdict]+entry.size > c.maxBytes {
		if !c.evictOne(c.givingWay(entry)) {
			return // cannot happen (see givingWay); never loop for it
		}
	}
	c.entries.add(entry)
	c.orders[entry.kind].pushBack(entry)
	c.bytes[entry.kind] += entry.size
}

// givingWay is the kind that makes room for entry in a full cache: the
// entry's own, if with it its kind holds more than half the bound (then
// it holds some, the entry being no larger than half); else the other,
// which then holds more than half.
func (c *verdictCache) givingWay(entry *cacheEntry) verdictKind {
	if c.bytes[entry.kind]+entry.size > c.maxBytes/2 {
		return entry.kind
	}
	return 1 - entry.kind
}

// drop forgets the entry of key.
func (c *verdictCache) drop(key cacheKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if entry := c.entries.find(key, c.entries.hash(key)); entry != nil {
		c.remove(entry)
	}
}

// dropExpiredFront removes the expired entries at the front of order:
// entries are added in time order and most of one kind live alike, so the
// front is where the expired ones gather.
func (c *verdictCache) dropExpiredFront(order *verdictOrder, now time.Time) {
	for order.front != nil && order.front.expired(now) {
		c.remove(order.front)
	}
}

// sweep removes every expired entry.
func (c *verdictCache) sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for kind := range c.orders {
		for entry := c.orders[kind].front; entry != nil; {
			next := entry.next
			if entry.expired(now) {
				c.remove(entry)
			}
			entry = next
		}
	}
}

// close forgets every entry; nothing is kept after.
func (c *verdictCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.entries.clear()
	c.orders = [verdictKinds]verdictOrder{}
	c.bytes = [verdictKinds]int64{}
}

// evictOne removes one entry of kind, and reports whether there was one:
// the oldest that was not used since eviction last passed it. After two
// passes over the entries (hits keep setting the flag concurrently) it
// removes the oldest regardless.
func (c *verdictCache) evictOne(kind verdictKind) bool {
	order := &c.orders[kind]
	for chances := 2 * order.len; chances > 0; chances-- {
		front := order.front
		if !front.referenced.Swap(false) {
			c.remove(front)
			return true
		}
		order.remove(front)
		order.pushBack(front)
	}
	if order.front != nil {
		c.remove(order.front)
		return true
	}
	return false
}

func (c *verdictCache) remove(entry *cacheEntry) {
	c.orders[entry.kind].remove(entry)
	c.entries.remove(entry)
	c.bytes[entry.kind] -= entry.size
}

// compact puts the credential of an entry and its identity's text (its
// strings, scopes and claims) in one allocation of their own, each string
// pointing into it: the credential may be part of a larger string (a
// Cookie header) that the cache must not keep alive, and one allocation
// in place of one for each is less for the collector to trace, and rounds
// up once. The entry and its identity are not yet shared with anyone.
func (e *cacheEntry) compact() {
	var room [16]*string
	texts, size := e.texts(room[:0])
	var text strings.Builder
	text.Grow(size)
	for _, s := range texts {
		text.WriteString(*s)
	}
	all, at := text.String(), 0
	for _, s := range texts {
		*s, at = all[at:at+len(*s)], at+len(*s)
	}
}

// texts appends pointers to the entry's text to list: its credential and
// its identity's (Identity.texts); and tells their length.
func (e *cacheEntry) texts(list []*string) ([]*string, int) {
	list = append(list, &e.key.token)
	if e.identity != nil {
		list = e.identity.texts(list)
	}
	size := 0
	for _, s := range list {
		size += len(*s)
	}
	return list, size
}

// Estimates of what a cache entry holds, in bytes.
const (
	// entryOverhead is what every entry holds whatever its credential: the
	// entry, its slot in the map (at the map's lowest load), the Identity
	// with its fixed fields, and its decoded claims' fixed part.
	entryOverhead = 640
	// decodedValueCost is what one JSON value of the claims costs once
	// decoded (Identity.Claims): an interface, a boxed value or a string
	// header, a map slot or a slice element, and the slack of growth
	// (about half of it, measured).
	decodedValueCost = 64
)

// entrySize estimates the memory an entry holds, on the high side: the
// fixed overhead; its text (compact), and an eighth more for what the
// allocator rounds it up to; the list of scopes; a refusal's text; and the
// claims in the two forms an Identity may keep them besides their text
// (decoded by Claims, rendered again by ClaimsJSON).
func entrySize(e *cacheEntry) int64 {
	var room [16]*string
	_, text := e.texts(room[:0])
	size := int64(entryOverhead + text + text/8)
	if e.refusal != nil {
		size += int64(len(e.refusal.Error()))
	}
	if id := e.identity; id != nil {
		size += int64(len(id.Scopes))*int64(unsafe.Sizeof("")) + claimsSize(id.claimsJSON)
	}
	return size
}

// claimsSize estimates what claims hold beside their JSON: decoded, its
// text again and each value (counted by the punctuation that starts or
// separates values, a count on the high side) at decodedValueCost;
// rendered again, the text once more, with <, > and & escaped in six bytes
// each; and the text once more for what the allocator rounds up.
func claimsSize(claims string) int64 {
	values, escaped := 1, 0
	for i := 0; i < len(claims); i++ {
		switch claims[i] {
		case ',', ':', '[', '{':
			values++
		case '<', '>', '&':
			escaped++
		}
	}
	return int64(3*len(claims) + values*decodedValueCost + 5*escaped)
}
