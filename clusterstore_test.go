package clerkm2m

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
)

const (
	scopeName = "0123456789abcdef/"
	testName  = scopeName + "00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff"
)

func newClusterStore(storage certmagic.Storage) *clusterStore {
	return &clusterStore{storage: storage, reads: make(chan struct{}, maxStorageReads)}
}

// TestEntriesAreFiledByTheMinuteTheyExpire: an entry is found by a reader
// that looks as far as its expiry, and by no other; it sits in the folder
// of its minute.
func TestEntriesAreFiledByTheMinuteTheyExpire(t *testing.T) {
	dir := t.TempDir()
	store := newClusterStore(&certmagic.FileStorage{Path: dir})
	ctx := context.Background()
	expiry := time.Now().Add(3 * time.Minute)
	require.NoError(t, store.Put(ctx, testName, []byte("verdict"), expiry))
	_, err := os.Stat(filepath.Join(dir, "clerk_m2m", "verdicts", strconv.FormatInt(bucket(expiry), 10), filepath.FromSlash(testName)))
	require.NoError(t, err, "filed under its minute")

	data, err := store.Get(ctx, testName, expiry.Add(time.Minute))
	require.NoError(t, err)
	assert.Equal(t, "verdict", string(data))
	_, err = store.Get(ctx, testName, time.Now().Add(time.Minute))
	assert.ErrorIs(t, err, fs.ErrNotExist, "a reader that keeps verdicts a minute does not look three minutes ahead")
	_, err = store.Get(ctx, scopeName+"another", expiry)
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

// TestTheStorageIsReadWithBounds: what sits at an entry's name in a folder
// is read only as a regular file of a bounded size, never through a link,
// never waiting on a pipe.
func TestTheStorageIsReadWithBounds(t *testing.T) {
	dir := t.TempDir()
	store := newClusterStore(&certmagic.FileStorage{Path: dir})
	expiry := time.Now().Add(30 * time.Second)
	path := filepath.Join(dir, filepath.FromSlash(entryKey(bucket(expiry), testName)))
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
	for name, plant := range map[string]func() error{
		"a link to /dev/zero": func() error { return os.Symlink("/dev/zero", path) },
		"a pipe":              func() error { return syscall.Mkfifo(path, 0o600) },
		"a 3 GiB sparse file": func() error {
			f, err := os.Create(path)
			if err == nil {
				err = errors.Join(f.Truncate(3<<30), f.Close())
			}
			return err
		},
		"a folder": func() error { return os.Mkdir(path, 0o700) },
	} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, os.RemoveAll(path))
			require.NoError(t, plant())
			ctx, cancel := context.WithTimeout(context.Background(), hung)
			defer cancel()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := store.Get(ctx, testName, expiry)
			runtime.ReadMemStats(&after)
			require.Error(t, err)
			assert.NoError(t, ctx.Err(), "refused, not waited on")
			assert.NotErrorIs(t, err, fs.ErrNotExist, "trouble, reported as such")
			assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(maxStoredBytes), "not read")
		})
	}
}

// hung is how long a test waits for something that must happen before it
// declares the code under test stuck.
const hung = time.Minute

// stuckStorage is a storage whose reads and deletes never return until
// released, and say when they have begun.
type stuckStorage struct {
	certmagic.Storage
	entered, release chan struct{}
}

func (s stuckStorage) Load(context.Context, string) ([]byte, error) {
	s.entered <- struct{}{}
	<-s.release
	return nil, fs.ErrNotExist
}

func (s stuckStorage) Delete(context.Context, string) error {
	s.entered <- struct{}{}
	<-s.release
	return nil
}

// TestAStuckStorageHoldsNoRequestNorStop: a read gives up with its
// context, reads stuck in the storage are bounded (past the bound a
// lookup is a miss at once), and a sweep gives up too; the next sweep
// starts nothing while the operation given up is stuck.
func TestAStuckStorageHoldsNoRequestNorStop(t *testing.T) {
	stuck := stuckStorage{&certmagic.FileStorage{Path: t.TempDir()}, make(chan struct{}), make(chan struct{})}
	defer close(stuck.release)
	// giveUp runs op, and ends its context once the storage holds it.
	giveUp := func(op func(ctx context.Context) error) error {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-stuck.entered; cancel() }()
		return op(ctx)
	}
	store := newClusterStore(stuck)
	for range maxStorageReads {
		err := giveUp(func(ctx context.Context) error { _, err := store.Get(ctx, testName, time.Now()); return err })
		require.ErrorIs(t, err, context.Canceled)
	}
	_, err := store.Get(context.Background(), testName, time.Now())
	assert.ErrorContains(t, err, "as many reads of the storage as allowed are in flight", "no wait for a slot")

	require.NoError(t, stuck.Storage.Store(context.Background(), entryKey(1, testName), []byte("old")))
	sweeper := newVerdictSweeper(stuck, zap.NewNop())
	err = giveUp(func(ctx context.Context) error { return sweeper.sweep(ctx, time.Now()) })
	assert.ErrorIs(t, err, context.Canceled)
	err = sweeper.sweep(context.Background(), time.Now())
	assert.ErrorIs(t, err, errStorageBusy, "no other operation while the one given up has not returned")
}

// indexedFolders is a storage whose Delete of a folder forgets what the
// folder holds without removing it, as Redis's does (it deletes the
// folder's index): what the folder held goes to orphans, where no List
// finds it. Its Delete of one key fails.
type indexedFolders struct {
	*certmagic.FileStorage
	orphans, failing string
}

func (s indexedFolders) Delete(ctx context.Context, key string) error {
	if key == s.failing {
		return errors.New("permission denied")
	}
	if entries, err := os.ReadDir(s.Filename(key)); err == nil && len(entries) > 0 {
		return os.Rename(s.Filename(key), filepath.Join(s.orphans, strconv.FormatInt(time.Now().UnixNano(), 10)))
	}
	return s.FileStorage.Delete(ctx, key)
}

// filesUnder lists the files under dir, at any depth.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return err
	}))
	return files
}

// TestTheSweepRemovesWhatExpired: every folder of a past minute goes,
// whatever it holds and however a storage deletes folders, leaving nothing
// that no sweep can find; the current and future minutes stay; an entry
// that cannot be removed holds up no other folder, and keeps its own for
// the next sweep; what is not the sweep's stays.
func TestTheSweepRemovesWhatExpired(t *testing.T) {
	for name, indexed := range map[string]bool{"a folder storage": false, "a storage whose Delete of a folder forgets what it holds": true} {
		t.Run(name, func(t *testing.T) {
			files := &certmagic.FileStorage{Path: t.TempDir()}
			now := time.Now()
			past, failing := entryKey(bucket(now)-3, testName), entryKey(bucket(now)-2, testName)
			current, future := entryKey(bucket(now), testName), entryKey(bucket(now)+10_000, testName)
			others := []string{verdictsFolder + "/not-a-minute/x", "certificates/example.com/key"}
			for _, key := range append([]string{past, failing, current, future}, others...) {
				require.NoError(t, files.Store(context.Background(), key, []byte("x")))
			}
			var storage certmagic.Storage = files
			orphans := t.TempDir()
			if indexed {
				storage = indexedFolders{files, orphans, failing}
			}
			err := newVerdictSweeper(storage, zap.NewNop()).sweep(context.Background(), now)
			if indexed {
				assert.ErrorContains(t, err, "permission denied")
			} else {
				require.NoError(t, err)
			}
			exists := func(key string) bool { return files.Exists(context.Background(), key) }
			assert.False(t, exists(past), "expired")
			assert.False(t, exists(path.Dir(path.Dir(past))), "its folder too")
			assert.Empty(t, filesUnder(t, orphans), "nothing left where no sweep finds it")
			assert.Equal(t, indexed, exists(failing), "removed, unless its storage refuses")
			assert.Equal(t, indexed, exists(path.Dir(path.Dir(failing))), "and then its folder stays")
			for _, key := range append([]string{current, future}, others...) {
				assert.True(t, exists(key), "%s stays", key)
			}
		})
	}
}

// countingStorage counts the operations on a storage, by method.
type countingStorage struct {
	certmagic.Storage
	mu  sync.Mutex
	ops map[string]int
}

func (s *countingStorage) count(op string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops[op]++
}

func (s *countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	s.count("Load")
	return s.Storage.Load(ctx, key)
}

func (s *countingStorage) Delete(ctx context.Context, key string) error {
	s.count("Delete")
	return s.Storage.Delete(ctx, key)
}

func (s *countingStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	s.count("List")
	return s.Storage.List(ctx, prefix, recursive)
}

func (s *countingStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	s.count("Stat")
	return s.Storage.Stat(ctx, key)
}

// plantEntries writes n entries of one scope in the folder of minute,
// straight to the files of dir.
func plantEntries(t *testing.T, dir string, minute int64, n int) {
	t.Helper()
	folder := filepath.Join(dir, filepath.FromSlash(entryKey(minute, scopeName)))
	require.NoError(t, os.MkdirAll(folder, 0o700))
	for i := range n {
		require.NoError(t, os.WriteFile(filepath.Join(folder, fmt.Sprintf("%064x", i)), []byte("x"), 0o600))
	}
}

// TestASweepsOperationsDoNotGrowWithTheEntries: on a folder storage, a
// sweep lists the folders of verdicts and deletes each past one whole: as
// many operations for ten entries as for ten thousand, none of them a
// read; and ten thousand entries planted in a far-future folder, which
// sorts before the others, hold up none of them.
func TestASweepsOperationsDoNotGrowWithTheEntries(t *testing.T) {
	now := time.Now()
	const farFuture = 1_000_000_000 // a minute of the year 3871, whose folder sorts before today's
	require.Less(t, strconv.Itoa(farFuture), strconv.FormatInt(bucket(now), 10))
	ops := map[int]map[string]int{}
	for _, n := range []int{10, 10_000} {
		dir := t.TempDir()
		for _, minute := range []int64{bucket(now) - 2, bucket(now) - 1, farFuture} {
			plantEntries(t, dir, minute, n)
		}
		files := &certmagic.FileStorage{Path: dir}
		sweeper := newVerdictSweeper(files, zap.NewNop())
		counting := &countingStorage{Storage: files, ops: map[string]int{}}
		sweeper.storage = counting
		require.NoError(t, sweeper.sweep(context.Background(), now))
		ops[n] = counting.ops

		for minute, stays := range map[int64]bool{bucket(now) - 2: false, bucket(now) - 1: false, farFuture: true} {
			assert.Equal(t, stays, files.Exists(context.Background(), entryKey(minute, "")), "minute %d", minute)
		}
	}
	assert.Equal(t, map[string]int{"List": 1, "Delete": 2}, ops[10], "a listing, a delete per past folder")
	assert.Equal(t, ops[10], ops[10_000], "as many for a thousand times the entries")
}

func TestTheSweeperRunsWithAConfigurationThatSharesVerdicts(t *testing.T) {
	testenv.ClearClerk(t)
	ctx := newContext(t)
	without := &Handler{SecretKey: "sk_test_x"}
	require.NoError(t, without.Provision(ctx))
	t.Cleanup(func() { _ = without.Cleanup() })
	app, err := ctx.App("clerk_m2m")
	require.NoError(t, err)
	assert.Nil(t, app.(*App).sweeper, "no shared_cache, no sweeps")

	with := &Handler{SecretKey: "sk_test_x", SharedCache: true}
	require.NoError(t, with.Provision(ctx))
	t.Cleanup(func() { _ = with.Cleanup() })
	sweeper := app.(*App).sweeper
	require.NotNil(t, sweeper)
	assert.Same(t, ctx.Storage(), sweeper.storage, "the configuration's storage")

	require.NoError(t, app.(*App).Start())
	require.NoError(t, app.(*App).Stop())
	select {
	case <-sweeper.done:
	case <-time.After(hung):
		t.Fatal("the sweeps go on after the configuration stopped")
	}
}
