package redis

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
)

// expiredEntries is how many expired verdicts the sweep's test plants.
const expiredEntries = 100_000

// TestTheSweepEmptiesAHundredThousandEntriesFromRedis: 100,000 expired
// verdicts planted in Redis as the storage writes them, in the folders of
// two past minutes, are all removed by a gateway's first sweep, without a
// key left behind, while a live verdict stays shared. It logs how long the
// sweep took (most of the test is the wait for it: a minute or so after
// Caddy starts), the Redis commands it made and the gateway's memory.
func TestTheSweepEmptiesAHundredThousandEntriesFromRedis(t *testing.T) {
	f := newFleet(t)
	minute := time.Now().Add(-5*time.Minute).Unix() / 60
	plant(t, f.redis, expiredEntries, minute-1, minute)
	planted := f.redis.dbSize()

	gateway := f.gateway("", "")
	token := f.token(f.callerA)
	require.Equal(t, http.StatusOK, f.status(gateway, token, f.callerA))
	f.redis.waitForEntries(expiredEntries + 1)
	before, peakBefore := f.redis.commands(), memory(t, gateway, "VmHWM")

	// Polled with commands the sweep does not use, so as not to count them.
	var began, ended time.Time
	require.Eventually(t, func() bool {
		if began.IsZero() && f.redis.dbSize() < planted {
			began = time.Now()
		}
		ended = time.Now()
		return f.redis.zcard(folderKey(minute-1)) == 0 && f.redis.zcard(folderKey(minute)) == 0
	}, 5*time.Minute, 20*time.Millisecond, "the first sweep, within a minute or so of the start, empties the past folders")
	after, peakAfter := f.redis.commands(), memory(t, gateway, "VmHWM")
	require.Eventually(t, func() bool { return len(f.redis.keys(entriesPattern)) == 1 }, hung, 10*time.Millisecond,
		"its last entries go with them, and the live verdict stays")

	assert.NotContains(t, f.redis.members(keyPrefix+"/clerk_m2m/verdicts"), fmt.Sprint(minute)+"/", "no past minute left listed")
	second := f.gateway("", "")
	assert.Equal(t, http.StatusOK, f.status(second, token, f.callerA))
	assert.Equal(t, 1, f.clerk.Calls(verifyPath), "and shared")

	var sweep []string
	total := 0
	for _, command := range []string{"zrange", "zrem", "exists", "del", "get", "set"} {
		if n := after[command] - before[command]; n > 0 {
			sweep = append(sweep, fmt.Sprintf("%s %d", strings.ToUpper(command), n))
			total += n
		}
	}
	took, floor := ended.Sub(began), f.redis.roundTrips(expiredEntries)
	t.Logf("the sweep of %d expired entries in Redis: about %v (%.0f removals a second), %.1f times the time of "+
		"as many round trips to Redis one after the other (%v); %d commands (%.1f an entry: %s); "+
		"the gateway's peak resident memory %.1f MiB before, %.1f MiB after",
		expiredEntries, took.Round(100*time.Millisecond), expiredEntries/took.Seconds(), took.Seconds()/floor.Seconds(),
		floor.Round(100*time.Millisecond), total, float64(total)/expiredEntries, strings.Join(sweep, ", "), peakBefore/1024, peakAfter/1024)
}

// roundTrips is how long n commands to Redis take, one after the other:
// the floor of removing n entries one by one.
func (r *redisServer) roundTrips(n int) time.Duration {
	r.t.Helper()
	start := time.Now()
	for range n {
		require.NoError(r.t, r.client.Ping(r.t.Context()).Err())
	}
	return time.Since(start)
}

// plant stores n expired verdicts through the Redis storage module itself
// (so that they lie as a gateway's would), spread over the folders of
// minutes, each with a scope of its own, 32 writes at a time.
func plant(t *testing.T, r *redisServer, n int, minutes ...int64) {
	t.Helper()
	storage := redisStorage(t, r)
	entry := []byte(strings.Repeat("e", 400)) // about a verdict's size; the sweep never reads it
	keys := make(chan string)
	var writers sync.WaitGroup
	var failed sync.Once
	for range 32 {
		writers.Go(func() {
			for key := range keys {
				if err := storage.Store(r.t.Context(), key, entry); err != nil {
					failed.Do(func() { t.Errorf("planting %s: %v", key, err) })
				}
			}
		})
	}
	for i := range n {
		minute := minutes[i%len(minutes)]
		keys <- fmt.Sprintf("clerk_m2m/verdicts/%d/%064x/%064x", minute, minute, i)
	}
	close(keys)
	writers.Wait()
}

// redisStorage is the Redis storage module on r, as the gateways load it.
func redisStorage(t *testing.T, r *redisServer) certmagic.Storage {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: r.t.Context()})
	t.Cleanup(cancel)
	config, err := json.Marshal(map[string]any{"address": []string{r.address()}, "key_prefix": keyPrefix})
	require.NoError(t, err)
	module, err := ctx.LoadModuleByID("caddy.storage.redis", config)
	require.NoError(t, err)
	storage, err := module.(caddy.StorageConverter).CertMagicStorage()
	require.NoError(t, err)
	return storage
}

// folderKey is the key of the index of a minute's folder of verdicts.
func folderKey(minute int64) string {
	return fmt.Sprintf("%s/clerk_m2m/verdicts/%d", keyPrefix, minute)
}

// zcard is how many members the sorted set key has: 0 once it is gone.
func (r *redisServer) zcard(key string) int64 {
	r.t.Helper()
	n, err := r.client.ZCard(r.t.Context(), key).Result()
	require.NoError(r.t, err)
	return n
}

// dbSize is how many keys Redis holds.
func (r *redisServer) dbSize() int64 {
	r.t.Helper()
	n, err := r.client.DBSize(r.t.Context()).Result()
	require.NoError(r.t, err)
	return n
}

// members lists the members of a sorted set: a folder's index, in the
// Redis storage.
func (r *redisServer) members(key string) []string {
	r.t.Helper()
	members, err := r.client.ZRange(r.t.Context(), key, 0, -1).Result()
	require.NoError(r.t, err)
	return members
}

// commands counts the commands Redis has run, by name (INFO commandstats).
func (r *redisServer) commands() map[string]int {
	r.t.Helper()
	info, err := r.client.Info(r.t.Context(), "commandstats").Result()
	require.NoError(r.t, err)
	counts := map[string]int{}
	for line := range strings.Lines(info) {
		name, stats, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(stats, ",")
		counts[name], err = strconv.Atoi(calls)
		require.NoError(r.t, err)
	}
	return counts
}

// memory reads a field of the process's /proc status, in KiB (VmHWM: its
// peak resident memory so far).
func memory(t *testing.T, p *caddyproc.Process, field string) float64 {
	t.Helper()
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid()))
	require.NoError(t, err)
	defer status.Close()
	lines := bufio.NewScanner(status)
	for lines.Scan() {
		if value, ok := strings.CutPrefix(lines.Text(), field+":"); ok {
			kib, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 64)
			require.NoError(t, err)
			return kib
		}
	}
	t.Fatalf("no %s in the process's status", field)
	return 0
}
