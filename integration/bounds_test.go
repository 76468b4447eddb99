package integration

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/freeport"
)

// What one open connection costs the test process, which holds both of its
// ends: goroutines (the client transport's read and write loops; the
// server's connection goroutine and its background read) and file
// descriptors (the client's socket and the server's).
const (
	goroutinesPerConnection  = 4
	descriptorsPerConnection = 2
	// connectionsPerWorker bounds the connections of one client that gives
	// up on a request every 50 ms: the one in use, and those it closed
	// that the server has not finished with yet (a few, on a busy machine).
	connectionsPerWorker = 5
)

// TestCallsToClerkAreBounded: with max_clerk_calls calls to Clerk in
// flight, a new opaque token is refused at once with 503, Retry-After and
// clerk_calls_limited, while a cached token and a JWT are answered.
func TestCallsToClerkAreBounded(t *testing.T) {
	const maxCalls = 2
	e := newEnv(t)
	e.load(gatewayWith("max_clerk_calls " + strconv.Itoa(maxCalls)))
	cached := e.fresh()
	resp, _ := e.bearer("/", cached)
	require.Equal(t, http.StatusOK, resp.StatusCode)

	e.clerk.SetFault(backendtest.Fault{Path: "/m2m_tokens/verify", Hang: true})
	ctx, giveUp := context.WithCancel(context.Background())
	defer giveUp()
	var held sync.WaitGroup
	for range maxCalls {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gatewayURL("/"), nil)
		req.Header.Set("Authorization", "Bearer "+e.fresh())
		held.Go(func() {
			if resp, err := e.client.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	require.Eventually(t, func() bool { return e.clerk.Load().Requests == maxCalls }, 10*time.Second, time.Millisecond)

	counted := `caddy_clerk_m2m_verifications_total{outcome="clerk_calls_limited",token_format="opaque",token_type="m2m_token"}`
	before, _ := scrapeClerkMetrics(t)
	resp, _ = e.bearer("/", e.fresh())
	requireRefused(t, resp, http.StatusServiceUnavailable, "clerk_calls_limited")
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	assert.Equal(t, maxCalls, e.clerk.Load().Requests, "refused without a call")
	after, _ := scrapeClerkMetrics(t)
	assert.Equal(t, 1.0, after[counted]-before[counted], "counted in the verifications")
	for name, token := range map[string]string{"cached opaque token": cached, "JWT": e.jwt()} {
		resp, _ := e.bearer("/", token)
		assert.Equal(t, http.StatusOK, resp.StatusCode, "a %s, while the calls are all in flight", name)
	}
	giveUp()
	held.Wait()
}

// TestAnAbandonedBurstOfNewTokens: 100 clients each send 20 requests with
// tokens nobody has seen, to a Clerk that takes 3 seconds to answer, and
// give each up after 50 ms. The calls to Clerk in flight (and the
// connections to it) stay within max_clerk_calls, every call is cancelled
// when its client gives up, the process's goroutines and file descriptors
// stay within what the clients and the bound explain, and a token that is
// already cached is answered meanwhile.
func TestAnAbandonedBurstOfNewTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("a burst of 2,000 requests against a slow Clerk")
	}
	const (
		maxCalls   = 16
		workers    = 100
		perWorker  = 20
		clerkDelay = 3 * time.Second
		giveUp     = 50 * time.Millisecond
	)
	e := newEnv(t)
	e.load(gatewayWith("max_clerk_calls " + strconv.Itoa(maxCalls)))
	cached := e.fresh()
	resp, _ := e.bearer("/", cached)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Eventually(t, func() bool { return e.clerk.Calls("/v1/jwks") == 1 }, 5*time.Second, 10*time.Millisecond)

	const verify = "/m2m_tokens/verify"
	e.clerk.SetFault(backendtest.Fault{Path: verify, Delay: clerkDelay})
	baseline := e.measure()
	e.clerk.ResetLoad()
	callsBefore := e.clerk.Calls(verify)

	peak, stopSampling := sample()
	var limited, abandoned atomic.Int32
	var burst sync.WaitGroup
	for range workers {
		burst.Go(func() {
			client := &http.Client{Transport: &http.Transport{DialContext: dialGateway}}
			defer client.CloseIdleConnections()
			for range perWorker {
				switch status, reason := giveUpAfter(client, giveUp); {
				case status == 0:
					abandoned.Add(1)
				case status == http.StatusServiceUnavailable && reason == "clerk_calls_limited":
					limited.Add(1)
				default:
					t.Errorf("a new token during the burst got %d %s", status, reason)
				}
			}
		})
	}

	// In the midst of the burst, a cached token and a JWT are answered.
	require.Eventually(t, func() bool { return e.clerk.Calls(verify)-callsBefore >= 2*maxCalls }, 30*time.Second, time.Millisecond)
	patient := &http.Client{Transport: &http.Transport{DialContext: dialGateway}, Timeout: 30 * time.Second}
	for name, token := range map[string]string{"cached opaque token": cached, "JWT": e.jwt()} {
		req, _ := http.NewRequest(http.MethodGet, gatewayURL("/"), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := patient.Do(req)
		require.NoError(t, err, "a %s during the burst", name)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, "a %s during the burst", name)
	}
	burst.Wait()
	stopSampling()

	// Every call that reached Clerk was cancelled when its client gave up,
	// not run to its end 3 seconds later.
	var load backendtest.Load
	var calls int
	assert.Eventually(t, func() bool {
		load, calls = e.clerk.Load(), e.clerk.Calls(verify)-callsBefore
		return load.Requests == 0 && load.Abandoned == calls
	}, 30*time.Second, 10*time.Millisecond, "calls to Clerk that were not abandoned")
	most := peak()
	t.Logf("%d requests: %d abandoned, %d refused with clerk_calls_limited; %d calls reached Clerk, %d of them abandoned; "+
		"at most %d requests and %d connections at Clerk at once", workers*perWorker, abandoned.Load(), limited.Load(),
		calls, load.Abandoned, load.PeakRequests, load.PeakConnections)
	t.Logf("goroutines %d before, at most %d during; file descriptors %d before, at most %d during; heap %.1f MiB before, at most %.1f MiB during",
		baseline.goroutines, most.goroutines, baseline.descriptors, most.descriptors, mib(baseline.heap), mib(most.heap))

	assert.LessOrEqual(t, load.PeakRequests, maxCalls, "calls to Clerk in flight at once")
	// Go's transport hands a closing connection's place to the next dial
	// a moment before it closes the connection: each place may hold one
	// connection going and one coming.
	assert.LessOrEqual(t, load.PeakConnections, 2*maxCalls, "connections to Clerk open at once")
	clientConnections := workers * connectionsPerWorker
	assert.LessOrEqual(t, most.goroutines, baseline.goroutines+workers+(clientConnections+2*maxCalls)*goroutinesPerConnection,
		"goroutines: the workers, their connections to Caddy, and Caddy's to Clerk (some closing)")
	assert.LessOrEqual(t, most.descriptors, baseline.descriptors+(clientConnections+2*maxCalls)*descriptorsPerConnection,
		"file descriptors: the connections to Caddy, and Caddy's to Clerk (some closing)")
}

// dialGateway dials the gateway's port on the IPv4 loopback.
func dialGateway(ctx context.Context, network, _ string) (net.Conn, error) {
	var dialer net.Dialer
	return dialer.DialContext(ctx, network, freeport.Addr(httpPort))
}

// giveUpAfter sends a token nobody has seen and gives up after patience:
// the status and reason of the answer, or 0 when it gave up.
func giveUpAfter(client *http.Client, patience time.Duration) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gatewayURL("/"), nil)
	req.Header.Set("Authorization", "Bearer mt_"+rand.Text())
	resp, err := client.Do(req)
	if err != nil {
		return 0, ""
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Clerk-Error")
}

// usage is what the test process holds.
type usage struct {
	goroutines, descriptors int
	heap                    uint64 // bytes of live and not yet collected objects
}

// measure reads what the test process holds, its goroutines settled.
func (e *env) measure() usage {
	return usage{goroutines: e.settledGoroutines(), descriptors: openDescriptors(), heap: heapAlloc()}
}

// sample reads what the test process holds every millisecond until stop,
// and peak returns the most of each it saw.
func sample() (peak func() usage, stop func()) {
	var most usage
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			var stats runtime.MemStats
			runtime.ReadMemStats(&stats)
			most.goroutines = max(most.goroutines, runtime.NumGoroutine())
			most.descriptors = max(most.descriptors, openDescriptors())
			most.heap = max(most.heap, stats.HeapAlloc)
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return func() usage { return most }, func() { close(done); <-stopped }
}

// openDescriptors counts the process's open file descriptors.
func openDescriptors() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(entries)
}

// heapAlloc is the heap of live objects, after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	return stats.HeapAlloc
}

// TestVerdictCacheMemoryIsBounded sends credentials whose verdicts are
// large (opaque tokens whose answers carry 256 KiB of claims; JWTs of 14
// KiB that require_scopes refuses, which are cached as verified identities
// first) and checks that the heap never grows past cache_max_bytes and a
// margin, and comes back near where it was once the verdicts expire.
func TestVerdictCacheMemoryIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("hundreds of megabytes of claims")
	}
	// The heap of the whole process (Caddy, the fake Clerk, the client)
	// moves by a few MiB of its own: buffers of connections, the fake's
	// record of requests, metrics.
	const margin = 4 << 20
	e := newEnv(t)
	config := func(maxBytes string, ttl time.Duration) string {
		return gatewayWith("require_scopes {{GATEWAY_ID}}\ncache_max_bytes " + maxBytes + "\ncache_ttl " + ttl.String() + "\nclock_skew 0")
	}
	// bounded sends n credentials, measuring the heap every tenth, and
	// checks each answer; it returns the most the heap held.
	bounded := func(t *testing.T, n int, credential func(i int) string, want int) uint64 {
		t.Helper()
		var most uint64
		for i := range n {
			status := e.rawStatus("/", "Bearer "+credential(i))
			require.Equal(t, want, status)
			if i%10 == 9 {
				most = max(most, heapAlloc())
			}
		}
		return most
	}
	// expired waits until the verdicts have expired and a new one has
	// swept them out, and returns the heap then.
	expired := func(t *testing.T, baseline uint64, small func() string, want int) uint64 {
		t.Helper()
		var after uint64
		require.Eventually(t, func() bool {
			require.Equal(t, want, e.rawStatus("/", "Bearer "+small()))
			after = heapAlloc()
			return after <= baseline+margin
		}, 30*time.Second, 100*time.Millisecond, "the heap comes back once the verdicts expire")
		return after
	}

	t.Run("opaque tokens with 256 KiB of claims", func(t *testing.T) {
		const maxBytes = 48 << 20
		e.load(config("48MiB", 3*time.Second))
		small := e.fresh()
		require.Equal(t, http.StatusOK, e.rawStatus("/", "Bearer "+small))
		answer, err := json.Marshal(map[string]any{
			"object": "machine_to_machine_token", "id": "mt_big", "subject": e.caller.ID, "scopes": []string{e.gateway.ID},
			"claims": map[string]string{"blob": strings.Repeat("x", 256<<10)}, "revoked": false, "expired": false,
			"expiration": time.Now().Add(time.Hour).UnixMilli(), "created_at": time.Now().UnixMilli(),
		})
		require.NoError(t, err)
		baseline := heapAlloc()
		e.clerk.SetFault(backendtest.Fault{Path: "/m2m_tokens/verify", Body: string(answer)})
		most := bounded(t, 400, func(int) string { return "mt_" + rand.Text() }, http.StatusOK)
		e.clerk.ClearFaults()
		t.Logf("heap: %.1f MiB before, at most %.1f MiB with 400 verdicts of 256 KiB of claims (bound %d MiB)",
			mib(baseline), mib(most), maxBytes>>20)
		assert.LessOrEqual(t, most, baseline+maxBytes+margin)
		t.Logf("heap once they expired: %.1f MiB", mib(expired(t, baseline, e.fresh, http.StatusOK)))
	})

	t.Run("JWTs of 14 KiB refused by require_scopes", func(t *testing.T) {
		const maxBytes = 4 << 20
		e.load(config("4MiB", time.Minute))
		other := e.clerk.NewMachine("elsewhere") // the JWTs name it, not the gateway: 403
		pad := strings.Repeat("x", 10<<10)
		jwt := func(int) string {
			return e.clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{
				Scopes: []string{other.ID}, Claims: map[string]any{"pad": pad}, TTL: 5 * time.Second}})
		}
		require.Greater(t, len(jwt(0)), 14<<10)
		small := func() string {
			return e.clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{Scopes: []string{other.ID}}})
		}
		require.Equal(t, http.StatusForbidden, e.rawStatus("/", "Bearer "+small()))
		baseline := heapAlloc()
		most := bounded(t, 1000, jwt, http.StatusForbidden)
		t.Logf("heap: %.1f MiB before, at most %.1f MiB with 1,000 verdicts on JWTs of 14 KiB (bound %d MiB)",
			mib(baseline), mib(most), maxBytes>>20)
		assert.LessOrEqual(t, most, baseline+maxBytes+margin)
		t.Logf("heap once they expired: %.1f MiB", mib(expired(t, baseline, small, http.StatusForbidden)))
	})
}
