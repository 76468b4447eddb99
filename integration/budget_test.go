package integration

import (
	"context"
	"crypto/rand"
	"net/http"
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

// trustLoopback has the gateway's server take the client's address from
// X-Forwarded-For, as behind a proxy on the loopback: strictly, the
// right-most address that is not the proxy's.
const trustLoopback = "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t\ttrusted_proxies_strict\n\t}\n"

// behindAProxy is gatewayWith's configuration on a server behind a proxy
// on the loopback (trustLoopback).
func behindAProxy(subdirectives string) string {
	return strings.Replace(gatewayWith(subdirectives), globals(""), globals(trustLoopback), 1)
}

// TestAFloodFromOneClientLeavesAnotherItsCalls: one client (by the client
// IP Caddy takes from X-Forwarded-For behind a trusted proxy) floods the
// gateway with made-up opaque tokens from 16 connections at once, against
// a Clerk that takes 200 ms to answer; meanwhile every new valid token of
// another client is verified, while the flood gets its own refused with
// 503 clerk_calls_limited.
func TestAFloodFromOneClientLeavesAnotherItsCalls(t *testing.T) {
	const (
		workers    = 16
		legitimate = 20
		maxCalls   = 8
	)
	e := newEnv(t)
	e.load(behindAProxy("max_clerk_calls " + strconv.Itoa(maxCalls)))
	e.clerk.SetFault(backendtest.Fault{Path: "/m2m_tokens/verify", Delay: 200 * time.Millisecond})
	from := func(client, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, gatewayURL("/"), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Forwarded-For", client)
		resp, err := e.client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Clerk-Error")
	}

	ctx, stop := context.WithTimeout(context.Background(), time.Minute)
	defer stop()
	var flood sync.WaitGroup
	var sent, limited atomic.Int64
	for range workers {
		flood.Go(func() {
			for range 5000 {
				if ctx.Err() != nil {
					return
				}
				status, reason := from("203.0.113.66", "mt_"+rand.Text())
				sent.Add(1)
				if status == http.StatusServiceUnavailable && reason == "clerk_calls_limited" {
					limited.Add(1)
				}
			}
		})
	}
	require.Eventually(t, func() bool { return limited.Load() > 0 }, 30*time.Second, time.Millisecond, "the flood reaches its share")
	accepted := 0
	for range legitimate {
		if status, reason := from("198.51.100.1", e.fresh()); status == http.StatusOK {
			accepted++
		} else {
			t.Logf("a new valid token of the other client got %d %s", status, reason)
		}
	}
	stop()
	flood.Wait()
	t.Logf("the other client's new tokens: %d of %d accepted; the flood: %d requests, %d refused with clerk_calls_limited",
		accepted, legitimate, sent.Load(), limited.Load())
	assert.Equal(t, legitimate, accepted, "every new token of the other client is verified")
}

// TestA429PausesTheCallsToClerk: once Clerk answers 429 with Retry-After,
// the gateway calls Clerk no more until that time has passed: new tokens
// get 503 clerk_rate_limited at once, with the time left, while a cached
// token is served; then the next new token is verified.
func TestA429PausesTheCallsToClerk(t *testing.T) {
	const verify = "/m2m_tokens/verify"
	e := newEnv(t)
	e.load(gatewayWith(""))
	cached := e.fresh()
	resp, _ := e.bearer("/", cached)
	require.Equal(t, http.StatusOK, resp.StatusCode)

	e.clerk.SetFault(backendtest.Fault{Path: verify, Status: http.StatusTooManyRequests, RetryAfter: "3", Times: 1})
	resp, _ = e.bearer("/", e.fresh())
	requireRefused(t, resp, http.StatusServiceUnavailable, "clerk_rate_limited")
	assert.Equal(t, "3", resp.Header.Get("Retry-After"), "Clerk's own")
	calls := e.clerk.Calls(verify)

	waiting := e.fresh()
	resp, _ = e.bearer("/", waiting)
	requireRefused(t, resp, http.StatusServiceUnavailable, "clerk_rate_limited")
	retryAfter, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	assert.True(t, retryAfter >= 1 && retryAfter <= 3, "the time left, %d s", retryAfter)
	resp, _ = e.bearer("/", cached)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a cached token, meanwhile")

	require.Eventually(t, func() bool {
		resp, _ := e.bearer("/", waiting)
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "the token is verified once the pause is over")
	assert.Equal(t, calls+1, e.clerk.Calls(verify), "no call to Clerk during the pause, one after")
}
