package verify

import (
	"math/bits"
	"sync/atomic"
)

// doorkeeper remembers which keys were offered to the cache, in a Bloom
// filter: a key sets doorkeeperProbes bits of a bitmap, chosen by its
// hash, and a key whose bits are all set was offered before (or, for
// fewer than one key in 5,000 when the filter is fullest, its bits were
// all set by others: such a key is kept at its first use, which costs
// nothing but its place). It forgets every key at once when it has taken
// in its limit of them, so that its bits never fill up: a key offered
// again before that is seen. Bits are only ever set between two resets,
// never taken back, so no two keys can keep each other out.
//
// Its limit is one key per KiB of the cache's bound, at least 1,024: more
// than twice the verdicts on JWTs the cache holds (each is counted over
// 2 KiB), so that a fleet whose verdicts fit the cache has each kept from
// its second use, unless a reset fell between its first two, and then
// from its third; and a flood of keys used once, more than the cache
// could keep, takes no place in it. It takes 4 bytes per key of its limit,
// rounded up to a power of two (256 KiB beside the default bound of
// 64 MiB, at most 1/128 of any bound of 1 MiB or more), its words read
// and written atomically, without the cache's lock.
type doorkeeper struct {
	words []atomic.Uint64
	mask  uint64       // of a bit's number
	added atomic.Int64 // keys taken in since the last reset
	limit int64
}

const (
	doorkeeperProbes     = 4
	doorkeeperBitsPerKey = 32
	minDoorkeeperKeys    = 1 << 10
	maxDoorkeeperKeys    = 1 << 24
)

func newDoorkeeper(maxBytes int64) *doorkeeper {
	keys := min(max(maxBytes>>10, minDoorkeeperKeys), maxDoorkeeperKeys)
	size := bits.Len64(uint64(keys*doorkeeperBitsPerKey) - 1) // bits, a power of two
	return &doorkeeper{words: make([]atomic.Uint64, 1<<size/64), mask: 1<<size - 1, limit: keys}
}

// seenBefore reports whether hash was offered since the last reset, and
// takes it in if not.
func (d *doorkeeper) seenBefore(hash uint64) bool {
	seen := true
	step := hash>>32 | 1 // the bits after the first, by double hashing
	for i := range uint64(doorkeeperProbes) {
		bit := (hash + i*step) & d.mask
		word, mask := &d.words[bit/64], uint64(1)<<(bit%64)
		if word.Load()&mask == 0 {
			seen = false
			word.Or(mask)
		}
	}
	if !seen && d.added.Add(1) == d.limit {
		d.reset()
	}
	return seen
}

// reset forgets every key. Keys offered meanwhile may be seen or not, as
// they would be a moment earlier or later; the one call that took in the
// limit's key resets.
func (d *doorkeeper) reset() {
	for i := range d.words {
		d.words[i].Store(0)
	}
	d.added.Store(0)
}
