// Package fleet tests shared_cache end to end: several Caddy processes,
// built as users build them, configured as one cluster over a shared
// file_system storage, in front of the fake Clerk, which counts the calls
// they make.
package fleet

import (
	"bytes"
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
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
)

func TestMain(m *testing.M) { caddyproc.Main(m) }

// verifyPath is where the fake Clerk verifies opaque M2M tokens.
const verifyPath = "/m2m_tokens/verify"

// cluster is the fake Clerk, the machines the gateways stand for and call
// as, and the storage the gateways share.
type cluster struct {
	t        *testing.T
	clerk    *backendtest.Server
	serviceA *backendtest.Machine
	serviceB *backendtest.Machine
	caller   *backendtest.Machine
	storage  string
}

func newCluster(t *testing.T) *cluster {
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	c := &cluster{t: t, clerk: clerk, serviceA: clerk.NewMachine("service-a"), serviceB: clerk.NewMachine("service-b"),
		caller: clerk.NewMachine("caller"), storage: t.TempDir()}
	clerk.GrantScopes(c.caller, c.serviceA.ID, c.serviceB.ID)
	return c
}

// gateway starts a Caddy of the cluster (its storage at storage) that
// verifies M2M tokens with machine's key, sharing verdicts.
func (c *cluster) gateway(machine *backendtest.Machine, storage string) *caddyproc.Process {
	c.t.Helper()
	return c.start(machine, storage, "cache_ttl 10m\n\t\tshared_cache")
}

// start starts a Caddy of the cluster with the last subdirectives given.
func (c *cluster) start(machine *backendtest.Machine, storage, subdirective string) *caddyproc.Process {
	c.t.Helper()
	return caddyproc.Start(c.t, func(p caddyproc.Ports) string {
		return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	storage file_system %s
}

http://127.0.0.1:%d {
	clerk_m2m {
		machine_secret_key {env.GATEWAY_MACHINE_SECRET_KEY}
		api_url {env.FAKE_CLERK_URL}
		timeout 10s
		%s
	}
	respond "through {http.auth.user.id}"
}
`, p.Admin, p.HTTP, strconv.Quote(storage), p.HTTP, subdirective)
	}, append(testenv.ClerkEmptied(), "FAKE_CLERK_URL="+c.clerk.URL, "GATEWAY_MACHINE_SECRET_KEY="+machine.SecretKey)...)
}

// gateways starts n gateways with machine's key over the shared storage.
func (c *cluster) gateways(n int, machine *backendtest.Machine) []*caddyproc.Process {
	list := make([]*caddyproc.Process, n)
	for i := range list {
		list[i] = c.gateway(machine, c.storage)
	}
	return list
}

// token mints an opaque M2M token of the caller, granted to both services.
func (c *cluster) token(opts backendtest.TokenOptions) (token, id string) {
	if opts.Scopes == nil {
		opts.Scopes = []string{c.serviceA.ID, c.serviceB.ID}
	}
	return c.clerk.CreateM2MToken(c.caller, opts)
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

// entryName is the name of a shared verdict's file: the MAC of its token
// (the storage's temporary files, written before they are renamed, have
// others).
var entryName = regexp.MustCompile(`^[0-9a-f]{64}$`)

// entries lists the shared verdicts in storage.
func (c *cluster) entries(storage string) []string {
	var files []string
	root := filepath.Join(storage, "clerk_m2m", "verdicts")
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && entryName.MatchString(d.Name()) {
			files = append(files, path)
		}
		return nil
	})
	return files
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
)

func TestATokenVerifiedOnceIsAcceptedByTheWholeCluster(t *testing.T) {
	c := newCluster(t)
	gateways := c.gateways(3, c.serviceA)
	token, _ := c.token(backendtest.TokenOptions{})

	require.Equal(t, http.StatusOK, c.status(gateways[0], token))
	require.Equal(t, 1, c.clerk.Calls(verifyPath))
	c.waitForEntries(c.storage, 1)
	for _, gateway := range gateways[1:] {
		for range 3 {
			assert.Equal(t, http.StatusOK, c.status(gateway, token))
		}
		assert.Equal(t, 1.0, gateway.Metric(t, sharedHits), "read once from storage, then from memory")
	}
	assert.Equal(t, 1, c.clerk.Calls(verifyPath), "one call to Clerk for the three gateways")
	assert.Equal(t, 1.0, gateways[0].Metric(t, sharedMisses))
}

func TestWithoutSharedCacheEachGatewayAsksClerk(t *testing.T) {
	c := newCluster(t)
	token, _ := c.token(backendtest.TokenOptions{})
	for range 3 {
		gateway := c.start(c.serviceA, c.storage, "cache_ttl 10m")
		assert.Equal(t, http.StatusOK, c.status(gateway, token))
	}
	assert.Equal(t, 3, c.clerk.Calls(verifyPath), "one call per gateway")
	assert.Empty(t, c.entries(c.storage))
}

func TestASharedVerdictEndsWithTheToken(t *testing.T) {
	c := newCluster(t)
	gateways := c.gateways(2, c.serviceA)
	token, _ := c.token(backendtest.TokenOptions{TTL: 3 * time.Second})
	require.Equal(t, http.StatusOK, c.status(gateways[0], token))
	entry := c.waitForEntries(c.storage, 1)[0]
	data, err := os.ReadFile(entry)
	require.NoError(t, err)
	written := regexp.MustCompile(`^[0-9a-f]{64}\n\{.*"expires":(\d+)`).FindSubmatch(data)
	require.NotNil(t, written, "%q", data)
	expiry, _ := strconv.ParseInt(string(written[1]), 10, 64)
	assert.LessOrEqual(t, expiry, time.Now().Add(3*time.Second).UnixMilli(), "never beyond the token's expiry")

	require.Eventually(t, func() bool { return c.status(gateways[1], token) == http.StatusUnauthorized }, 30*time.Second,
		100*time.Millisecond, "once the token has expired, no gateway accepts it")
}

// TestAGatewayKeepsASharedVerdictNoLongerThanItsOwnCacheTTL: a token one
// gateway (cache_ttl 10m) verified, then revoked, is refused by another
// whose cache_ttl (1s) has passed since Clerk's answer: it asks Clerk,
// rather than keep the verdict as long as the gateway that wrote it would.
func TestAGatewayKeepsASharedVerdictNoLongerThanItsOwnCacheTTL(t *testing.T) {
	c := newCluster(t)
	long, short := c.gateway(c.serviceA, c.storage), c.start(c.serviceA, c.storage, "cache_ttl 1s\n\t\tshared_cache")
	token, id := c.token(backendtest.TokenOptions{})
	require.Equal(t, http.StatusOK, c.status(long, token))
	c.waitForEntries(c.storage, 1)
	c.clerk.RevokeM2MToken(id)
	require.Eventually(t, func() bool { return c.status(short, token) == http.StatusUnauthorized }, time.Minute, 100*time.Millisecond,
		"refused once its own cache_ttl has passed since Clerk's answer")
	assert.Equal(t, http.StatusOK, c.status(long, token), "the writer keeps its own verdict, for its own cache_ttl")
}

func TestARefusalIsNotShared(t *testing.T) {
	c := newCluster(t)
	gateways := c.gateways(2, c.serviceA)
	token, id := c.token(backendtest.TokenOptions{})
	c.clerk.RevokeM2MToken(id)
	for _, gateway := range gateways {
		assert.Equal(t, http.StatusUnauthorized, c.status(gateway, token))
	}
	assert.Equal(t, 2, c.clerk.Calls(verifyPath), "each gateway asks Clerk, which refuses again")
	assert.Empty(t, c.entries(c.storage))

	ungranted, _ := c.token(backendtest.TokenOptions{Scopes: []string{c.serviceB.ID}})
	for _, gateway := range gateways {
		assert.Equal(t, http.StatusUnauthorized, c.status(gateway, ungranted))
	}
	assert.Empty(t, c.entries(c.storage))
}

func TestAVerdictUnderOneMachinesKeyDoesNotAnswerForAnother(t *testing.T) {
	c := newCluster(t)
	gatewayA, gatewayB := c.gateway(c.serviceA, c.storage), c.gateway(c.serviceB, c.storage)

	onlyA, _ := c.token(backendtest.TokenOptions{Scopes: []string{c.serviceA.ID}})
	require.Equal(t, http.StatusOK, c.status(gatewayA, onlyA))
	c.waitForEntries(c.storage, 1)
	assert.Equal(t, http.StatusUnauthorized, c.status(gatewayB, onlyA), "granted to A only: B's key gets Clerk's refusal")
	assert.Equal(t, 2, c.clerk.Calls(verifyPath))

	both, _ := c.token(backendtest.TokenOptions{})
	require.Equal(t, http.StatusOK, c.status(gatewayA, both))
	c.waitForEntries(c.storage, 2)
	require.Equal(t, http.StatusOK, c.status(gatewayB, both))
	assert.Equal(t, 4, c.clerk.Calls(verifyPath), "B asks Clerk itself")
	assert.Zero(t, gatewayB.Metric(t, sharedHits))
	assert.Zero(t, gatewayB.Metric(t, readErrors), "B never even finds A's entries: another name")

	scopes := map[string]bool{}
	for _, entry := range c.waitForEntries(c.storage, 3) { // B's verdict too
		scopes[filepath.Base(filepath.Dir(entry))] = true
	}
	assert.Len(t, scopes, 2, "one scope per machine key")
}

func TestEntriesWrittenWithoutTheKeysAreIgnored(t *testing.T) {
	c := newCluster(t)
	gateways := c.gateways(2, c.serviceA)
	first, _ := c.token(backendtest.TokenOptions{})
	require.Equal(t, http.StatusOK, c.status(gateways[0], first))
	genuine, err := os.ReadFile(c.waitForEntries(c.storage, 1)[0])
	require.NoError(t, err)

	tamper := map[string]func(entry []byte) []byte{
		"no MAC at all": func([]byte) []byte {
			return []byte(`{"subject":"` + c.caller.ID + `","token_type":"m2m_token","scopes":[]}`)
		},
		"another token's genuine entry": func([]byte) []byte { return genuine },
		"its own entry, another subject": func(entry []byte) []byte {
			return bytes.Replace(entry, []byte(c.caller.ID), []byte(c.serviceB.ID), 1)
		},
		"its own entry, expiry moved": func(entry []byte) []byte {
			return regexp.MustCompile(`("expires":)\d+`).ReplaceAll(entry, []byte("${1}99999999999999"))
		},
	}
	for name, change := range tamper {
		t.Run(name, func(t *testing.T) {
			token, id := c.token(backendtest.TokenOptions{})
			before := c.entries(c.storage)
			require.Equal(t, http.StatusOK, c.status(gateways[0], token))
			entries := c.waitForEntries(c.storage, len(before)+1)
			path := newEntry(entries, before)
			entry, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, change(entry), 0o600))
			c.clerk.RevokeM2MToken(id)
			rejected := gateways[1].Metric(t, readErrors)

			assert.Equal(t, http.StatusUnauthorized, c.status(gateways[1], token), "the planted entry is ignored, Clerk asked")
			assert.Equal(t, rejected+1, gateways[1].Metric(t, readErrors), "and counted")
		})
	}
	assert.Zero(t, gateways[1].Metric(t, sharedHits))
}

// newEntry returns the entry of entries that is not in before.
func newEntry(entries, before []string) string {
	for _, entry := range entries {
		found := false
		for _, old := range before {
			found = found || old == entry
		}
		if !found {
			return entry
		}
	}
	return ""
}

func TestBrokenStorageNeitherBlocksNorOpensTheGate(t *testing.T) {
	c := newCluster(t)
	storage := filepath.Join(t.TempDir(), "storage")
	gateway := c.gateway(c.serviceA, storage)
	token, _ := c.token(backendtest.TokenOptions{})
	require.Equal(t, http.StatusOK, c.status(gateway, token))
	c.waitForEntries(storage, 1)

	// The storage folder becomes a file: every read and write fails (as
	// root, a folder without permissions would still be read).
	require.NoError(t, os.RemoveAll(storage))
	require.NoError(t, os.WriteFile(storage, []byte("not a folder"), 0o600))
	other := c.gateway(c.serviceA, storage)
	calls := c.clerk.Calls(verifyPath)
	assert.Equal(t, http.StatusOK, c.status(other, token), "verified with Clerk")
	assert.Equal(t, calls+1, c.clerk.Calls(verifyPath))
	fresh, _ := c.token(backendtest.TokenOptions{})
	assert.Equal(t, http.StatusOK, c.status(gateway, fresh))
	for _, refused := range []string{"mt_" + strings.Repeat("0", 32), "mt_garbage"} {
		assert.Equal(t, http.StatusUnauthorized, c.status(gateway, refused))
		assert.Equal(t, http.StatusUnauthorized, c.status(other, refused))
	}
	revoked, id := c.token(backendtest.TokenOptions{})
	c.clerk.RevokeM2MToken(id)
	assert.Equal(t, http.StatusUnauthorized, c.status(other, revoked))
	assert.GreaterOrEqual(t, other.Metric(t, readErrors), 4.0, "every failed lookup counted")
	assert.Positive(t, gateway.Metric(t, `caddy_clerk_m2m_shared_cache_errors_total{op="write"}`))

	const alert = "trouble with the shared cache of verdicts in the storage"
	require.Eventually(t, func() bool { return strings.Contains(other.Output(), alert) }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, 1, strings.Count(other.Output(), alert), "logged once a minute, not once a request")
}
