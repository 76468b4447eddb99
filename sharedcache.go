package clerkm2m

import (
	"context"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/caddy-clerk/clerk-m2m/verify"
)

// verdictsPrefix is where shared verdicts live in the cluster's storage:
// clerk_m2m/verdicts/<scope>/<token MAC>, one entry per opaque credential
// verified, named and authenticated with keys derived from the Clerk
// secret (see verify.SharedCache).
const verdictsPrefix = "clerk_m2m/verdicts/"

// storageVerdicts is the cluster's storage (the `storage` global option)
// as the verifier's second level of verdicts.
type storageVerdicts struct{ storage certmagic.Storage }

func (s storageVerdicts) Get(ctx context.Context, key string) ([]byte, error) {
	return s.storage.Load(ctx, verdictsPrefix+key)
}

// Put stores the entry; the sweeper removes it once expired, as the
// storage itself has no expiry.
func (s storageVerdicts) Put(ctx context.Context, key string, value []byte, _ time.Time) error {
	return s.storage.Store(ctx, verdictsPrefix+key, value)
}

// useSharedCache has the verifier look verdicts up in, and share them
// through, the configuration's storage, named and authenticated with the
// keys that verify opaque credentials; and has the App sweep the expired
// ones while the configuration runs.
func (h *Handler) useSharedCache(ctx caddy.Context, opts *verify.Options) error {
	storage := ctx.Storage() // the `storage` global option, or Caddy's default folder
	opts.SharedCache = verify.NewSharedCache(storageVerdicts{storage}, verify.SharedCacheOptions{OnError: h.sharedCacheTrouble})
	opts.SharedCacheSecret = sharedCacheSecret(h.secretKey, h.machineSecretKey)
	app, err := ctx.App("clerk_m2m")
	if err != nil {
		return err
	}
	app.(*App).sweepVerdicts(storage)
	return nil
}

// sharedCacheSecret is what the shared verdicts of a handler are keyed
// with: the keys its opaque credentials are verified with, both of them,
// so that handlers verifying with another machine's key, or another
// instance's, share nothing.
func sharedCacheSecret(secretKey, machineKey string) []byte {
	return fmt.Appendf(nil, "secret_key %d:%s, machine_secret_key %d:%s", len(secretKey), secretKey, len(machineKey), machineKey)
}

// sharedCacheTrouble counts trouble with the shared cache, and logs it at
// most once a minute: the request goes on to Clerk either way.
func (h *Handler) sharedCacheTrouble(op string, err error) {
	h.observer.sharedCacheError(op)
	h.alerts.sharedCacheTrouble(op, err)
}
