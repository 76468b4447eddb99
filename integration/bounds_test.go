package integration

import (
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
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

// TestAnAbandonedBurstOfNewTokens: 100 clients each send 20 requests with
// tokens nobody has seen, to a Clerk that takes a minute to answer, and
// give each up after 50 ms. The calls to Clerk in flight (and the
// connections to it) stay within max_clerk_calls, past which a new token
// is refused at once (503, Retry-After: 1, clerk_calls_limited); every
// call is cancelled when its client gives up; the process's goroutines and
// file descriptors stay within what the clients and the bound explain; and
// a token that is already cached, and a JWT, are answered meanwhile. (The
// bound itself, and who waits for whose call, are verify's: calls_test.go.)
func TestAnAbandonedBurstOfNewTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("a burst of 2,000 requests against a slow Clerk")
	}
	const (
		maxCalls  = 16
		workers   = 100
		perWorker = 20
		// Longer than the test waits for the calls to be cancelled: a call
		// that was not is still at Clerk when the test looks, however long a
		// busy machine takes to notice a client gone.
		clerkDelay = time.Minute
		giveUp     = 50 * time.Millisecond
	)
	e := newEnv(t)
	// The calls in flight are what this measures, not the calls a second
	// (max_clerk_rate, and each client's share of both: budget_test.go).
	e.load(gatewayWith("max_clerk_calls " + strconv.Itoa(maxCalls) + "\nmax_clerk_rate 1000"))
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
				switch status, reason, retryAfter := giveUpAfter(client, giveUp); {
				case status == 0:
					abandoned.Add(1)
				case status == http.StatusServiceUnavailable && reason == "clerk_calls_limited" && retryAfter == "1":
					limited.Add(1)
				default:
					t.Errorf("a new token during the burst got %d %s, Retry-After %q", status, reason, retryAfter)
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
	// not run to its end.
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

	// max_clerk_calls is the gateway's own count (verify's calls_test.go
	// proves it exactly): a call it gave up on frees its place at once,
	// while Clerk sees its request end a moment later, when the
	// connection's close reaches it, as Go's transport hands a closing
	// connection's place to the next dial a moment before it closes the
	// connection: each place may hold one going and one coming, at Clerk.
	assert.LessOrEqual(t, load.PeakRequests, 2*maxCalls, "calls to Clerk in flight at once, as Clerk sees them")
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
// the status, reason and Retry-After of the answer, or 0 when it gave up.
func giveUpAfter(client *http.Client, patience time.Duration) (int, string, string) {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gatewayURL("/"), nil)
	req.Header.Set("Authorization", "Bearer mt_"+rand.Text())
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", ""
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Clerk-Error"), resp.Header.Get("Retry-After")
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
