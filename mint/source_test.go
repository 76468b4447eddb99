package mint

import (
	"context"
	"errors"
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

var start = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// fakeMinter mints numbered tokens valid for lifetime from the clock's now,
// or fails, counting calls; asked for a token with some life left, it
// hands back handBack when it is set. delay makes calls overlap; no test
// reads how long they took.
type fakeMinter struct {
	clock    *testclock.Clock
	lifetime time.Duration
	delay    time.Duration
	hang     bool
	mints    atomic.Int32
	mu       sync.Mutex
	err      error
	handBack *backend.CreatedM2MToken
	asked    []backend.CreateM2MTokenOptions
}

func (f *fakeMinter) CreateM2MToken(ctx context.Context, opts backend.CreateM2MTokenOptions) (*backend.CreatedM2MToken, error) {
	n := f.mints.Add(1)
	if f.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	time.Sleep(f.delay)
	f.mu.Lock()
	err, handBack := f.err, f.handBack
	f.asked = append(f.asked, opts)
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if handBack != nil && opts.MinRemainingTTLSeconds > 0 {
		return handBack, nil
	}
	created := &backend.CreatedM2MToken{Token: fmt.Sprintf("mt_token_%d", n), M2MToken: backend.M2MToken{CreatedAt: f.clock.Now().UnixMilli()}}
	if f.lifetime > 0 {
		expiration := f.clock.Now().Add(f.lifetime).UnixMilli()
		created.Expiration = &expiration
	}
	return created, nil
}

func (f *fakeMinter) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func newSource(lifetime time.Duration) (*Source, *fakeMinter, *testclock.Clock) {
	c := testclock.New(start)
	m := &fakeMinter{clock: c, lifetime: lifetime}
	return NewSource(m, Options{Now: c.Now, Token: backend.CreateM2MTokenOptions{SecondsUntilExpiration: int64(lifetime / time.Second)}}), m, c
}

// settle waits for the mint under way, if any, to end. Token starts its
// background mints before it returns, so after settle every mint the calls
// so far started has been counted.
func settle(s *Source) {
	_, _, _ = s.flight.Do("mint", func() (any, error) { return nil, nil })
}

func token(t *testing.T, s *Source) string {
	t.Helper()
	tok, err := s.Token(context.Background())
	require.NoError(t, err)
	return tok
}

func TestOneTokenForMany(t *testing.T) {
	s, m, c := newSource(time.Hour)
	first := token(t, s)
	for range 20 {
		c.Advance(time.Minute)
		assert.Equal(t, first, token(t, s))
	}
	assert.Equal(t, int32(1), m.mints.Load())
}

func TestABurstOfFirstCallsMintsOnce(t *testing.T) {
	s, m, _ := newSource(time.Hour)
	m.delay = 50 * time.Millisecond
	tokens := make(chan string, 50)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { tokens <- token(t, s) })
	}
	wg.Wait()
	close(tokens)
	for tok := range tokens {
		assert.Equal(t, "mt_token_1", tok)
	}
	assert.Equal(t, int32(1), m.mints.Load())
}

func TestRenewedInTheBackgroundAtHalfLife(t *testing.T) {
	s, m, c := newSource(time.Hour)
	first := token(t, s)
	c.Advance(29 * time.Minute)
	assert.Equal(t, first, token(t, s))
	assert.Equal(t, int32(1), m.mints.Load(), "not yet")

	c.Advance(2 * time.Minute) // past the half of its life
	assert.Equal(t, first, token(t, s), "the call does not wait for the renewal")
	settle(s)
	assert.Equal(t, "mt_token_2", token(t, s))
	assert.Equal(t, int32(2), m.mints.Load())
}

func TestCurrentTokenServesThroughAnOutage(t *testing.T) {
	s, m, c := newSource(time.Hour)
	first := token(t, s)
	m.fail(&backend.Error{Status: 503})
	c.Advance(31 * time.Minute) // past the renewal point
	assert.Equal(t, first, token(t, s), "Clerk is down, the token is still valid")
	settle(s)
	assert.Equal(t, int32(2), m.mints.Load(), "a renewal was tried")
	for range 10 {
		assert.Equal(t, first, token(t, s))
	}
	settle(s)
	assert.Equal(t, int32(2), m.mints.Load(), "failed renewals are paced, not one per call")
	c.Advance(5 * time.Second)
	assert.Equal(t, first, token(t, s))
	settle(s)
	assert.Equal(t, int32(3), m.mints.Load(), "and tried again later")

	c.Advance(28*time.Minute + 55*time.Second) // within the 10s margin of expiry
	_, err := s.Token(context.Background())
	require.ErrorIs(t, err, ErrUnavailable)
	assert.Equal(t, backend.KindUnavailable, backend.KindOf(err))
	assert.GreaterOrEqual(t, s.RetryAfter(), time.Second)

	m.fail(nil)
	c.Advance(5 * time.Second)
	assert.Equal(t, "mt_token_"+fmt.Sprint(m.mints.Load()+1), token(t, s), "minted again once Clerk is back")
}

func TestFailuresWithoutATokenArePaced(t *testing.T) {
	s, m, c := newSource(time.Hour)
	m.fail(&backend.Error{Status: 401, Code: "machine_secret_key_invalid"})
	for range 10 {
		_, err := s.Token(context.Background())
		require.ErrorIs(t, err, ErrUnavailable)
		assert.Equal(t, backend.KindKeyRejected, backend.KindOf(err), "the cause is kept")
	}
	assert.Equal(t, int32(1), m.mints.Load(), "one attempt per retry interval")
	c.Advance(5 * time.Second)
	_, _ = s.Token(context.Background())
	assert.Equal(t, int32(2), m.mints.Load())
}

func TestNeverExpiringTokensAreNeverRenewed(t *testing.T) {
	s, m, c := newSource(0)
	first := token(t, s)
	c.Advance(1000 * time.Hour)
	assert.Equal(t, first, token(t, s))
	settle(s)
	assert.Equal(t, int32(1), m.mints.Load())
}

func TestCallerGivesUpWithItsContextAndCloseStopsTheMint(t *testing.T) {
	s, m, _ := newSource(time.Hour)
	m.hang = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := s.Token(ctx)
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	done := make(chan struct{})
	go func() {
		s.Close()
		_, _, _ = s.flight.Do("mint", func() (any, error) { return nil, errors.New("the hanging mint has ended") })
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute): // fails only if the mint never ends
		t.Fatal("Close did not end the mint under way")
	}
}

func TestMarginShrinksForShortLifetimes(t *testing.T) {
	s, _, _ := newSource(30 * time.Second)
	assert.Equal(t, 3*time.Second, s.opts.Margin)
	s, _, _ = newSource(time.Hour)
	assert.Equal(t, 10*time.Second, s.opts.Margin)
}

// TestTokensBornNearExpiryAreMintedOncePerInterval: Clerk hands back tokens
// already inside the margin (a clock ahead of Clerk's, a capped lifetime):
// calls keep the current token while it lives, and mint at most once per
// MintInterval instead of once per call.
func TestTokensBornNearExpiryAreMintedOncePerInterval(t *testing.T) {
	c := testclock.New(start)
	m := &fakeMinter{clock: c, lifetime: 8 * time.Second} // inside the 10s margin as soon as it is minted
	var shortLived []time.Duration
	s := NewSource(m, Options{Now: c.Now, Token: backend.CreateM2MTokenOptions{SecondsUntilExpiration: 3600},
		OnShortLived: func(asked, got time.Duration) {
			assert.Equal(t, time.Hour, asked)
			shortLived = append(shortLived, got)
		}})
	for range 50 { // 5 seconds of calls, one every 100ms
		assert.Equal(t, "mt_token_1", token(t, s), "the current token, unexpired, rather than a refusal")
		c.Advance(100 * time.Millisecond)
	}
	assert.Equal(t, int32(1), m.mints.Load(), "50 calls within the interval, one mint")
	assert.Equal(t, []time.Duration{8 * time.Second}, shortLived, "the short life was reported")

	for range 50 { // the next 5 seconds
		_ = token(t, s)
		c.Advance(100 * time.Millisecond)
	}
	assert.Equal(t, int32(2), m.mints.Load(), "one more mint in the next interval")
}

func TestASuccessfulMintIsPacedToo(t *testing.T) {
	s, m, c := newSource(time.Minute) // renewed after 30s
	first := token(t, s)
	c.Advance(30 * time.Second)
	assert.Equal(t, first, token(t, s))
	settle(s)
	assert.Equal(t, "mt_token_2", token(t, s))

	c.Advance(4 * time.Second)
	s.mu.Lock()
	s.current.renewAt = c.Now() // as if the new token were due for renewal already
	s.mu.Unlock()
	assert.Equal(t, "mt_token_2", token(t, s))
	settle(s)
	assert.Equal(t, int32(2), m.mints.Load(), "no mint within the interval of the last one, though it succeeded")
	c.Advance(time.Second)
	_ = token(t, s)
	settle(s)
	assert.Equal(t, int32(3), m.mints.Load(), "and one once it has passed")
}

// TestAMintThatRacedTheLastIsPacedToo: a caller that found no pacing just
// before the mint under way recorded its attempt starts its own mint once
// that one is over; that mint asks Clerk for nothing within the interval,
// and hands out what the last one brought.
func TestAMintThatRacedTheLastIsPacedToo(t *testing.T) {
	s, m, _ := newSource(time.Minute)
	first := token(t, s)
	raced, err := s.mint()
	require.NoError(t, err)
	assert.Equal(t, first, raced)
	assert.Equal(t, int32(1), m.mints.Load(), "no second mint within the interval")

	failing, m, _ := newSource(time.Minute)
	m.fail(errors.New("clerk is down"))
	_, err = failing.Token(context.Background())
	require.Error(t, err)
	_, err = failing.mint()
	require.ErrorIs(t, err, ErrUnavailable)
	assert.ErrorContains(t, err, "clerk is down", "the last attempt's error")
	assert.Equal(t, int32(1), m.mints.Load())
}

func TestAnExpiredTokenIsNotHandedOutWhilePaced(t *testing.T) {
	c := testclock.New(start)
	m := &fakeMinter{clock: c, lifetime: time.Second}
	s := NewSource(m, Options{Now: c.Now, Token: backend.CreateM2MTokenOptions{SecondsUntilExpiration: 3600}})
	assert.Equal(t, "mt_token_1", token(t, s))
	c.Advance(2 * time.Second)
	_, err := s.Token(context.Background())
	require.ErrorIs(t, err, ErrUnavailable, "expired, and no mint allowed yet")
	assert.Equal(t, 3*time.Second, s.RetryAfter())
	c.Advance(3 * time.Second)
	assert.Equal(t, "mt_token_2", token(t, s))
}

func TestNoShortLifeReportedForTheLifeAsked(t *testing.T) {
	c := testclock.New(start)
	m := &fakeMinter{clock: c, lifetime: 10 * time.Minute}
	reported := 0
	s := NewSource(m, Options{Now: c.Now, OnShortLived: func(time.Duration, time.Duration) { reported++ },
		Token: backend.CreateM2MTokenOptions{SecondsUntilExpiration: 3600, MinRemainingTTLSeconds: 600}})
	_ = token(t, s)
	assert.Zero(t, reported, "with min_remaining_ttl, Clerk may hand back a token with that much life left")
}

// handedBack is a live token of the machine that Clerk hands back: made
// at created, expiring at expires (never when zero).
func handedBack(created, expires time.Time) *backend.CreatedM2MToken {
	token := &backend.CreatedM2MToken{Token: "mt_handed_back", M2MToken: backend.M2MToken{CreatedAt: created.UnixMilli()}}
	if !expires.IsZero() {
		token.Expiration = new(expires.UnixMilli())
	}
	return token
}

// sidecarSource is a Source asking for 30-second tokens, or one with at
// least 10 seconds left, whose declined tokens are collected.
func sidecarSource(m Minter, c *testclock.Clock, declined *[]time.Time) *Source {
	return NewSource(m, Options{Now: c.Now, OnDeclined: func(at time.Time) { *declined = append(*declined, inUTC(at)) },
		Token: backend.CreateM2MTokenOptions{SecondsUntilExpiration: 30, MinRemainingTTLSeconds: 10}})
}

// TestAHandedBackTokenThatOutlivesTheTTLIsDeclined: a token Clerk hands
// back for min_remaining_ttl that expires later than ttl from now (one that
// never expires, one minted with a longer ttl elsewhere) is never handed
// out: a new one is minted at once, without min_remaining_ttl, in the same
// attempt.
func TestAHandedBackTokenThatOutlivesTheTTLIsDeclined(t *testing.T) {
	for name, tc := range map[string]struct {
		created, expires time.Time
	}{
		"never expiring":                     {start.Add(-24 * time.Hour), time.Time{}},
		"an hour long, minted a minute ago":  {start.Add(-time.Minute), start.Add(59 * time.Minute)},
		"31 seconds left, from a longer ttl": {start.Add(-time.Hour), start.Add(31*time.Second + time.Millisecond)},
	} {
		t.Run(name, func(t *testing.T) {
			c := testclock.New(start)
			m := &fakeMinter{clock: c, lifetime: 30 * time.Second, handBack: handedBack(tc.created, tc.expires)}
			var declined []time.Time
			s := sidecarSource(m, c, &declined)
			assert.Equal(t, "mt_token_2", token(t, s), "a new token, minted at once")
			assert.Equal(t, []time.Time{tc.expires}, declined)
			assert.Equal(t, []backend.CreateM2MTokenOptions{
				{SecondsUntilExpiration: 30, MinRemainingTTLSeconds: 10},
				{SecondsUntilExpiration: 30},
			}, m.asked, "the second call asks for a new token")

			c.Advance(4 * time.Second)
			assert.Equal(t, "mt_token_2", token(t, s))
			settle(s)
			assert.Equal(t, int32(2), m.mints.Load(), "one attempt: nothing more within the interval")
		})
	}
}

// TestAHandedBackTokenWithinTheTTLIsUsed: a token that expires within ttl
// of now is used as Clerk hands it back, and so is one that expires within
// ttl of when Clerk made it, though the clock is behind Clerk's.
func TestAHandedBackTokenWithinTheTTLIsUsed(t *testing.T) {
	for name, tc := range map[string]struct {
		created, expires time.Time
	}{
		"minted 10 seconds ago with the same ttl": {start.Add(-10 * time.Second), start.Add(20 * time.Second)},
		"from a longer ttl, 30 seconds left":      {start.Add(-time.Hour), start.Add(30 * time.Second)},
		"minted now by a clock 10 seconds ahead":  {start.Add(10 * time.Second), start.Add(40 * time.Second)},
	} {
		t.Run(name, func(t *testing.T) {
			c := testclock.New(start)
			m := &fakeMinter{clock: c, lifetime: 30 * time.Second, handBack: handedBack(tc.created, tc.expires)}
			var declined []time.Time
			s := sidecarSource(m, c, &declined)
			assert.Equal(t, "mt_handed_back", token(t, s))
			assert.Empty(t, declined)
			assert.Equal(t, int32(1), m.mints.Load())
		})
	}
}

// TestADeclinedTokenIsNotHandedOutWhenTheNewMintFails: the declined token
// is no fallback: when the new mint fails, callers are refused until the
// interval has passed, as after any failed attempt.
func TestADeclinedTokenIsNotHandedOutWhenTheNewMintFails(t *testing.T) {
	c := testclock.New(start)
	m := &fakeMinter{clock: c, handBack: handedBack(start.Add(-time.Minute), time.Time{})}
	var declined []time.Time
	s := sidecarSource(&failAfterHandBack{m}, c, &declined)
	for range 5 {
		_, err := s.Token(context.Background())
		require.ErrorIs(t, err, ErrUnavailable, "never the declined token")
		assert.Equal(t, backend.KindUnavailable, backend.KindOf(err), "the new mint's error")
		c.Advance(time.Second)
	}
	assert.Len(t, declined, 1)
	assert.Equal(t, int32(2), m.mints.Load(), "one attempt in the interval: the token declined, the failed mint")
}

// failAfterHandBack hands back what its fakeMinter does, and fails to
// mint a new token.
type failAfterHandBack struct{ *fakeMinter }

func (f *failAfterHandBack) CreateM2MToken(ctx context.Context, opts backend.CreateM2MTokenOptions) (*backend.CreatedM2MToken, error) {
	if opts.MinRemainingTTLSeconds > 0 {
		return f.fakeMinter.CreateM2MToken(ctx, opts)
	}
	f.mints.Add(1)
	return nil, &backend.Error{Status: 503}
}

// TestMintOnItsOwn: Mint, which `caddy clerk-m2m mint` uses, declines as
// the Source does, counts both calls, and bounds each.
func TestMintOnItsOwn(t *testing.T) {
	c := testclock.New(start)
	m := &fakeMinter{clock: c, lifetime: time.Hour, handBack: handedBack(start.Add(-time.Hour), time.Time{})}
	var outcomes []error
	var declined []time.Time
	minted, err := Mint(context.Background(), m, Options{Now: c.Now, OnMint: func(err error) { outcomes = append(outcomes, err) },
		OnDeclined: func(at time.Time) { declined = append(declined, inUTC(at)) },
		Token:      backend.CreateM2MTokenOptions{SecondsUntilExpiration: 3600, MinRemainingTTLSeconds: 600}})
	require.NoError(t, err)
	assert.Equal(t, "mt_token_2", minted.Token)
	assert.Equal(t, start, minted.At)
	assert.Equal(t, []error{nil, nil}, outcomes, "both calls counted")
	assert.Equal(t, []time.Time{{}}, declined)

	m = &fakeMinter{clock: c, hang: true}
	_, err = Mint(context.Background(), m, Options{Now: c.Now, Timeout: time.Millisecond})
	assert.ErrorIs(t, err, context.DeadlineExceeded, "bounded by Timeout")
}

// inUTC is t in UTC, as the tests' times are, unless it is zero.
func inUTC(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}
