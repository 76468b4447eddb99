package verify

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func indexed(x *verdictIndex, token string) *cacheEntry {
	entry := &cacheEntry{key: cacheKey{token: token}}
	entry.hash = x.hash(entry.key)
	x.add(entry)
	return entry
}

// TestVerdictIndexFindsWhatItHolds: entries are found by their key through
// growth, removed ones are not, and their slots are reclaimed when the
// table is rebuilt.
func TestVerdictIndexFindsWhatItHolds(t *testing.T) {
	x := newVerdictIndex()
	var entries []*cacheEntry
	for i := range 1000 {
		entries = append(entries, indexed(x, fmt.Sprintf("mt_%d", i)))
	}
	for i, entry := range entries {
		require.Same(t, entry, x.find(entry.key, entry.hash), i)
		if i%2 == 0 {
			x.remove(entry)
		}
	}
	assert.Nil(t, x.find(cacheKey{token: "mt_1000"}, x.hash(cacheKey{token: "mt_1000"})))
	assert.Nil(t, x.find(cacheKey{scope: scope{1}, token: "mt_1"}, x.hash(cacheKey{scope: scope{1}, token: "mt_1"})), "another scope's")
	for i, entry := range entries {
		if found := x.find(entry.key, entry.hash); i%2 == 0 {
			assert.Nil(t, found, i)
		} else {
			assert.Same(t, entry, found, i)
		}
	}
	assert.Equal(t, 500, x.live)
	x.rebuild()
	assert.Equal(t, x.live, x.used, "the removed entries' slots are free again")
	for i := 1; i < len(entries); i += 2 {
		require.Same(t, entries[i], x.find(entries[i].key, entries[i].hash), i)
	}
}

// TestVerdictIndexTellsCollidingKeysApart: keys of the same hash are
// told apart by the keys themselves, and an entry is removed by its
// address, whatever its key.
func TestVerdictIndexTellsCollidingKeysApart(t *testing.T) {
	x := newVerdictIndex()
	a := &cacheEntry{key: cacheKey{token: "mt_a"}, hash: 7}
	b := &cacheEntry{key: cacheKey{token: "mt_b"}, hash: 7}
	x.add(a)
	x.add(b)
	assert.Same(t, a, x.find(a.key, 7))
	assert.Same(t, b, x.find(b.key, 7))
	assert.Nil(t, x.find(cacheKey{token: "mt_c"}, 7))
	a.key = cacheKey{} // removal reads no key
	x.remove(a)
	assert.Nil(t, x.find(cacheKey{token: "mt_a"}, 7))
	assert.Same(t, b, x.find(b.key, 7), "found past the removed entry's slot")
}

// TestVerdictIndexLookupsDuringChanges: lookups, which take no lock, find
// every entry that stays while others come and go and the table grows
// and is rebuilt under them (run with -race).
func TestVerdictIndexLookupsDuringChanges(t *testing.T) {
	c := newVerdictCache(1<<40, fixedClock)
	var staying []*cacheEntry
	c.mu.Lock()
	for i := range 64 {
		staying = append(staying, indexed(c.entries, fmt.Sprintf("mt_stays_%d", i)))
	}
	c.mu.Unlock()
	done := make(chan struct{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				for _, entry := range staying {
					if c.entries.find(entry.key, c.entries.hash(entry.key)) != entry {
						t.Errorf("%s was not found", entry.key.token)
						return
					}
				}
				select {
				case <-done:
					return
				default:
				}
			}
		})
	}
	for i := range 5000 {
		c.mu.Lock()
		coming := indexed(c.entries, fmt.Sprintf("mt_comes_%d", i))
		if i%3 != 0 {
			c.entries.remove(coming)
		}
		c.mu.Unlock()
	}
	close(done)
	readers.Wait()
}
