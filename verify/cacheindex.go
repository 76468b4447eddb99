package verify

import (
	"hash/maphash"
	"math/bits"
	"sync/atomic"
)

// verdictIndex finds the cache's entries by key, for lookups that take no
// lock: every request answered from the cache looks one up, and a lock,
// even one only read, is a word every core writes. It is a table of
// pointers to the entries, probed linearly from the hash of the key (Go's
// own hash of it, seeded at random for each index, so that no one can
// make credentials collide), each slot read and written atomically, the
// table replaced whole when it must grow. Each entry keeps the hash of
// its key, so that removing one (when it is evicted, long after it was
// last read) finds its slot without reading its credential again, and a
// slot holds one pointer for the collector to trace, not a key and a
// value. Only the cache changes it, under its lock.
type verdictIndex struct {
	seed  maphash.Seed
	table atomic.Pointer[indexTable]
	live  int // entries held
	used  int // slots that are not empty: the entries and the removed
}

// indexTable is the index's table: a power of two of slots, at most half
// of them used, so that a probe always ends at an empty slot.
type indexTable struct {
	slots []atomic.Pointer[cacheEntry]
	mask  uint64
}

// removed marks the slot of a removed entry, which probes go on past.
var removed = new(cacheEntry)

// minIndexSlots is the size of an index's first table.
const minIndexSlots = 16

func newVerdictIndex() *verdictIndex {
	x := &verdictIndex{seed: maphash.MakeSeed()}
	x.table.Store(newIndexTable(minIndexSlots))
	return x
}

func newIndexTable(size int) *indexTable {
	return &indexTable{slots: make([]atomic.Pointer[cacheEntry], size), mask: uint64(size - 1)}
}

func (x *verdictIndex) hash(key cacheKey) uint64 { return maphash.Comparable(x.seed, key) }

// find returns the entry of key, or nil. It takes no lock: while the
// cache changes the index, it may miss an entry being added, or find one
// being removed, as it would a moment earlier or later.
func (x *verdictIndex) find(key cacheKey, hash uint64) *cacheEntry {
	t := x.table.Load()
	for i := hash & t.mask; ; i = (i + 1) & t.mask {
		switch entry := t.slots[i].Load(); {
		case entry == nil:
			return nil
		case entry != removed && entry.hash == hash && entry.key == key:
			return entry
		}
	}
}

// add indexes entry, whose key no entry indexed has, by entry.hash.
func (x *verdictIndex) add(entry *cacheEntry) {
	if 2*(x.used+1) > len(x.table.Load().slots) {
		x.rebuild()
	}
	t := x.table.Load()
	for i := entry.hash & t.mask; ; i = (i + 1) & t.mask {
		switch t.slots[i].Load() {
		case nil:
			x.used++
			fallthrough
		case removed:
			t.slots[i].Store(entry)
			x.live++
			return
		}
	}
}

// remove drops entry, which is indexed, from the index: by its hash and
// its address, reading nothing of its key.
func (x *verdictIndex) remove(entry *cacheEntry) {
	t := x.table.Load()
	for i := entry.hash & t.mask; ; i = (i + 1) & t.mask {
		if t.slots[i].Load() == entry {
			t.slots[i].Store(removed)
			x.live--
			return
		}
	}
}

// rebuild replaces the table with one whose entries fill less than a
// third of its slots (and at least a sixth: a power of two over three
// times their number), leaving out the removed: lookups under way finish
// in the old one, which no longer changes.
func (x *verdictIndex) rebuild() {
	old := x.table.Load()
	t := newIndexTable(max(minIndexSlots, 1<<bits.Len(uint(3*x.live))))
	for i := range old.slots {
		if entry := old.slots[i].Load(); entry != nil && entry != removed {
			j := entry.hash & t.mask
			for t.slots[j].Load() != nil {
				j = (j + 1) & t.mask
			}
			t.slots[j].Store(entry)
		}
	}
	x.used = x.live
	x.table.Store(t)
}

// clear forgets every entry.
func (x *verdictIndex) clear() {
	x.table.Store(newIndexTable(minIndexSlots))
	x.live, x.used = 0, 0
}
