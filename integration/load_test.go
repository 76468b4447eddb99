package integration

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// loadCaddyfile lets the load's 64 clients, one client to Caddy (one IP
// address, which gets half of each bound), ask Clerk as often and as many
// at once as they need: what it checks is that nothing is let through and
// nothing leaks.
var loadCaddyfile = globals(errorLog) + `
http://{{GATEWAY}} {
	clerk_m2m {
		secret_key {{SECRET}}
		machine_secret_key {{GATEWAY_KEY}}
		api_url {{CLERK}}
		cache_ttl 1s
		max_clerk_calls 128
		max_clerk_rate 100000
	}
	respond "through"
}
`

// TestLoadWithFaults drives 64 concurrent clients through Caddy while Clerk
// alternates between healthy and failing every second, and checks that no
// request is let through unverified, that no request gets a 5xx while Clerk
// is healthy, and that goroutines and memory do not grow. It runs for
// CLERK_M2M_LOAD_DURATION (default 6s; the closing notes use 30s).
func TestLoadWithFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("a load run")
	}
	duration := 6 * time.Second
	if value := os.Getenv("CLERK_M2M_LOAD_DURATION"); value != "" {
		var err error
		duration, err = time.ParseDuration(value)
		require.NoError(t, err)
	}
	e := newEnv(t)
	e.load(loadCaddyfile)
	credentials := newLoadCredentials(e, int(duration/loadPhase)+2)
	get := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, gatewayURL("/"), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := e.client.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// A first, shorter run fills the caches and whatever else grows with
	// use; the resting state after it is the baseline, so that growth after
	// the main run means a leak.
	warmup := loadRun(t, e.clerk, get, credentials, 2*time.Second)
	e.clerk.ResetCalls() // the fake's own log of requests is not the module's memory
	before, resentBefore := atRest(e), resends(e.client)
	run := loadRun(t, e.clerk, get, credentials, duration)
	e.clerk.ResetCalls()
	after := atRest(e)

	t.Logf("warm-up: %d requests; main run: %d requests in %s with Clerk failing every other second; answers by status: %v",
		warmup.sent, run.sent, duration, run.statuses)
	t.Logf("at rest before and after the main run: goroutines %d → %d; heap in use %.1f → %.1f MiB; RSS %.1f → %.1f MiB",
		before.goroutines, after.goroutines, mib(before.heapInUse), mib(after.heapInUse), mib(before.rss), mib(after.rss))
	for _, r := range []loadResult{warmup, run} {
		assert.Zero(t, r.letThrough, "requests let through with a token that is not valid")
		assert.Zero(t, r.healthy5xx, "5xx answers while Clerk was healthy")
		assert.Zero(t, r.statuses[0], "requests that got no answer")
	}
	assert.Equal(t, resentBefore, resends(e.client), "connections dropped unanswered under load (resent by the client)")
	assert.Positive(t, run.statuses[http.StatusOK])
	assert.Positive(t, run.statuses[http.StatusServiceUnavailable], "Clerk's failures were noticed")
	assert.LessOrEqual(t, after.goroutines, before.goroutines+before.goroutines/5, "goroutines grew")
	assert.Less(t, int64(after.heapInUse)-int64(before.heapInUse), int64(32<<20), "memory grew")
}

// loadResult is what a load run saw.
type loadResult struct {
	sent, letThrough, healthy5xx int64
	statuses                     map[int]int
}

// loadPhase is how long Clerk stays healthy, then failing, in a load run.
const loadPhase = time.Second

// loadCredentials are what the clients of a load run present, a third of
// them not valid: opaque tokens of each phase's own, so that no request can
// share a call to Clerk begun in another phase, and JWTs, which need none.
type loadCredentials struct {
	valid, forged [][]string // by phase
	isValid       map[string]bool
}

func newLoadCredentials(e *env, phases int) *loadCredentials {
	other := backendtest.New() // another instance, whose JWTs are forgeries here
	e.t.Cleanup(other.Close)
	granted := backendtest.TokenOptions{Scopes: []string{e.gateway.ID}, TTL: time.Hour}
	var jwts, forgedJWTs []string
	for range 20 {
		jwts = append(jwts, e.clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: granted}))
		forgedJWTs = append(forgedJWTs, other.MintM2MJWT(other.NewMachine("x"), backendtest.JWTOptions{TokenOptions: granted}))
	}
	c := &loadCredentials{isValid: map[string]bool{}}
	for range phases {
		valid, forged := slices.Clone(jwts), slices.Clone(forgedJWTs)
		for range 100 {
			token, _ := e.clerk.CreateM2MToken(e.caller, granted)
			valid = append(valid, token)
			forged = append(forged, fmt.Sprintf("mt_%032x", rand.Uint64()))
		}
		for _, token := range valid {
			c.isValid[token] = true
		}
		c.valid, c.forged = append(c.valid, valid), append(c.forged, forged)
	}
	return c
}

// pick draws a credential of phase.
func (c *loadCredentials) pick(phase int64) string {
	if rand.IntN(3) == 0 {
		return c.forged[phase][rand.IntN(len(c.forged[phase]))]
	}
	return c.valid[phase][rand.IntN(len(c.valid[phase]))]
}

// loadRun drives 64 concurrent clients for duration while Clerk alternates
// between healthy and failing every loadPhase. A request counts as a 5xx
// while Clerk was healthy when its phase was a healthy one from its start
// to its end: its credential is of that phase, so the calls to Clerk it may
// have waited for were all made in it.
func loadRun(t *testing.T, clerk *backendtest.Server, get func(string) int, credentials *loadCredentials,
	duration time.Duration) loadResult {
	t.Helper()
	var phase atomic.Int64 // even: Clerk healthy
	stop := make(chan struct{})
	var switcher sync.WaitGroup
	switcher.Go(func() {
		ticker := time.NewTicker(loadPhase)
		defer ticker.Stop()
		for {
			select {
			case <-stop:
				clerk.ClearFaults()
				return
			case <-ticker.C:
				// No request may see a healthy phase while Clerk fails:
				// the phase changes after Clerk recovers, before it fails.
				if phase.Load()%2 == 0 {
					phase.Add(1)
					clerk.SetFault(backendtest.Fault{Status: http.StatusServiceUnavailable})
				} else {
					clerk.ClearFaults()
					phase.Add(1)
				}
			}
		}
	})

	var mu sync.Mutex
	result := loadResult{statuses: map[int]int{}}
	var sent, letThrough, healthy5xx atomic.Int64
	deadline := time.Now().Add(duration)
	var clients sync.WaitGroup
	for range 64 {
		clients.Go(func() {
			for time.Now().Before(deadline) {
				before := phase.Load()
				token := credentials.pick(before)
				status := get(token)
				sent.Add(1)
				if status == http.StatusOK && !credentials.isValid[token] {
					letThrough.Add(1)
				}
				if status >= 500 && before%2 == 0 && phase.Load() == before {
					healthy5xx.Add(1)
				}
				mu.Lock()
				result.statuses[status]++
				mu.Unlock()
			}
		})
	}
	clients.Wait()
	close(stop)
	switcher.Wait()
	result.sent, result.letThrough, result.healthy5xx = sent.Load(), letThrough.Load(), healthy5xx.Load()
	return result
}

// restingState is what the process holds once things settle.
type restingState struct {
	goroutines int
	heapInUse  uint64 // bytes
	rss        uint64 // bytes; 0 where /proc is not there to tell
}

// atRest lets things settle and measures, connections kept alive left out
// (see settledGoroutines).
func atRest(e *env) restingState {
	goroutines := e.settledGoroutines()
	debug.FreeOSMemory() // a GC that also hands freed pages back, so that RSS counts what is live
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	return restingState{goroutines: goroutines, heapInUse: stats.HeapInuse, rss: residentSetSize()}
}

// residentSetSize reads VmRSS from /proc/self/status (Linux); 0 elsewhere.
// It is reported, not asserted: it includes the test's own allocations
// (the client side of the load) and the fake Clerk's.
func residentSetSize() uint64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if value, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kib << 10
		}
	}
	return 0
}

func mib(bytes uint64) float64 { return float64(bytes) / (1 << 20) }
