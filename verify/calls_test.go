package verify

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCallsToClerkAreBoundedAndAWaitNeedsNoSlot(t *testing.T) {
	clerk := &fakeClerk{gate: make(chan struct{})}
	v := opaqueVerifier(t, clerk, time.Minute, PoolOptions{MaxClerkCalls: 2, Timeout: new(time.Hour)})
	first := verifyInBackground(context.Background(), v, "192.0.2.1", "mt_1")
	second := verifyInBackground(context.Background(), v, "192.0.2.2", "mt_2")
	waitFor(t, func() bool { return clerk.calls.Load() == 2 })

	err := verifyAs(context.Background(), v, "192.0.2.3", "mt_3")
	verr := requireReason(t, err, ReasonCallsLimited)
	assert.Equal(t, M2MToken, verr.TokenType)
	assert.Equal(t, Opaque, verr.Format)
	assert.Equal(t, time.Second, verr.RetryAfter)
	assert.Equal(t, int32(2), clerk.calls.Load(), "refused at once, without a call")

	joined := verifyInBackground(context.Background(), v, "192.0.2.3", "mt_1")
	waitFor(t, func() bool { return v.waiting("mt_1") == 2 }) // a request for a credential under way joins its call
	close(clerk.gate)
	for _, result := range []chan error{first, second, joined} {
		require.NoError(t, receive(t, result, "an answer"))
	}
	assert.Equal(t, int32(2), clerk.calls.Load())
	_, err = v.Verify(context.Background(), "mt_3")
	require.NoError(t, err, "a slot is free again")
}

// TestACallEndsWithTheLastRequestWaitingForIt: a request that stops
// waiting leaves the call to those still waiting, who get its answer; the
// last to leave has it cancelled rather than run to its timeout, its slot
// freed, and nothing of it remembered, so that the next request asks
// Clerk again.
func TestACallEndsWithTheLastRequestWaitingForIt(t *testing.T) {
	clerk := &fakeClerk{gate: make(chan struct{})}
	v := opaqueVerifier(t, clerk, time.Minute, PoolOptions{MaxClerkCalls: 2, Timeout: new(time.Hour)})
	ctx, leave := context.WithCancel(context.Background())
	abandoned := verifyInBackground(ctx, v, "192.0.2.1", "mt_abandoned")
	first := verifyInBackground(ctx, v, "192.0.2.2", "mt_shared")
	second := verifyInBackground(context.Background(), v, "192.0.2.3", "mt_shared")
	waitFor(t, func() bool { return v.waiting("mt_shared") == 2 && v.waiting("mt_abandoned") == 1 })
	leave()
	requireReason(t, receive(t, abandoned, "the answer"), ReasonUnavailable)
	requireReason(t, receive(t, first, "the first answer"), ReasonUnavailable)
	assert.Equal(t, 1, v.waiting("mt_shared"))
	waitFor(t, func() bool { return clerk.cancelled.Load() == 1 && v.pool.calls.inFlight() == 1 })
	assert.Zero(t, v.pool.cache.len(), "nothing is remembered of a call cut short")

	close(clerk.gate)
	require.NoError(t, receive(t, second, "the second answer"), "the one who stayed gets the answer")
	_, err := v.Verify(context.Background(), "mt_abandoned")
	require.NoError(t, err)
	assert.Equal(t, int32(3), clerk.calls.Load(), "the next request asks Clerk again")
	assert.Equal(t, int32(1), clerk.cancelled.Load())
}

// TestManyRequestsCallsAndDepartures runs requests that join, leave and
// start calls all at once (for the race detector), and checks that every
// call ended and gave its slot back.
func TestManyRequestsCallsAndDepartures(t *testing.T) {
	v := opaqueVerifier(t, &fakeClerk{delay: time.Millisecond}, 0, PoolOptions{MaxClerkCalls: 4, Timeout: new(time.Second)})
	var mu sync.Mutex
	outcomes := map[string]int{}
	var requests sync.WaitGroup
	for range 200 {
		requests.Go(func() {
			for i := range 20 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%3)*time.Millisecond)
				_, err := v.Verify(ctx, fmt.Sprintf("mt_%d", i%7))
				cancel()
				outcome := "verified"
				if err != nil {
					outcome = string(ReasonOf(err))
				}
				mu.Lock()
				outcomes[outcome]++
				mu.Unlock()
			}
		})
	}
	requests.Wait()
	t.Logf("outcomes: %v", outcomes)
	waitFor(t, func() bool { return v.pool.calls.inFlight() == 0 })
	v.pool.calls.mu.Lock()
	defer v.pool.calls.mu.Unlock()
	assert.Empty(t, v.pool.calls.running)
}
