package verify

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// slowBackend answers every verification after a delay, counting calls.
type slowBackend struct {
	delay  time.Duration
	err    error
	expiry time.Time
	calls  atomic.Int32
}

func (s *slowBackend) VerifyM2MToken(ctx context.Context, token string) (*backend.M2MToken, error) {
	s.calls.Add(1)
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, &backend.Error{Err: ctx.Err()}
	}
	if s.err != nil {
		return nil, s.err
	}
	expiration := s.expiry.UnixMilli()
	return &backend.M2MToken{Object: "machine_to_machine_token", ID: "mt_" + token[3:], Subject: "mch_caller", Expiration: &expiration}, nil
}

func cachingVerifier(b Backend, c *clock, ttl time.Duration, entries int) *Verifier {
	return New(Options{Accept: TypesOf(M2MToken), Backend: b, Now: c.Now, CacheTTL: ttl, CacheEntries: entries, Timeout: time.Second})
}

func TestOpaqueCacheReusesAVerification(t *testing.T) {
	c := &clock{now: testNow}
	b := &slowBackend{expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, 30*time.Second, 0)
	for range 50 {
		id, err := v.Verify(context.Background(), "mt_one")
		require.NoError(t, err)
		assert.Equal(t, "mt_one", id.TokenID)
	}
	assert.Equal(t, int32(1), b.calls.Load(), "50 sequential verifications within the TTL make one call")

	c.advance(30 * time.Second)
	_, err := v.Verify(context.Background(), "mt_one")
	require.NoError(t, err)
	assert.Equal(t, int32(2), b.calls.Load(), "after the TTL Clerk is asked again")
}

func TestOpaqueCacheNeverOutlivesTheToken(t *testing.T) {
	c := &clock{now: testNow}
	b := &slowBackend{expiry: testNow.Add(10 * time.Second)}
	v := cachingVerifier(b, c, time.Minute, 0)
	_, err := v.Verify(context.Background(), "mt_short")
	require.NoError(t, err)
	c.advance(10 * time.Second)
	b.expiry = testNow // Clerk now reports the token expired
	_, err = v.Verify(context.Background(), "mt_short")
	requireReason(t, err, ReasonExpired)
	assert.Equal(t, int32(2), b.calls.Load())
}

func TestOpaqueCacheOffStillSharesConcurrentCalls(t *testing.T) {
	c := &clock{now: testNow}
	b := &slowBackend{delay: 50 * time.Millisecond, expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, 0, 0)
	_, err := v.Verify(context.Background(), "mt_x")
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), "mt_x")
	require.NoError(t, err)
	assert.Equal(t, int32(2), b.calls.Load(), "cache_ttl 0: every request asks Clerk")
	assert.Zero(t, v.opaque.len())

	concurrently(100, func() {
		_, err := v.Verify(context.Background(), "mt_y")
		assert.NoError(t, err)
	})
	assert.Equal(t, int32(3), b.calls.Load())
}

func TestOpaqueCacheConcurrentFirstUseMakesOneCall(t *testing.T) {
	c := &clock{now: testNow}
	b := &slowBackend{delay: 50 * time.Millisecond, expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, 30*time.Second, 0)
	concurrently(100, func() {
		_, err := v.Verify(context.Background(), "mt_burst")
		assert.NoError(t, err)
	})
	assert.Equal(t, int32(1), b.calls.Load())
}

func TestOpaqueCacheWaiterKeepsItsOwnDeadline(t *testing.T) {
	c := &clock{now: testNow}
	b := &slowBackend{delay: 300 * time.Millisecond, expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, 30*time.Second, 0)

	leader := make(chan error, 1)
	go func() {
		_, err := v.Verify(context.Background(), "mt_slow")
		leader <- err
	}()
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := v.Verify(ctx, "mt_slow")
	requireReason(t, err, ReasonUnavailable)
	assert.Less(t, time.Since(start), 250*time.Millisecond, "the waiter gives up at its own deadline")
	require.NoError(t, <-leader, "the shared call goes on for the others")
	assert.Equal(t, int32(1), b.calls.Load())
}

func TestOpaqueCacheLeaderCancellationDoesNotFailOthers(t *testing.T) {
	c := &clock{now: testNow}
	b := &slowBackend{delay: 100 * time.Millisecond, expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, 30*time.Second, 0)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, _ = v.Verify(ctx, "mt_shared") }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	_, err := v.Verify(context.Background(), "mt_shared")
	require.NoError(t, err)
	assert.Equal(t, int32(1), b.calls.Load())
}

func TestOpaqueCacheDoesNotKeepFailures(t *testing.T) {
	c := &clock{now: testNow}
	b := &slowBackend{err: &backend.Error{Status: 404}}
	v := cachingVerifier(b, c, 30*time.Second, 0)
	for range 3 {
		_, err := v.Verify(context.Background(), "mt_unknown")
		requireReason(t, err, ReasonInvalid)
	}
	assert.Equal(t, int32(3), b.calls.Load())
	b.err = errors.New("outage")
	_, err := v.Verify(context.Background(), "mt_unknown")
	requireReason(t, err, ReasonUnavailable)
}

func TestOpaqueCacheIsBounded(t *testing.T) {
	c := &clock{now: testNow}
	b := &slowBackend{expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, time.Minute, 10)
	for i := range 25 {
		_, err := v.Verify(context.Background(), fmt.Sprintf("mt_%02d", i))
		require.NoError(t, err)
	}
	assert.Equal(t, 10, v.opaque.len())
	_, err := v.Verify(context.Background(), "mt_24")
	require.NoError(t, err)
	assert.Equal(t, int32(25), b.calls.Load(), "the newest entries are kept")
	_, err = v.Verify(context.Background(), "mt_00")
	require.NoError(t, err)
	assert.Equal(t, int32(26), b.calls.Load(), "the oldest were dropped")
}

func TestOpaqueCacheDropsExpiredEntries(t *testing.T) {
	c := &clock{now: testNow}
	b := &slowBackend{expiry: testNow.Add(time.Hour)}
	v := cachingVerifier(b, c, time.Second, 0)
	for i := range 5 {
		_, err := v.Verify(context.Background(), fmt.Sprintf("mt_%d", i))
		require.NoError(t, err)
	}
	c.advance(2 * time.Second)
	for i := range 5 {
		_, err := v.Verify(context.Background(), fmt.Sprintf("mt_%d", i))
		require.NoError(t, err)
	}
	assert.Equal(t, 5, v.opaque.len(), "a refreshed entry replaces the expired one")
}
