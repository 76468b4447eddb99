// Package fleet tests shared_cache with what only real processes have:
// several Caddy processes, built as users build them, configured as one
// cluster over a shared file_system storage, in front of the fake Clerk,
// which counts the calls they make. The rules of shared verdicts (entries
// authenticated, scoped to the keys, never outliving the token nor the
// reader's cache_ttl) are verify's, proven in verify/store_test.go; how
// the storage files, reads and sweeps them, in clusterstore_test.go.
package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
)

// verifyPath is where the fake Clerk verifies opaque M2M tokens.
const verifyPath = "/m2m_tokens/verify"

// cacheTTL is the gateways' cache_ttl.
const cacheTTL = 10 * time.Minute

// cluster is the fake Clerk, the machine the gateways stand for, the one
// that calls them, and the storage the gateways share.
type cluster struct {
	t       *testing.T
	clerk   *backendtest.Server
	service *backendtest.Machine
	caller  *backendtest.Machine
	storage string
}

func newCluster(t *testing.T) *cluster {
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	c := &cluster{t: t, clerk: clerk, service: clerk.NewMachine("service"), caller: clerk.NewMachine("caller"),
		storage: t.TempDir()}
	clerk.GrantScopes(c.caller, c.service.ID)
	return c
}

// gateways starts n Caddy processes of the cluster, with their storage at
// storage, verifying M2M tokens with the service's key, with shared_cache
// when shared.
func (c *cluster) gateways(n int, storage string, shared bool) []*caddyproc.Process {
	c.t.Helper()
	subdirective := "# shared_cache off"
	if shared {
		subdirective = "shared_cache"
	}
	list := make([]*caddyproc.Process, n)
	for i := range list {
		list[i] = caddyproc.Start(c.t, func(p caddyproc.Ports) string {
			return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	storage file_system %s
}

http://127.0.0.1:%d {
	clerk_m2m {
		machine_secret_key {env.GATEWAY_MACHINE_SECRET_KEY}
		api_url {env.FAKE_CLERK_URL}
		cache_ttl %v
		timeout 10s
		%s
	}
	respond "through {http.auth.user.id}"
}
`, p.Admin, p.HTTP, strconv.Quote(storage), p.HTTP, cacheTTL, subdirective)
		}, "FAKE_CLERK_URL="+c.clerk.URL, "GATEWAY_MACHINE_SECRET_KEY="+c.service.SecretKey)
	}
	return list
}

// token mints an opaque M2M token of the caller, granted to the service.
func (c *cluster) token() (token, id string) {
	return c.clerk.CreateM2MToken(c.caller, backendtest.TokenOptions{Scopes: []string{c.service.ID}})
}

// status sends token to gateway and returns the answer's status, checking
// that a 200 names the caller.
func (c *cluster) status(gateway *caddyproc.Process, token string) int {
	c.t.Helper()
	resp, body := gateway.Get(c.t, "/", token)
	if resp.StatusCode == http.StatusOK {
		assert.Equal(c.t, "through "+c.caller.ID, body)
	}
	return resp.StatusCode
}

// entryPath is where a shared verdict lies in the storage: under the
// minute it expires in, its scope, and the MAC of its token (the
// storage's temporary files, written before they are renamed, have other
// names).
var entryPath = regexp.MustCompile(`^clerk_m2m/verdicts/(\d+)/[0-9a-f]{64}/[0-9a-f]{64}$`)

// entries lists the shared verdicts in storage, by their path in it.
func (c *cluster) entries(storage string) []string {
	var found []string
	_ = filepath.WalkDir(storage, func(path string, d fs.DirEntry, err error) error {
		if rel, _ := filepath.Rel(storage, path); err == nil && !d.IsDir() && entryPath.MatchString(filepath.ToSlash(rel)) {
			found = append(found, filepath.ToSlash(rel))
		}
		return nil
	})
	return found
}

// waitForEntries waits until storage holds n shared verdicts (they are
// written in the background, once Clerk answered), and returns them.
func (c *cluster) waitForEntries(storage string, n int) []string {
	c.t.Helper()
	require.Eventually(c.t, func() bool { return len(c.entries(storage)) == n }, 20*time.Second, 5*time.Millisecond,
		"%d shared verdicts in storage", n)
	return c.entries(storage)
}

const (
	sharedHits   = `caddy_clerk_m2m_cache_lookups_total{cache="shared",result="hit"}`
	sharedMisses = `caddy_clerk_m2m_cache_lookups_total{cache="shared",result="miss"}`
	readErrors   = `caddy_clerk_m2m_shared_cache_errors_total{op="read"}`
	writeErrors  = `caddy_clerk_m2m_shared_cache_errors_total{op="write"}`
)

// minute is the minute t falls in, rounded up, as the storage names its
// folders.
func minute(t time.Time) int64 {
	return (t.UnixMilli() + time.Minute.Milliseconds() - 1) / time.Minute.Milliseconds()
}

// TestOneCallToClerkForTheWholeCluster: the first gateway asks Clerk, and
// files the verdict under the minute it expires in (cache_ttl after
// Clerk's answer, the token living longer); the two others answer from it,
// once from the storage and then from their memory.
func TestOneCallToClerkForTheWholeCluster(t *testing.T) {
	c := newCluster(t)
	gateways := c.gateways(3, c.storage, true)
	token, _ := c.token()

	before := time.Now()
	require.Equal(t, http.StatusOK, c.status(gateways[0], token))
	after := time.Now()
	require.Equal(t, 1, c.clerk.Calls(verifyPath))
	entry := c.waitForEntries(c.storage, 1)[0]
	filed, _ := strconv.ParseInt(entryPath.FindStringSubmatch(entry)[1], 10, 64)
	assert.GreaterOrEqual(t, filed, minute(before.Add(cacheTTL)))
	assert.LessOrEqual(t, filed, minute(after.Add(cacheTTL)))
	data, err := os.ReadFile(filepath.Join(c.storage, filepath.FromSlash(entry)))
	require.NoError(t, err)
	_, body, _ := bytes.Cut(data, []byte("\n"))
	var verdict struct{ Expires int64 }
	require.NoError(t, json.Unmarshal(body, &verdict), "%s", data)
	assert.Equal(t, minute(time.UnixMilli(verdict.Expires)), filed, "filed under the minute it expires in")

	for _, gateway := range gateways[1:] {
		for range 3 {
			assert.Equal(t, http.StatusOK, c.status(gateway, token))
		}
		assert.Equal(t, 1.0, gateway.Metric(t, sharedHits), "read once from the storage, then from memory")
	}
	assert.Equal(t, 1, c.clerk.Calls(verifyPath), "one call to Clerk for the three gateways")
	assert.Equal(t, 1.0, gateways[0].Metric(t, sharedMisses))
}

// TestWithoutSharedCacheEachGatewayAsksClerk is the baseline: three
// gateways on the same storage, three calls, nothing stored.
func TestWithoutSharedCacheEachGatewayAsksClerk(t *testing.T) {
	c := newCluster(t)
	token, _ := c.token()
	for _, gateway := range c.gateways(3, c.storage, false) {
		assert.Equal(t, http.StatusOK, c.status(gateway, token))
	}
	assert.Equal(t, 3, c.clerk.Calls(verifyPath), "one call per gateway")
	assert.Empty(t, c.entries(c.storage))
}

// TestAnEntryEditedInTheStorageIsRefused: whoever can write the storage
// but holds no key (verify's tests forge entries every other way) cannot
// keep a revoked token alive by editing its verdict on disk: the next
// gateway asks Clerk, and counts the entry it refused.
func TestAnEntryEditedInTheStorageIsRefused(t *testing.T) {
	c := newCluster(t)
	gateways := c.gateways(2, c.storage, true)
	token, id := c.token()
	require.Equal(t, http.StatusOK, c.status(gateways[0], token))
	path := filepath.Join(c.storage, filepath.FromSlash(c.waitForEntries(c.storage, 1)[0]))
	entry, err := os.ReadFile(path)
	require.NoError(t, err)
	edited := bytes.Replace(entry, []byte(`"expires":`), []byte(`"expires":9`), 1)
	require.NotEqual(t, entry, edited)
	require.NoError(t, os.WriteFile(path, edited, 0o600))
	c.clerk.RevokeM2MToken(id)

	assert.Equal(t, http.StatusUnauthorized, c.status(gateways[1], token), "Clerk was asked, and refused")
	assert.Equal(t, 2, c.clerk.Calls(verifyPath))
	assert.Equal(t, 1.0, gateways[1].Metric(t, readErrors), "the entry refused is counted")
	assert.Zero(t, gateways[1].Metric(t, sharedHits))
}

// TestStorageTroubleIsAnsweredThroughClerk: a storage that can be neither
// read nor written neither blocks nor opens the gate: every credential is
// verified with Clerk, every failure counted, and the trouble logged
// once, not once a request.
func TestStorageTroubleIsAnsweredThroughClerk(t *testing.T) {
	c := newCluster(t)
	// A file where the storage folder should be: every read and write
	// fails (as root, a folder without permissions would still be read).
	storage := filepath.Join(t.TempDir(), "storage")
	require.NoError(t, os.WriteFile(storage, []byte("not a folder"), 0o600))
	gateways := c.gateways(2, storage, true)
	token, _ := c.token()
	for i, gateway := range gateways {
		assert.Equal(t, http.StatusOK, c.status(gateway, token), "verified with Clerk")
		assert.Equal(t, i+1, c.clerk.Calls(verifyPath))
	}
	revoked, id := c.token()
	c.clerk.RevokeM2MToken(id)
	for _, gateway := range gateways {
		for _, refused := range []string{"mt_" + strings.Repeat("0", 32), revoked} {
			assert.Equal(t, http.StatusUnauthorized, c.status(gateway, refused))
		}
		assert.Equal(t, 3.0, gateway.Metric(t, readErrors), "every failed lookup counted")
		require.Eventually(t, func() bool { return gateway.Metric(t, writeErrors) == 1 }, 20*time.Second, 10*time.Millisecond,
			"the failed write of the one verdict counted")
	}

	const alert = "trouble with the shared cache of verdicts in the storage"
	output := gateways[0].Output
	require.Eventually(t, func() bool { return strings.Contains(output(), alert) }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, 1, strings.Count(output(), alert), "logged once a minute, not once a request")
}
