package verify

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/internal/testclock"
)

// heldBackend answers M2M verifications only when released, or ends them
// when their context ends, and counts both.
type heldBackend struct {
	m2mOnly
	release   chan struct{}
	started   atomic.Int32
	cancelled atomic.Int32
}

func newHeldBackend() *heldBackend { return &heldBackend{release: make(chan struct{})} }

func (h *heldBackend) VerifyM2MToken(ctx context.Context, token string) (*backend.M2MToken, error) {
	h.started.Add(1)
	select {
	case <-h.release:
		expiration := testNow.Add(time.Hour).UnixMilli()
		return &backend.M2MToken{Object: "machine_to_machine_token", ID: "mt_id_" + token[3:], Subject: "mch_caller", Expiration: &expiration}, nil
	case <-ctx.Done():
		h.cancelled.Add(1)
		return nil, &backend.Error{Err: ctx.Err()}
	}
}

// waiting is how many requests wait for the call under way for the
// verifier's credential, 0 when there is none.
func (v *Verifier) waiting(credential string) int {
	c := v.shared.calls
	c.mu.Lock()
	defer c.mu.Unlock()
	if call, ok := c.running[cacheKey{v.scope, credential}]; ok {
		return call.waiting
	}
	return 0
}

// verifyInBackground verifies credential with ctx and sends the error.
func verifyInBackground(ctx context.Context, v *Verifier, credential string) chan error {
	result := make(chan error, 1)
	go func() {
		_, err := v.Verify(ctx, credential)
		result <- err
	}()
	return result
}

func TestCallsToClerkAreBoundedAndAWaitNeedsNoSlot(t *testing.T) {
	b := newHeldBackend()
	v := New(Options{Accept: []TokenType{M2MToken}, Backend: b, now: fixedClock, CacheTTL: time.Minute,
		Shared: NewShared(SharedOptions{MaxClerkCalls: 2})})
	first, second := verifyInBackground(context.Background(), v, "mt_1"), verifyInBackground(context.Background(), v, "mt_2")
	require.Eventually(t, func() bool { return b.started.Load() == 2 }, 5*time.Second, time.Millisecond)

	_, err := v.Verify(context.Background(), "mt_3")
	verr := requireReason(t, err, ReasonCallsLimited)
	assert.Equal(t, M2MToken, verr.TokenType)
	assert.Equal(t, time.Second, verr.RetryAfter)
	assert.Equal(t, int32(2), b.started.Load(), "refused at once, without a call")

	joined := verifyInBackground(context.Background(), v, "mt_1")
	require.Eventually(t, func() bool { return v.waiting("mt_1") == 2 }, 5*time.Second, time.Millisecond,
		"a request for a credential under way joins its call")
	close(b.release)
	for _, result := range []chan error{first, second, joined} {
		require.NoError(t, <-result)
	}
	assert.Equal(t, int32(2), b.started.Load())
	_, err = v.Verify(context.Background(), "mt_3")
	require.NoError(t, err, "a slot is free again")
}

func TestACallNobodyWaitsForIsCancelledAndLeavesNothing(t *testing.T) {
	b := newHeldBackend()
	v := New(Options{Accept: []TokenType{M2MToken}, Backend: b, now: fixedClock, CacheTTL: time.Minute, Timeout: time.Hour,
		Shared: NewShared(SharedOptions{MaxClerkCalls: 1})})
	ctx, leave := context.WithCancel(context.Background())
	result := verifyInBackground(ctx, v, "mt_abandoned")
	require.Eventually(t, func() bool { return b.started.Load() == 1 }, 5*time.Second, time.Millisecond)
	leave()
	requireReason(t, <-result, ReasonUnavailable)
	require.Eventually(t, func() bool { return b.cancelled.Load() == 1 }, 5*time.Second, time.Millisecond,
		"the call was cancelled, not run to its timeout of an hour")
	require.Eventually(t, func() bool { return len(v.shared.calls.slots) == 0 }, 5*time.Second, time.Millisecond,
		"and its slot freed")
	assert.Zero(t, v.shared.cache.len(), "nothing is remembered of a call cut short")

	close(b.release)
	_, err := v.Verify(context.Background(), "mt_abandoned")
	require.NoError(t, err)
	assert.Equal(t, int32(2), b.started.Load(), "the next request asks Clerk again")
}

func TestACallGoesOnWhileARequestWaitsForIt(t *testing.T) {
	b := newHeldBackend()
	v := New(Options{Accept: []TokenType{M2MToken}, Backend: b, now: fixedClock, CacheTTL: time.Minute})
	ctx, leave := context.WithCancel(context.Background())
	first := verifyInBackground(ctx, v, "mt_shared")
	second := verifyInBackground(context.Background(), v, "mt_shared")
	require.Eventually(t, func() bool { return v.waiting("mt_shared") == 2 }, 5*time.Second, time.Millisecond)
	leave()
	requireReason(t, <-first, ReasonUnavailable)
	assert.Equal(t, 1, v.waiting("mt_shared"))
	close(b.release)
	require.NoError(t, <-second, "the one who stayed gets the answer")
	assert.Equal(t, int32(1), b.started.Load())
	assert.Zero(t, b.cancelled.Load())
}

// TestManyRequestsCallsAndDepartures runs requests that join, leave and
// start calls all at once (for the race detector), and checks that every
// call ended and gave its slot back.
func TestManyRequestsCallsAndDepartures(t *testing.T) {
	c := testclock.New(testNow)
	b := &slowBackend{delay: time.Millisecond, expiry: testNow.Add(time.Hour)}
	v := New(Options{Accept: []TokenType{M2MToken}, Backend: b, now: c.Now, CacheTTL: 0,
		Shared: NewShared(SharedOptions{MaxClerkCalls: 4, now: c.Now})})
	var mu sync.Mutex
	outcomes := map[string]int{}
	concurrently(200, func() {
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
	t.Logf("outcomes: %v", outcomes)
	require.Eventually(t, func() bool { return len(v.shared.calls.slots) == 0 }, 5*time.Second, time.Millisecond)
	v.shared.calls.mu.Lock()
	defer v.shared.calls.mu.Unlock()
	assert.Empty(t, v.shared.calls.running)
}
