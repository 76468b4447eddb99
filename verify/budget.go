package verify

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// Defaults of the budget of calls to Clerk.
const (
	// defaultMaxClerkRate bounds the calls a second that verify
	// credentials with Clerk. Clerk takes 1,000 calls per 10 seconds from
	// a production instance (100 a second), and 100 from a development
	// one, for all the backends of the instance, not this gateway alone:
	// a gateway that spends it throttles every other one. 20 a second is a
	// fifth of a production instance's, leaving the rest to the others; it
	// still verifies 600 new credentials in the default cache_ttl of 30
	// seconds, far more than machines that renew their tokens hourly need.
	// A development instance wants 5 (half of its 10 a second).
	defaultMaxClerkRate = 20

	// rateWindow is what the rate is counted over, as Clerk counts its
	// limit: a burst (a gateway starting, a fleet of callers renewing
	// their tokens at once) may spend a window's calls at once.
	rateWindow = 10 * time.Second

	// defaultClerkPause is how long no call is made after a 429 that does
	// not say how long to wait: Clerk's window.
	defaultClerkPause = rateWindow
)

// The ways shares refuses a unit.
var (
	errAllTaken   = errors.New("all of it is in use")
	errShareTaken = errors.New("this client holds its fair share of it")
)

// shares is something of fixed capacity that clients hold units of (the
// calls in flight, or a window's calls), given out by one rule: while
// less than half of it is in use, to anyone; from then on, to a client
// holding none, or less than its fair share: the capacity divided by one
// more than the number of clients holding some (the one more is room kept
// for a client yet to come). So one client alone may hold about half of
// it, and a client that comes while others hold the rest still finds
// room. Its owner's lock guards it.
type shares struct {
	capacity, used int
	held           map[string]int // by client, for the clients holding some
}

func newShares(capacity int) shares { return shares{capacity: capacity, held: map[string]int{}} }

// take gives client one unit, or says why not.
func (s *shares) take(client string) error {
	held := s.held[client]
	switch {
	case s.used >= s.capacity:
		return errAllTaken
	case 2*s.used >= s.capacity && held >= max(1, s.capacity/(len(s.held)+1)):
		return errShareTaken
	}
	s.used++
	s.held[client] = held + 1
	return nil
}

// give takes back one unit of client's.
func (s *shares) give(client string) {
	s.used--
	if s.held[client]--; s.held[client] <= 0 {
		delete(s.held, client)
	}
}

// reset takes back every unit.
func (s *shares) reset() {
	s.used = 0
	clear(s.held)
}

// clerkBudget is what a Pool may spend of Clerk's API beyond the calls in
// flight: at most a rate of calls a second that verify credentials,
// counted over rateWindow and shared between clients by the rule of
// shares; and no call at all, fetches of the signing keys included, until
// the time Clerk's last 429 asked to wait has passed. It is safe for
// concurrent use.
type clerkBudget struct {
	now func() time.Time

	mu          sync.Mutex
	window      time.Time // when the window thisWindow counts began
	thisWindow  shares    // rate times rateWindow's seconds
	pausedUntil time.Time
}

func newClerkBudget(rate int, now func() time.Time) *clerkBudget {
	return &clerkBudget{now: now, thisWindow: newShares(rate * int(rateWindow/time.Second))}
}

// admit spends one of this window's calls for client, or refuses it: with
// ReasonRateLimited while Clerk asked to wait (RetryAfter: what is left of
// the wait), with ReasonCallsLimited when the window's calls, or client's
// share of them, are spent (RetryAfter: until the next window).
func (b *clerkBudget) admit(client string) *Error {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.pausedAt(now); err != nil {
		return err
	}
	if window := now.Truncate(rateWindow); !window.Equal(b.window) {
		b.window = window
		b.thisWindow.reset()
	}
	if err := b.thisWindow.take(client); err != nil {
		return callsLimited(b.window.Add(rateWindow).Sub(now), "calls to Clerk in this window of "+rateWindow.String(), err)
	}
	return nil
}

// paused refuses a call while Clerk asked to wait, as admit does.
func (b *clerkBudget) paused() *Error {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pausedAt(now)
}

// errPaused is the cause of the refusals while Clerk asked to wait.
var errPaused = errors.New("Clerk answered 429: no call until its Retry-After has passed")

func (b *clerkBudget) pausedAt(now time.Time) *Error {
	if left := b.pausedUntil.Sub(now); left > 0 {
		return &Error{Reason: ReasonRateLimited, RetryAfter: left, Description: "Clerk is rate-limiting verifications", Err: errPaused}
	}
	return nil
}

// observe notes how a call ended: after a 429, no call is made for as
// long as its Retry-After says, or defaultClerkPause when it says nothing.
func (b *clerkBudget) observe(err error) {
	if backend.KindOf(err) != backend.KindRateLimited {
		return
	}
	wait := defaultClerkPause
	var apiErr *backend.Error
	if errors.As(err, &apiErr) && apiErr.RetryAfter > 0 {
		wait = apiErr.RetryAfter
	}
	until := b.now().Add(wait)
	b.mu.Lock()
	defer b.mu.Unlock()
	if until.After(b.pausedUntil) {
		b.pausedUntil = until
	}
}

// callsLimited is the refusal of a credential that needs a call to Clerk
// which what (the calls in flight, or a window's) has no room for.
func callsLimited(retryAfter time.Duration, what string, cause error) *Error {
	return &Error{Reason: ReasonCallsLimited, RetryAfter: retryAfter,
		Description: "too many credentials are being verified with Clerk right now", Err: fmt.Errorf("%s: %w", what, cause)}
}

// budgetedKeys fetches signing keys within a Pool's budget: none while
// Clerk asked to wait, and a 429 makes every call of the Pool wait.
type budgetedKeys struct {
	jwksFetcher
	budget *clerkBudget
}

func (k budgetedKeys) JWKS(ctx context.Context) (*backend.JWKS, error) {
	if err := k.budget.paused(); err != nil {
		return nil, err
	}
	set, err := k.jwksFetcher.JWKS(ctx)
	k.budget.observe(err)
	return set, err
}
