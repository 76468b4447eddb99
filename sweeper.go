package clerkm2m

import (
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/caddy-clerk/clerk-m2m/verify"
)

const (
	// sweepInterval is how often each instance offers to remove the
	// expired shared verdicts, give or take a fifth (so that a cluster
	// started at once does not sweep at once); an instance that finds the
	// storage swept by another within the last half interval does nothing.
	sweepInterval = 10 * time.Minute

	// maxSweptEntries bounds one sweep's work: the entries it reads. What
	// is left waits for the next sweep.
	maxSweptEntries = 10_000

	// sweepLock is the storage lock that lets one instance sweep at a time,
	// and sweptMarker where the last sweep's time is written.
	sweepLock   = "clerk_m2m_verdicts_sweep"
	sweptMarker = "clerk_m2m/verdicts_swept"

	// sweepLockWait bounds the wait for the lock: an instance that cannot
	// have it in that time leaves the sweep to the one that holds it.
	sweepLockWait = time.Minute
)

// verdictSweeper removes the expired shared verdicts from the cluster's
// storage while a configuration with shared_cache runs.
type verdictSweeper struct {
	storage certmagic.Storage
	logger  *zap.Logger
	trouble rate.Sometimes
	now     func() time.Time
	stop    context.CancelFunc
	done    chan struct{}
}

func newVerdictSweeper(storage certmagic.Storage, logger *zap.Logger) *verdictSweeper {
	return &verdictSweeper{storage: storage, logger: logger, now: time.Now,
		trouble: rate.Sometimes{First: 1, Interval: alertInterval}}
}

// start sweeps every sweepInterval, jittered, until stopped.
func (s *verdictSweeper) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		for {
			jitter := time.Duration(rand.Int64N(int64(sweepInterval / 5)))
			timer := time.NewTimer(sweepInterval - sweepInterval/10 + jitter)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
				if _, err := s.sweep(ctx); err != nil && ctx.Err() == nil {
					s.failed(err)
				}
			}
		}
	}()
}

// halt stops the sweeps and waits for the one under way to end.
func (s *verdictSweeper) halt() {
	if s.stop != nil {
		s.stop()
		<-s.done
	}
}

func (s *verdictSweeper) failed(err error) {
	countingObserver{}.sharedCacheError(opSweep)
	s.trouble.Do(func() {
		s.logger.Warn("could not remove the expired shared verdicts from the storage; the next sweep tries again "+
			"(logged once a minute while it lasts)", zap.Error(err))
	})
}

// opSweep names sweeps in caddy_clerk_m2m_shared_cache_errors_total.
const opSweep = "sweep"

// sweep removes the expired entries under verdictsPrefix, at most
// maxSweptEntries of them read, holding the storage's sweepLock so that
// one instance sweeps at a time, unless another swept within the last
// half interval. It returns how many entries it removed. An entry's expiry
// is read from its header, without its keys: an entry that does not parse
// is removed too.
func (s *verdictSweeper) sweep(ctx context.Context) (int, error) {
	lockCtx, cancel := context.WithTimeout(ctx, sweepLockWait)
	defer cancel()
	if err := s.storage.Lock(lockCtx, sweepLock); err != nil {
		return 0, err
	}
	defer func() { _ = s.storage.Unlock(context.WithoutCancel(ctx), sweepLock) }()
	if s.sweptLately(ctx) {
		return 0, nil
	}
	keys, err := s.storage.List(ctx, strings.TrimSuffix(verdictsPrefix, "/"), true)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	removed, read := 0, 0
	for _, key := range keys {
		if !isVerdictKey(key) {
			continue // a scope's folder, or what is not ours
		}
		if read++; read > maxSweptEntries {
			break
		}
		if expired, err := s.expired(ctx, key); err != nil {
			return removed, err
		} else if expired {
			if err := s.storage.Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return removed, err
			}
			removed++
		}
	}
	return removed, s.storage.Store(ctx, sweptMarker, []byte(s.now().UTC().Format(time.RFC3339Nano)))
}

// isVerdictKey reports whether key names an entry: verdictsPrefix, a
// scope, a token MAC (64 hex digits; a storage's temporary files, or a
// scope's folder, are not entries).
func isVerdictKey(key string) bool {
	rest, ok := strings.CutPrefix(key, verdictsPrefix)
	scope, tokenMAC, found := strings.Cut(rest, "/")
	return ok && found && scope != "" && len(tokenMAC) == 64 && strings.Trim(tokenMAC, "0123456789abcdef") == ""
}

// expired reports whether the entry of key has expired, or is not one.
func (s *verdictSweeper) expired(ctx context.Context, key string) (bool, error) {
	data, err := s.storage.Load(ctx, key)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil // removed meanwhile
	case err != nil:
		return false, err
	}
	expiry, err := verify.SharedEntryExpiry(data)
	return err != nil || !s.now().Before(expiry), nil
}

// sweptLately reports whether an instance swept within the last half
// interval.
func (s *verdictSweeper) sweptLately(ctx context.Context) bool {
	data, err := s.storage.Load(ctx, sweptMarker)
	if err != nil {
		return false
	}
	swept, err := time.Parse(time.RFC3339Nano, string(data))
	return err == nil && s.now().Sub(swept) < sweepInterval/2
}
