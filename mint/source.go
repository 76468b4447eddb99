// Package mint keeps an M2M token for a machine's outgoing calls: it mints
// one with Clerk's Backend API when first asked, hands the same token to
// every call while it is fresh, mints the next one in the background before
// it goes stale, and keeps handing out a still-valid token while Clerk
// cannot mint. It knows nothing of Caddy.
package mint

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// Minter mints tokens. *backend.Client (with a machine secret key) is one.
type Minter interface {
	CreateM2MToken(ctx context.Context, opts backend.CreateM2MTokenOptions) (*backend.CreatedM2MToken, error)
}

// Defaults of Options.
const (
	// DefaultRenewAt is the share of a token's lifetime after which the
	// next one is minted.
	DefaultRenewAt = 0.5
	// DefaultTimeout is the budget of one mint.
	DefaultTimeout = 5 * time.Second
	// DefaultMargin is how close to its expiry a token stops being handed
	// out (see Options.Margin).
	DefaultMargin = 10 * time.Second
	// MinLifetime is the shortest lifetime worth asking for: three times
	// DefaultMargin, so that a token is handed out for most of its life
	// rather than spending it in the margin, where every call would want
	// a new one.
	MinLifetime = 3 * DefaultMargin
	// MaxLifetime is the longest lifetime worth asking for: a token that
	// leaks works until it expires (or is revoked in Clerk's dashboard),
	// and a Source renews its tokens itself, so a longer one buys nothing
	// but risk.
	MaxLifetime = 24 * time.Hour
	// DefaultMintInterval is the least time between two mints.
	DefaultMintInterval = 5 * time.Second
)

// Options tune a Source. Zero values take the defaults.
type Options struct {
	// Token is what to mint.
	Token backend.CreateM2MTokenOptions

	// RenewAt is the share of a token's lifetime after which the next one is
	// minted, in the background: the calls keep the current token meanwhile.
	// Default DefaultRenewAt.
	RenewAt float64

	// Margin is how close to its expiry a token is no longer handed out, so
	// that it does not expire on its way to the callee, while a new one can
	// be minted. Default DefaultMargin (less for very short lifetimes: a
	// tenth of the lifetime at most).
	Margin time.Duration

	// Timeout is the budget of one mint. Default DefaultTimeout.
	Timeout time.Duration

	// MintInterval is the least time between two mints, whatever the
	// first one brought: after a failure, so that an outage of Clerk's does
	// not turn every call into an attempt; after a success too, so that
	// tokens Clerk hands back with little life left (a clock ahead of
	// Clerk's, a cap on their lifetime) do not turn every call into a mint,
	// each of which is billed. A mint that declines the token Clerk handed
	// back and asks for a new one (see Mint) is one. Meanwhile, calls get
	// the current token as long as it has not expired, margin or not.
	// Default DefaultMintInterval.
	MintInterval time.Duration

	// OnMint, if set, is told how each call to mint ended (nil: a token),
	// a declined token's included (see Mint). For metrics.
	OnMint func(error)

	// OnShortLived, if set, is told of a token that came with less than
	// nine tenths of the life asked for (of the MinRemainingTTLSeconds when
	// they are set, since Clerk may then hand back an older token): what
	// was asked, and what it got, counted from when the mint started.
	OnShortLived func(asked, got time.Duration)

	// OnDeclined, if set, is told of a token Clerk handed back (with
	// MinRemainingTTLSeconds) that outlives the lifetime asked for, and
	// was not used (see Mint): when it expires, zero if never.
	OnDeclined func(expiresAt time.Time)

	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (o *Options) applyDefaults() {
	if o.RenewAt <= 0 || o.RenewAt > 1 {
		o.RenewAt = DefaultRenewAt
	}
	if o.Margin <= 0 {
		o.Margin = DefaultMargin
	}
	if lifetime := time.Duration(o.Token.SecondsUntilExpiration) * time.Second; lifetime > 0 {
		o.Margin = min(o.Margin, lifetime/10)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MintInterval <= 0 {
		o.MintInterval = DefaultMintInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Source hands out a machine's current token. It is safe for concurrent use.
type Source struct {
	minter Minter
	opts   Options
	flight singleflight.Group
	base   context.Context // bounds every mint; ends with Close
	close  context.CancelFunc

	mu          sync.Mutex
	current     *issued
	lastAttempt time.Time
	lastErr     error
}

// issued is a minted token and its timeline.
type issued struct {
	token     string
	renewAt   time.Time // zero for a token that never expires
	expiresAt time.Time // zero for a token that never expires
}

// NewSource returns a Source minting through minter. It mints nothing until
// a token is asked for.
func NewSource(minter Minter, opts Options) *Source {
	opts.applyDefaults()
	base, cancel := context.WithCancel(context.Background())
	return &Source{minter: minter, opts: opts, base: base, close: cancel}
}

// ErrUnavailable is the error of Token when no valid token can be had.
var ErrUnavailable = errors.New("no valid M2M token can be had from Clerk right now")

// Token returns a valid token: the current one while it is fresh enough
// (starting the next mint in the background once its renewal point has
// passed), else a new one, minted once for all concurrent callers, each of
// which stops waiting when its own context ends. While MintInterval
// forbids a new mint, the current token is returned as long as it has not
// expired. Its error wraps ErrUnavailable, and Clerk's error when there was
// one.
func (s *Source) Token(ctx context.Context) (string, error) {
	now := s.opts.Now()
	s.mu.Lock()
	current, paced := s.current, now.Sub(s.lastAttempt) < s.opts.MintInterval
	s.mu.Unlock()
	if current != nil && s.valid(current, now) {
		if !current.renewAt.IsZero() && !now.Before(current.renewAt) && !paced {
			s.flight.DoChan("mint", s.mint) // renew in the background; the call goes on with the current token
		}
		return current.token, nil
	}
	if paced {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.lastOutcome(now) // in its margin, or none: no mint is allowed yet
	}
	select {
	case res := <-s.flight.DoChan("mint", s.mint):
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", errors.Join(ErrUnavailable, ctx.Err())
	}
}

// RetryAfter is how long a caller refused a token should wait.
func (s *Source) RetryAfter() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(time.Second, s.opts.MintInterval-s.opts.Now().Sub(s.lastAttempt))
}

// Close stops any mint under way.
func (s *Source) Close() { s.close() }

func (s *Source) valid(t *issued, now time.Time) bool {
	return t.expiresAt.IsZero() || now.Before(t.expiresAt.Add(-s.opts.Margin))
}

// lastOutcome is what a caller gets while MintInterval forbids a mint: the
// current token until it expires, else ErrUnavailable with Clerk's error
// of the last attempt, if any. s.mu must be held.
func (s *Source) lastOutcome(now time.Time) (string, error) {
	if t := s.current; t != nil && (t.expiresAt.IsZero() || now.Before(t.expiresAt)) {
		return t.token, nil
	}
	return "", errors.Join(ErrUnavailable, s.lastErr)
}

// mint asks Clerk for a token (see Mint) and makes it the current one,
// unless MintInterval forbids it: a caller may have found no pacing just
// before a mint under way recorded its attempt (when it ends), and start
// this one once that one is over. It then gets what the last attempt
// brought. A mint that declines the token Clerk handed back and asks for
// a new one is one attempt: callers wait for the new one, or keep the
// current token meanwhile.
func (s *Source) mint() (any, error) {
	start := s.opts.Now()
	s.mu.Lock()
	if start.Sub(s.lastAttempt) < s.opts.MintInterval {
		defer s.mu.Unlock()
		return s.lastOutcome(start)
	}
	s.mu.Unlock()
	minted, err := Mint(s.base, s.minter, s.opts)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastAttempt, s.lastErr = start, err
	if err != nil {
		return nil, errors.Join(ErrUnavailable, err)
	}
	s.current = s.timeline(minted.CreatedM2MToken, minted.At)
	return minted.Token, nil
}

// Minted is a token Clerk handed out, and when the call that got it
// started.
type Minted struct {
	*backend.CreatedM2MToken
	At time.Time
}

// Mint gets the token opts describe from Clerk, each call bounded by
// opts.Timeout and told to opts.OnMint.
//
// With Token.MinRemainingTTLSeconds, Clerk may hand back a live token of
// the machine with the same claims instead of minting one: whichever it
// is, however long it lives, one that never expires included (minted by
// hand, or by a sidecar with a longer ttl whose token was logged). Such a
// token is used only if it expires within the lifetime asked for
// (Token.SecondsUntilExpiration) of now; else OnDeclined is told, and Mint
// asks again without MinRemainingTTLSeconds, for a new token: one more
// call to Clerk, and one more billed mint.
func Mint(ctx context.Context, minter Minter, opts Options) (Minted, error) {
	opts.applyDefaults()
	token := opts.Token
	minted, err := opts.call(ctx, minter, token)
	if err == nil && token.MinRemainingTTLSeconds > 0 && !opts.withinLifetime(minted) {
		if opts.OnDeclined != nil {
			opts.OnDeclined(expiry(minted.CreatedM2MToken))
		}
		token.MinRemainingTTLSeconds = 0
		minted, err = opts.call(ctx, minter, token)
	}
	if err != nil {
		return Minted{}, err
	}
	opts.reportShortLife(minted, token)
	return minted, nil
}

// call makes one call to Clerk for token.
func (o *Options) call(ctx context.Context, minter Minter, token backend.CreateM2MTokenOptions) (Minted, error) {
	start := o.Now()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	created, err := minter.CreateM2MToken(ctx, token)
	if o.OnMint != nil {
		o.OnMint(err)
	}
	return Minted{CreatedM2MToken: created, At: start}, err
}

// withinLifetime reports whether a token Clerk handed back expires within
// the lifetime asked for of now, or of when Clerk made it if that is later
// (a clock behind Clerk's must not decline a token minted just now), give
// or take a second for the rounding to whole seconds. One that never
// expires does not, unless that is what was asked for.
func (o *Options) withinLifetime(m Minted) bool {
	lifetime := time.Duration(o.Token.SecondsUntilExpiration) * time.Second
	if lifetime <= 0 {
		return true
	}
	if m.Expiration == nil {
		return false
	}
	from := o.Now()
	if created := backend.Time(m.CreatedAt); created.After(from) {
		from = created
	}
	return !backend.Time(*m.Expiration).After(from.Add(lifetime + time.Second))
}

// expiry is when a token Clerk made expires, zero if never.
func expiry(created *backend.CreatedM2MToken) time.Time {
	if created.Expiration == nil {
		return time.Time{}
	}
	return backend.Time(*created.Expiration)
}

// reportShortLife tells OnShortLived of a token minted as token asked
// with less than nine tenths of the life asked for.
func (o *Options) reportShortLife(m Minted, token backend.CreateM2MTokenOptions) {
	asked := time.Duration(token.SecondsUntilExpiration) * time.Second
	if minRemaining := token.MinRemainingTTLSeconds; minRemaining > 0 {
		asked = time.Duration(minRemaining) * time.Second
	}
	expiresAt := expiry(m.CreatedM2MToken)
	if o.OnShortLived == nil || asked <= 0 || expiresAt.IsZero() {
		return
	}
	if got := expiresAt.Sub(m.At); got < asked/10*9 {
		o.OnShortLived(asked, got)
	}
}

// timeline places a minted token's renewal point at RenewAt of its
// lifetime, which Clerk states (the lifetime asked for stands in when it
// does not).
func (s *Source) timeline(created *backend.CreatedM2MToken, mintedAt time.Time) *issued {
	t := &issued{token: created.Token}
	switch {
	case created.Expiration != nil:
		t.expiresAt = backend.Time(*created.Expiration)
	case s.opts.Token.SecondsUntilExpiration > 0:
		t.expiresAt = mintedAt.Add(time.Duration(s.opts.Token.SecondsUntilExpiration) * time.Second)
	default:
		return t // never expires: never renewed
	}
	t.renewAt = mintedAt.Add(time.Duration(float64(t.expiresAt.Sub(mintedAt)) * s.opts.RenewAt))
	return t
}
