package clerkm2m

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
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
			_, err := store.Get(ctx, testName, expiry)
			require.Error(t, err)
			assert.NoError(t, ctx.Err(), "refused, not waited on")
			assert.NotErrorIs(t, err, fs.ErrNotExist, "trouble, reported as such")
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
// lookup is a miss at once), and a sweep gives up too.
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
	err = giveUp(func(ctx context.Context) error { return newVerdictSweeper(stuck, zap.NewNop()).sweep(ctx, time.Now()) })
	assert.ErrorIs(t, err, context.Canceled)
}

// leakyFolders is a storage whose Delete of a folder leaves what is under
// it (as Redis's does), and whose Delete fails for one folder.
type leakyFolders struct {
	*certmagic.FileStorage
	failing string
}

func (s leakyFolders) Delete(ctx context.Context, key string) error {
	switch info, err := os.Stat(s.Filename(key)); {
	case key == s.failing:
		return errors.New("permission denied")
	case err == nil && info.IsDir():
		entries, _ := os.ReadDir(s.Filename(key))
		if len(entries) > 0 {
			return nil
		}
	}
	return s.FileStorage.Delete(ctx, key)
}

// TestTheSweepRemovesWhatExpired: every folder of a past minute goes,
// whatever it holds and however a storage deletes folders; the current
// and future minutes stay; a folder that cannot be removed holds up no
// other; what is not the sweep's stays.
func TestTheSweepRemovesWhatExpired(t *testing.T) {
	for name, leaky := range map[string]bool{"a folder storage": false, "a storage that leaves folders' entries": true} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			files := &certmagic.FileStorage{Path: dir}
			now := time.Now()
			past, failing := entryKey(bucket(now)-3, testName), entryKey(bucket(now)-2, testName)
			current, future := entryKey(bucket(now), testName), entryKey(bucket(now)+10_000, testName)
			others := []string{verdictsFolder + "/not-a-minute/x", "certificates/example.com/key"}
			for _, key := range append([]string{past, failing, current, future}, others...) {
				require.NoError(t, files.Store(context.Background(), key, []byte("x")))
			}
			var storage certmagic.Storage = files
			if leaky {
				storage = leakyFolders{files, filepath.Dir(filepath.Dir(failing))}
			}
			err := newVerdictSweeper(storage, zap.NewNop()).sweep(context.Background(), now)
			if leaky {
				assert.ErrorContains(t, err, "permission denied")
			} else {
				require.NoError(t, err)
			}
			exists := func(key string) bool { return files.Exists(context.Background(), key) }
			assert.False(t, exists(past), "expired")
			assert.False(t, exists(filepath.Dir(filepath.Dir(past))), "its folder too")
			assert.Equal(t, leaky, exists(failing), "removed, unless its storage refuses")
			for _, key := range append([]string{current, future}, others...) {
				assert.True(t, exists(key), "%s stays", key)
			}
		})
	}
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
