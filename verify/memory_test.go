package verify

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// TestVerdictMemory measures the live heap a cached verdict holds, for an
// M2M JWT of Clerk's shape and for an opaque M2M token, verified through
// the whole pipeline into a cache large enough to keep them all: it must
// stay within what the cache counts for it (so that cache_max_bytes bounds
// the memory), and within the goal set from the credential's own size: no
// more than the credential, which the cache must keep to compare, and
// verdictGoalOverhead for its identity and its place in the cache.
func TestVerdictMemory(t *testing.T) {
	const verdictGoalOverhead = 768
	private, _ := signingKeys(t)
	const verdicts = 400
	expiration := testNow.Add(time.Hour).UnixMilli()
	for _, tc := range []struct {
		format     Format
		credential func(i int) string
	}{
		{JWT, func(i int) string {
			return sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"jti": fmt.Sprintf("mt_%032x", i)}))
		}},
		{Opaque, func(i int) string { return fmt.Sprintf("mt_%032x", i) }},
	} {
		t.Run(string(tc.format), func(t *testing.T) {
			credentials := make([]string, verdicts)
			for i := range credentials {
				credentials[i] = tc.credential(i)
			}
			clerk := &fakeClerk{m2m: m2mAnswer(func(a *backend.M2MToken) {
				a.Scopes, a.Claims, a.Expiration = []string{"mch_1xxxxx"}, nil, &expiration
			})}
			pool, err := NewPool(PoolOptions{CacheMaxBytes: 1 << 30, MaxClerkRate: 1 << 20})
			require.NoError(t, err)
			v := newVerifier(t, Options{MachineSecretKey: testMachineKey, clerk: clerk, keys: keysFor(private, ""),
				CacheTTL: new(time.Hour), Pool: pool})
			before := heapInUse()
			for _, credential := range credentials {
				keep(t, v, credential)
			}
			held := heapInUse() - before
			runtime.KeepAlive(credentials)
			require.Equal(t, verdicts, pool.cache.len())
			perVerdict, counted := held/verdicts, pool.cache.held()/verdicts
			t.Logf("%s of %d bytes: a verdict holds %d bytes of live heap, counted %d", tc.format, len(credentials[0]), perVerdict, counted)
			assert.LessOrEqual(t, perVerdict, counted, "the cache counts no less than a verdict holds")
			assert.LessOrEqual(t, perVerdict, int64(len(credentials[0])+verdictGoalOverhead), "the goal")
		})
	}
}
