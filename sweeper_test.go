package clerkm2m

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
)

// watchedStorage counts the sweeps under way (between Lock and Unlock of
// the sweep lock) and the listings of the verdicts.
type watchedStorage struct {
	certmagic.Storage
	holding, mostHolding, listings *atomic.Int32
}

func (w watchedStorage) Lock(ctx context.Context, name string) error {
	if err := w.Storage.Lock(ctx, name); err != nil {
		return err
	}
	if now := w.holding.Add(1); now > w.mostHolding.Load() {
		w.mostHolding.Store(now)
	}
	return nil
}

func (w watchedStorage) Unlock(ctx context.Context, name string) error {
	w.holding.Add(-1)
	return w.Storage.Unlock(ctx, name)
}

func (w watchedStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	w.listings.Add(1)
	return w.Storage.List(ctx, prefix, recursive)
}

// sharedEntry is an entry of the shared cache as far as a sweep reads it:
// its header, with its expiry.
func sharedEntry(expiry time.Time) string {
	return fmt.Sprintf("clerk_m2m-verdict 1 %d %s\n{}", expiry.UnixMilli(), strings.Repeat("ab", 32))
}

func TestOneInstanceSweepsTheExpiredVerdicts(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	name := func(i int) string { return fmt.Sprintf("%064x", i) }
	files := map[string]string{
		"clerk_m2m/verdicts/scope1/" + name(1): sharedEntry(now.Add(-time.Second)),
		"clerk_m2m/verdicts/scope1/" + name(2): sharedEntry(now.Add(time.Hour)),
		"clerk_m2m/verdicts/scope2/" + name(3): sharedEntry(now.Add(-time.Hour)),
		"clerk_m2m/verdicts/scope2/" + name(4): "not an entry",
		"clerk_m2m/verdicts/scope2/" + name(5): sharedEntry(now.Add(time.Minute)),
		"clerk_m2m/verdicts/scope2/123456789":  "a storage's temporary file",
		"certificates/example.com/key":         "not the sweep's",
	}
	for key, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(key))
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	}

	var holding, mostHolding, listings atomic.Int32
	var removed atomic.Int32
	var wg sync.WaitGroup
	for range 3 { // three instances, each with its own view of the same folder
		storage := watchedStorage{&certmagic.FileStorage{Path: dir}, &holding, &mostHolding, &listings}
		sweeper := newVerdictSweeper(storage, zap.NewNop())
		wg.Go(func() {
			n, err := sweeper.sweep(context.Background())
			assert.NoError(t, err)
			removed.Add(int32(n))
		})
	}
	wg.Wait()

	assert.Equal(t, int32(1), mostHolding.Load(), "one sweep at a time")
	assert.Equal(t, int32(1), listings.Load(), "the others find the storage swept lately")
	assert.Equal(t, int32(3), removed.Load())
	for key := range files {
		_, err := os.Stat(filepath.Join(dir, filepath.FromSlash(key)))
		gone := os.IsNotExist(err)
		switch {
		case strings.HasSuffix(key, name(1)), strings.HasSuffix(key, name(3)), strings.HasSuffix(key, name(4)):
			assert.True(t, gone, "%s: expired or not an entry, removed", key)
		default:
			assert.False(t, gone, "%s: kept", key)
		}
	}

	// Half an interval later, the next instance sweeps again.
	later := newVerdictSweeper(&certmagic.FileStorage{Path: dir}, zap.NewNop())
	later.now = func() time.Time { return now.Add(sweepInterval/2 + 2*time.Minute) }
	n, err := later.sweep(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, n, "the entry that expired meanwhile")
}

func TestASweepIsBounded(t *testing.T) {
	dir := t.TempDir()
	scope := filepath.Join(dir, "clerk_m2m", "verdicts", "scope")
	require.NoError(t, os.MkdirAll(scope, 0o700))
	expired := sharedEntry(time.Now().Add(-time.Hour))
	for i := range maxSweptEntries + 5 {
		require.NoError(t, os.WriteFile(filepath.Join(scope, fmt.Sprintf("%064x", i)), []byte(expired), 0o600))
	}
	n, err := newVerdictSweeper(&certmagic.FileStorage{Path: dir}, zap.NewNop()).sweep(context.Background())
	require.NoError(t, err)
	assert.Equal(t, maxSweptEntries, n)
	left, err := os.ReadDir(scope)
	require.NoError(t, err)
	assert.Len(t, left, 5, "left for the next sweep")
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
	require.NotNil(t, sweeper.done)
	require.NoError(t, app.(*App).Stop())
	select {
	case <-sweeper.done:
	default:
		t.Fatal("the sweeps go on after the configuration stopped")
	}
}
