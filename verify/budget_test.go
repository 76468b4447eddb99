package verify

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/internal/testclock"
)

// Clients of these tests, by IP address.
const (
	flooder   = "192.0.2.66"
	newcomer  = "192.0.2.1"
	latecomer = "192.0.2.2"
)

// TestOneClientCannotTakeTheCallsInFlightOthersNeed: a client that keeps
// starting calls gets half of the slots, and is refused from then on,
// while a client that comes next still starts its own, up to its share,
// and so does a third; the flooder's share shrinks as they come.
func TestOneClientCannotTakeTheCallsInFlightOthersNeed(t *testing.T) {
	clerk := &fakeClerk{gate: make(chan struct{})}
	v := opaqueVerifier(t, clerk, time.Minute, PoolOptions{MaxClerkCalls: 8, MaxClerkRate: 1000, Timeout: new(time.Hour)})
	var held []chan error
	start := func(client, credential string) chan error {
		result := verifyInBackground(context.Background(), v, client, credential)
		held = append(held, result)
		return result
	}
	for i := range 4 {
		start(flooder, fmt.Sprintf("mt_flood_%d", i))
	}
	waitFor(t, func() bool { return clerk.calls.Load() == 4 })
	// A call let through would wait for the gate: a refusal is an answer.
	refused := func(client, credential string) *Error {
		t.Helper()
		err := receive(t, verifyInBackground(context.Background(), v, client, credential), "a refusal")
		return requireReason(t, err, ReasonCallsLimited)
	}
	for i := range 20 {
		assert.Equal(t, time.Second, refused(flooder, fmt.Sprintf("mt_flood_more_%d", i)).RetryAfter)
	}

	start(newcomer, "mt_new_1")
	start(newcomer, "mt_new_2")
	waitFor(t, func() bool { return clerk.calls.Load() == 6 })
	refused(newcomer, "mt_new_3") // its share: 8 / (2+1)
	start(latecomer, "mt_late_1")
	waitFor(t, func() bool { return clerk.calls.Load() == 7 })
	refused(flooder, "mt_flood_late")
	assert.Equal(t, int32(7), clerk.calls.Load(), "refused at once, without a call")

	close(clerk.gate)
	for _, result := range held {
		require.NoError(t, receive(t, result, "an answer"))
	}
	waitFor(t, func() bool { return v.pool.calls.inFlight() == 0 })
	require.NoError(t, verifyAs(context.Background(), v, flooder, "mt_flood_after"), "the slots are free again")
}

// TestCallsASecondAreBoundedAndShared: at most MaxClerkRate calls a second
// are made, counted over 10 seconds; a client alone gets half of them, and
// is refused from then on until the next 10 seconds (RetryAfter: what is
// left of them), while others still get their shares; the next 10
// seconds, all is new.
func TestCallsASecondAreBoundedAndShared(t *testing.T) {
	clock := testclock.New(testNow) // at the start of a window
	clerk := &fakeClerk{}
	v := opaqueVerifier(t, clerk, time.Minute, PoolOptions{MaxClerkRate: 1, now: clock.Now}) // 10 in 10 seconds
	verified := func(client string, n int) int {
		count := 0
		for range n {
			switch err := verifyAs(context.Background(), v, client, "mt_"+fmt.Sprint(clerk.calls.Load())+client); {
			case err == nil:
				count++
			default:
				requireReason(t, err, ReasonCallsLimited)
			}
		}
		return count
	}
	assert.Equal(t, 5, verified(flooder, 20), "alone: half of the window's calls")
	clock.Advance(3 * time.Second)
	verr := requireReason(t, verifyAs(context.Background(), v, flooder, "mt_one_more"), ReasonCallsLimited)
	assert.Equal(t, 7*time.Second, verr.RetryAfter, "until the next window")
	assert.Equal(t, 3, verified(newcomer, 20), "the next client: 10 / (2+1)")
	assert.Equal(t, 2, verified(latecomer, 20), "the one after: what is left")
	assert.Equal(t, int32(10), clerk.calls.Load(), "the window's calls, and no more")

	clock.Advance(7 * time.Second)
	assert.Equal(t, 5, verified(flooder, 20), "a new window")
}

// TestA429PausesEveryCallOfThePool: after Clerk answers 429, no call is
// made until its Retry-After has passed (10s when it gives none): a
// credential that needs one is refused with clerk_rate_limited and the
// time left, and the signing keys are not fetched either (a JWT whose key
// is not known yet is refused alike); a 429 to a fetch of the keys pauses
// verifications alike.
func TestA429PausesEveryCallOfThePool(t *testing.T) {
	for name, tc := range map[string]struct {
		retryAfter, pause time.Duration
	}{
		"with Retry-After":    {7 * time.Second, 7 * time.Second},
		"without Retry-After": {0, defaultClerkPause},
	} {
		t.Run(name, func(t *testing.T) {
			clock := testclock.New(testNow)
			tooMany := &backend.Error{Status: 429, RetryAfter: tc.retryAfter}
			clerk := &fakeClerk{err: tooMany}
			v := opaqueVerifier(t, clerk, time.Minute, PoolOptions{now: clock.Now})
			keys, fetches := pooledKeys(t, v.pool)

			verr := requireReason(t, verifyAs(context.Background(), v, newcomer, "mt_first"), ReasonRateLimited)
			assert.Equal(t, tc.retryAfter, verr.RetryAfter, "Clerk's own answer")
			clerk.err = nil
			clock.Advance(tc.pause - time.Second)
			verr = requireReason(t, verifyAs(context.Background(), v, latecomer, "mt_second"), ReasonRateLimited)
			assert.Equal(t, time.Second, verr.RetryAfter, "the time left")
			_, err := keys.key(context.Background(), testKid)
			requireReason(t, err, ReasonRateLimited)
			assert.Equal(t, int32(1), clerk.calls.Load(), "no call while paused")
			assert.Zero(t, fetches.fetches.Load(), "no fetch of the keys while paused")

			clock.Advance(time.Second)
			require.NoError(t, verifyAs(context.Background(), v, latecomer, "mt_second"))
			fetches.set(nil, tooMany)
			_, err = keys.key(context.Background(), testKid)
			requireReason(t, err, ReasonRateLimited)
			requireReason(t, verifyAs(context.Background(), v, newcomer, "mt_third"), ReasonRateLimited)
			assert.Equal(t, int32(2), clerk.calls.Load(), "a 429 to a fetch of the keys pauses the verifications too")
		})
	}
}

// pooledKeys are signing keys pool fetches from a fake, and the fake.
func pooledKeys(t *testing.T, pool *Pool) (*remoteKeys, *fakeJWKS) {
	t.Helper()
	client, err := pool.client("https://api.clerk.test", testSecretKey, "")
	require.NoError(t, err)
	fetches := &fakeJWKS{}
	return pool.remoteKeys("https://api.clerk.test", client, fetches), fetches
}
