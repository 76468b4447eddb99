package clerkm2m

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// The layout of shared verdicts in the cluster's storage: an entry under
// clerk_m2m/verdicts/<minute>/<name>, where name is the one verify gives
// it and minute is when the entry expires, in minutes since 1970, rounded
// up. Whatever has expired is under the folders of past minutes, removed
// a folder at a time whatever the rate of new credentials, and no entry
// ever needs to be read to be removed.
const (
	verdictsFolder = "clerk_m2m/verdicts"
	bucketWidth    = time.Minute

	// maxStorageReads bounds the reads of the storage in flight, those
	// given up on but not yet returned included (a storage may ignore its
	// context): past it, lookups are misses, and Clerk is asked.
	maxStorageReads = 64

	// maxStoredBytes bounds what is read of an entry: far more than any
	// verdict verify writes, which it checks itself.
	maxStoredBytes = 1 << 20

	// storageTimeout bounds every operation of a sweep.
	storageTimeout = 10 * time.Second
)

// clusterStore is the cluster's storage (the `storage` global option) as
// the verifier's Store of shared verdicts.
type clusterStore struct {
	storage certmagic.Storage
	reads   chan struct{} // one token per read in flight
}

// useClusterStore has the verifier share its verdicts through the
// configuration's storage, and the App sweep the expired ones while the
// configuration runs.
func (h *Handler) useClusterStore(ctx caddy.Context) {
	storage := ctx.Storage() // the `storage` global option, or Caddy's default folder
	h.settings.verify.Store = &clusterStore{storage: storage, reads: make(chan struct{}, maxStorageReads)}
	h.settings.verify.OnStoreError = func(op string, err error) {
		h.observer.sharedCacheError(op)
		h.alerts.sharedCacheTrouble(op, err)
	}
	if app, err := ctx.App("clerk_m2m"); err == nil {
		app.(*App).sweepVerdicts(storage)
	}
}

// bucket is the folder of the entries that expire in the minute of t.
func bucket(t time.Time) int64 {
	return (t.UnixMilli() + bucketWidth.Milliseconds() - 1) / bucketWidth.Milliseconds()
}

func entryKey(minute int64, name string) string {
	return path.Join(verdictsFolder, strconv.FormatInt(minute, 10), name)
}

// Put stores the entry in the folder of the minute it expires in.
func (s *clusterStore) Put(ctx context.Context, name string, entry []byte, expiry time.Time) error {
	return s.storage.Store(ctx, entryKey(bucket(expiry), name), entry)
}

// Get reads the entry of name that expires by expiresBy, from the latest
// minute down to the current one, within ctx. The reads run apart, so
// that a storage that ignores its context costs no more than ctx allows.
func (s *clusterStore) Get(ctx context.Context, name string, expiresBy time.Time) ([]byte, error) {
	select {
	case s.reads <- struct{}{}:
	default:
		return nil, errors.New("as many reads of the storage as allowed are in flight")
	}
	return apart(ctx, func(ctx context.Context) ([]byte, error) {
		defer func() { <-s.reads }()
		for minute := bucket(expiresBy); minute >= bucket(time.Now()) && ctx.Err() == nil; minute-- {
			if data, err := s.load(ctx, entryKey(minute, name)); !errors.Is(err, fs.ErrNotExist) {
				return data, err
			}
		}
		return nil, fs.ErrNotExist
	})
}

// load reads an entry with bounds: from a folder, only a regular file,
// never through a symbolic link, never waiting on a pipe, at most
// maxStoredBytes; from another storage, what it loads, if not too large.
func (s *clusterStore) load(ctx context.Context, key string) ([]byte, error) {
	files, ok := s.storage.(*certmagic.FileStorage)
	if !ok {
		data, err := s.storage.Load(ctx, key)
		if err == nil && len(data) > maxStoredBytes {
			return nil, fmt.Errorf("%s holds more than %d bytes: not a verdict", key, maxStoredBytes)
		}
		return data, err
	}
	file, err := os.OpenFile(files.Filename(key), os.O_RDONLY|openNoFollowNoBlock, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fs.ErrNotExist
		}
		return nil, err
	}
	defer file.Close()
	if info, err := file.Stat(); err != nil || !info.Mode().IsRegular() || info.Size() > maxStoredBytes {
		return nil, fmt.Errorf("%s is not a regular file of at most %d bytes: not a verdict", key, maxStoredBytes)
	}
	return io.ReadAll(io.LimitReader(file, maxStoredBytes))
}

// verdictSweeper removes the expired shared verdicts from the cluster's
// storage while a configuration with shared_cache runs: every minute or
// so, the folders of the minutes past. Each instance of a cluster sweeps
// on its own (removing is idempotent); every operation is bounded in
// time, one at a time, and stopping never waits for the storage.
type verdictSweeper struct {
	storage certmagic.Storage
	// deletesFolders: the storage's Delete of a folder removes all it
	// holds, as a folder storage's does.
	deletesFolders bool
	busy           chan struct{} // held by the operation under way (see bounded)
	logger         *zap.Logger
	trouble        *alert
	stop           context.CancelFunc
	done           chan struct{} // closed when the sweeps have stopped
}

func newVerdictSweeper(storage certmagic.Storage, logger *zap.Logger) *verdictSweeper {
	_, files := storage.(*certmagic.FileStorage)
	return &verdictSweeper{storage: storage, deletesFolders: files, busy: make(chan struct{}, 1), logger: logger, trouble: newAlert()}
}

// start sweeps every bucketWidth or so (jittered, so that a cluster
// started at once does not sweep at once), until halted.
func (s *verdictSweeper) start() {
	var ctx context.Context
	ctx, s.stop = context.WithCancel(context.Background())
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		for {
			timer := time.NewTimer(bucketWidth*4/5 + rand.N(bucketWidth*2/5))
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
			if err := s.sweep(ctx, time.Now()); err != nil && ctx.Err() == nil {
				countingObserver{}.sharedCacheError(opSweep)
				s.trouble.log(s.logger, "could not remove all the expired shared verdicts from the storage; the next sweep tries again",
					zap.Error(err))
			}
		}
	}()
}

// halt stops the sweeps; one under way gives up at its next operation.
func (s *verdictSweeper) halt() {
	if s.stop != nil {
		s.stop()
	}
}

// opSweep names sweeps in caddy_clerk_m2m_shared_cache_errors_total.
const opSweep = "sweep"

// sweep removes the folders of the minutes before now, each on its own: a
// folder that fails does not keep the others, and no entry is ever read.
// While an operation given up has not returned, the rest waits for the
// next sweep.
func (s *verdictSweeper) sweep(ctx context.Context, now time.Time) error {
	folders, err := bounded(ctx, s.busy, func(ctx context.Context) ([]string, error) { return s.storage.List(ctx, verdictsFolder, false) })
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	var troubles []error
	for _, folder := range folders {
		minute, err := strconv.ParseInt(path.Base(folder), 10, 64)
		if err != nil || minute > bucket(now)-1 {
			continue // not ours, or not expired yet
		}
		err = s.remove(ctx, folder)
		troubles = append(troubles, err)
		if errors.Is(err, errStorageBusy) || ctx.Err() != nil {
			break
		}
	}
	return errors.Join(troubles...)
}

// remove deletes a folder and all it holds: in one operation on a storage
// whose Delete removes folders whole; elsewhere, what the folder holds
// first, one by one, what is inside a folder before the folder. The
// listing comes first: some storages' Delete of a folder removes only its
// index (Redis's does), after which what it held can no longer be listed.
// At the first failure the rest, and the folder, wait for the next sweep,
// which lists them again.
func (s *verdictSweeper) remove(ctx context.Context, folder string) error {
	if !s.deletesFolders {
		keys, err := bounded(ctx, s.busy, func(ctx context.Context) ([]string, error) { return s.storage.List(ctx, folder, true) })
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for _, key := range slices.Backward(keys) {
			if err := s.delete(ctx, key); err != nil {
				return err
			}
		}
	}
	return s.delete(ctx, folder)
}

// delete deletes key, within storageTimeout.
func (s *verdictSweeper) delete(ctx context.Context, key string) error {
	_, err := bounded(ctx, s.busy, func(ctx context.Context) (struct{}, error) { return struct{}{}, s.storage.Delete(ctx, key) })
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// errStorageBusy ends a sweep while the storage has not returned from an
// operation given up.
var errStorageBusy = errors.New("the storage has not returned from an operation a sweep gave up on")

// bounded runs op apart within storageTimeout, holding busy (a slot) until
// op returns, however long after it was given up: while it is held, no
// other operation starts, so that a storage that hangs holds one
// goroutine of the sweeper, not one more every sweep.
func bounded[T any](ctx context.Context, busy chan struct{}, op func(context.Context) (T, error)) (T, error) {
	select {
	case busy <- struct{}{}:
	default:
		var none T
		return none, errStorageBusy
	}
	ctx, cancel := context.WithTimeout(ctx, storageTimeout)
	defer cancel()
	return apart(ctx, func(ctx context.Context) (T, error) {
		defer func() { <-busy }()
		return op(ctx)
	})
}

// apart runs op in a goroutine of its own, and returns what it returns,
// or ctx's error as soon as ctx ends: a storage that ignores its context
// holds the goroutine, never the caller.
func apart[T any](ctx context.Context, op func(context.Context) (T, error)) (T, error) {
	type result struct {
		value T
		err   error
	}
	done := make(chan result, 1)
	go func() {
		value, err := op(ctx)
		done <- result{value, err}
	}()
	select {
	case r := <-done:
		return r.value, r.err
	case <-ctx.Done():
		var none T
		return none, ctx.Err()
	}
}
