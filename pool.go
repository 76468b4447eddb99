package clerkm2m

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
)

// pool holds what the handlers of every loaded configuration share: for
// clerk_m2m, a Clerk instance's connections and signing keys (instance);
// for clerk_m2m_token, a machine's token source (tokenSource). It outlives
// configuration reloads, so that keys stay warm, tokens stay minted and
// connections to Clerk stay open across them. A value is named by its kind
// and the settings that make it the same, and held by the handlers that
// use it through leases; the last lease given back destroys it.
var pool = caddy.NewUsagePool()

// sharedValue is a value of the pool.
type sharedValue interface {
	caddy.Destructor
	sharedBy() *sharers
}

// sharers counts the handlers holding a shared value that are counted in
// the metrics (those without disable_metrics). Whether a handler is counted
// does not decide what it shares: a handler with disable_metrics uses the
// same signing keys, and the same minted token, as the counted handlers
// with its settings. The value's own work (fetching signing keys, minting
// tokens, the calls to Clerk they make, the age of the keys) serves all its
// holders alike, so it is counted while at least one counted handler holds
// the value, and not at all while none does. A handler's own work (its
// verifications, cache lookups and calls to verify credentials) follows
// its own setting alone.
type sharers struct {
	counted atomic.Int32
}

func (s *sharers) sharedBy() *sharers { return s }

// isCounted reports whether a counted handler holds the value.
func (s *sharers) isCounted() bool { return s.counted.Load() > 0 }

// observer observes the shared value's own work.
func (s *sharers) observer() observer {
	if s.isCounted() {
		return countingObserver{}
	}
	return quietObserver{}
}

// lease is a handler's hold on a shared value.
type lease struct {
	key     string
	counted *atomic.Int32 // the value's count of counted holders; nil for a handler that is not counted
}

// share returns the value of the pool named by kind and settings, made by
// create when no handler holds it yet, and the handler's lease on it;
// counted says whether the handler is counted in the metrics. The name
// holds a hash of the settings, never a secret key.
func share[T sharedValue](kind string, settings any, counted bool, create func() (T, error)) (T, *lease, error) {
	var none T
	data, err := json.Marshal(settings)
	if err != nil {
		return none, nil, err
	}
	sum := sha256.Sum256(data)
	key := kind + ":" + hex.EncodeToString(sum[:])
	value, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		made, err := create()
		if err != nil {
			return nil, err
		}
		return made, nil
	})
	if err != nil {
		return none, nil, err
	}
	shared := value.(T)
	held := &lease{key: key}
	if counted {
		held.counted = &shared.sharedBy().counted
		held.counted.Add(1)
	}
	return shared, held, nil
}

// release gives the lease back; the last one destroys the value.
func (l *lease) release() {
	if l.counted != nil {
		l.counted.Add(-1)
	}
	_, _ = pool.Delete(l.key)
}
