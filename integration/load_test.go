package integration

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
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

var loadCaddyfile = globals(errorLog) + `
http://{{GATEWAY}} {
	clerk_m2m {
		secret_key {{SECRET}}
		machine_secret_key {{GATEWAY_KEY}}
		api_url {{CLERK}}
		timeout {{TIMEOUT}}
		cache_ttl 1s
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
	const timeout = 300 * time.Millisecond
	e := newEnv(t)
	clerk, gateway, caller := e.clerk, e.gateway, e.caller
	other := backendtest.New()
	defer other.Close()
	e.load(strings.ReplaceAll(loadCaddyfile, "{{TIMEOUT}}", timeout.String()))

	granted := backendtest.TokenOptions{Scopes: []string{gateway.ID}, TTL: time.Hour}
	var valid, forged []string
	for range 100 {
		token, _ := clerk.CreateM2MToken(caller, granted)
		valid = append(valid, token)
		forged = append(forged, fmt.Sprintf("mt_%032x", rand.Uint64()))
	}
	for range 20 {
		valid = append(valid, clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: granted}))
		forged = append(forged, other.MintM2MJWT(other.NewMachine("x"), backendtest.JWTOptions{TokenOptions: granted}))
	}
	isValid := map[string]bool{}
	for _, token := range valid {
		isValid[token] = true
	}
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
	warmup := loadRun(t, clerk, get, valid, forged, isValid, 2*time.Second, timeout)
	clerk.ResetCalls() // the fake's own log of requests is not the module's memory
	before, resentBefore := atRest(e), resends(e.client)
	run := loadRun(t, clerk, get, valid, forged, isValid, duration, timeout)
	clerk.ResetCalls()
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

// loadRun drives 64 concurrent clients for duration while Clerk alternates
// between healthy and failing every second. A third of the requests carry a
// token that is not valid. A 5xx counts against a healthy Clerk only for a
// request that started well after Clerk recovered (twice the timeout, so
// that no call begun while Clerk was failing is still under way) and ended
// before it failed again.
func loadRun(t *testing.T, clerk *backendtest.Server, get func(string) int, valid, forged []string,
	isValid map[string]bool, duration, timeout time.Duration) loadResult {
	t.Helper()
	var phase, phaseStart atomic.Int64
	phaseStart.Store(time.Now().UnixNano())
	stop := make(chan struct{})
	var switcher sync.WaitGroup
	switcher.Go(func() {
		ticker := time.NewTicker(time.Second)
		defer ticker.Stop()
		for {
			select {
			case <-stop:
				clerk.ClearFaults()
				return
			case <-ticker.C:
				if phase.Load()%2 == 0 {
					clerk.SetFault(backendtest.Fault{Status: http.StatusServiceUnavailable})
				} else {
					clerk.ClearFaults()
				}
				phaseStart.Store(time.Now().UnixNano())
				phase.Add(1)
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
				token := valid[rand.IntN(len(valid))]
				if rand.IntN(3) == 0 {
					token = forged[rand.IntN(len(forged))]
				}
				before, started := phase.Load(), time.Now()
				settled := started.Sub(time.Unix(0, phaseStart.Load())) > 2*timeout
				status := get(token)
				sent.Add(1)
				if status == http.StatusOK && !isValid[token] {
					letThrough.Add(1)
				}
				if status >= 500 && before%2 == 0 && settled && phase.Load() == before {
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
