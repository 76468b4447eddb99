// Package redis tests a fleet of gateways on Redis, as users build it:
// Caddy with clerk_m2m, the Redis storage (github.com/pberkel/caddy-storage-redis)
// and the rate limiter (github.com/mholt/caddy-ratelimit), built once per
// test run from ./cmd/caddy as xcaddy would, over a redis-server of each
// test's own on a loopback port chosen at run time, in front of the fake
// Clerk, which counts the calls the gateways make. It is a module of its
// own, so that the main module does not depend on those modules.
package redis

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
	"github.com/caddy-clerk/clerk-m2m/internal/freeport"
	"github.com/caddy-clerk/clerk-m2m/internal/testproc"

	// The modules of ./cmd/caddy, for what the tests load in process: the
	// Redis storage to plant entries with, the examples to adapt.
	_ "github.com/caddy-clerk/clerk-m2m"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/mholt/caddy-ratelimit"
	_ "github.com/pberkel/caddy-storage-redis"
)

// redisCaddy is Caddy as a fleet on Redis builds it (./cmd/caddy).
const redisCaddy = "github.com/caddy-clerk/clerk-m2m/integration/redis/cmd/caddy"

// hung is how long a test waits for what must happen before it declares
// the code under test stuck.
const hung = time.Minute

// keyPrefix is where the gateways keep their storage in Redis.
const keyPrefix = "caddy"

// redisServer is a redis-server of a test's own: on loopback, on a port
// chosen at run time, keeping nothing on disk.
type redisServer struct {
	t      *testing.T
	port   int
	dir    string
	proc   *testproc.Process
	client *redis.Client
}

// startRedis starts Debian's redis-server. Without it the test is skipped,
// except in CI (CI=true), which installs it and must not pass without it.
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		const why = "redis-server is not installed: install Debian's redis-server package (apt-get install redis-server) to run this test"
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	r := &redisServer{t: t, dir: t.TempDir()}
	_, err := freeport.Retry(1, func(ports []int) (*redisServer, error) {
		r.port = ports[0]
		return r, r.run()
	})
	require.NoError(t, err)
	r.client = redis.NewClient(&redis.Options{Addr: r.address()})
	t.Cleanup(func() {
		_ = r.client.Close()
		r.stop()
	})
	return r
}

// run starts the server on its port and waits until it answers PING.
func (r *redisServer) run() error {
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", r.dir)
	ping := redis.NewClient(&redis.Options{Addr: r.address(), MaxRetries: -1})
	defer ping.Close()
	var err error
	r.proc, err = testproc.Start("redis-server", cmd, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return ping.Ping(ctx).Err() == nil
	}, hung)
	return err
}

func (r *redisServer) address() string { return freeport.Addr(r.port) }

// stop ends the server, if it runs: connections are refused from then on.
func (r *redisServer) stop() {
	if r.proc != nil {
		r.proc.Stop()
		r.proc = nil
	}
}

// restart starts the server again, on its port, empty.
func (r *redisServer) restart() {
	r.t.Helper()
	require.NoError(r.t, r.run())
}

// keys lists the keys of Redis that match pattern (SCAN, not KEYS: the
// sweep's test holds 100,000 of them).
func (r *redisServer) keys(pattern string) []string {
	r.t.Helper()
	var keys []string
	iter := r.client.Scan(r.t.Context(), 0, pattern, 1000).Iterator()
	for iter.Next(r.t.Context()) {
		keys = append(keys, iter.Val())
	}
	require.NoError(r.t, iter.Err())
	return keys
}

// entriesPattern matches the keys of shared verdicts: clerk_m2m/verdicts,
// a minute, a scope, a token's MAC.
const entriesPattern = keyPrefix + "/clerk_m2m/verdicts/*/*/*"

// waitForEntries waits until Redis holds n shared verdicts (they are
// written in the background, once Clerk answered).
func (r *redisServer) waitForEntries(n int) {
	r.t.Helper()
	require.Eventually(r.t, func() bool { return len(r.keys(entriesPattern)) == n }, hung, 10*time.Millisecond,
		"%d shared verdicts in Redis", n)
}

// storageBlock is the storage global option of a gateway on r.
func (r *redisServer) storageBlock() string {
	return fmt.Sprintf("\tstorage redis {\n\t\taddress %s\n\t\tkey_prefix %s\n\t\ttimeout 1\n\t}\n", r.address(), keyPrefix)
}

// verifyPath is where the fake Clerk verifies opaque M2M tokens.
const verifyPath = "/m2m_tokens/verify"

// fleet is the fake Clerk, the machine the gateways stand for, two
// machines that call it, and the Redis the gateways share.
type fleet struct {
	t       *testing.T
	clerk   *backendtest.Server
	service *backendtest.Machine
	callerA *backendtest.Machine
	callerB *backendtest.Machine
	redis   *redisServer
	client  *http.Client
}

func newFleet(t *testing.T) *fleet {
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	f := &fleet{t: t, clerk: clerk, service: clerk.NewMachine("service"), callerA: clerk.NewMachine("caller-a"),
		callerB: clerk.NewMachine("caller-b"), redis: startRedis(t), client: &http.Client{Timeout: hung}}
	clerk.GrantScopes(f.callerA, f.service.ID)
	clerk.GrantScopes(f.callerB, f.service.ID)
	return f
}

// gateway starts a Caddy of the fleet: one site that verifies M2M tokens
// with the service's key, sharing verdicts through Redis, then runs
// handlers, then answers with the caller's id; globals are added to its
// global options.
func (f *fleet) gateway(globals, handlers string) *caddyproc.Process {
	f.t.Helper()
	return caddyproc.StartBinary(f.t, caddyproc.BinaryOf(f.t, redisCaddy), func(p caddyproc.Ports) string {
		return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	persist_config off
%s%s}

http://127.0.0.1:%d {
	clerk_m2m {
		machine_secret_key {env.GATEWAY_MACHINE_SECRET_KEY}
		api_url {env.FAKE_CLERK_URL}
		cache_ttl 10m
		shared_cache
	}
%s
	respond "through {http.auth.user.id}"
}
`, p.Admin, p.HTTP, f.redis.storageBlock(), globals, p.HTTP, handlers)
	}, "FAKE_CLERK_URL="+f.clerk.URL, "GATEWAY_MACHINE_SECRET_KEY="+f.service.SecretKey)
}

// token mints an opaque M2M token of caller, granted to the service.
func (f *fleet) token(caller *backendtest.Machine) string {
	token, _ := f.clerk.CreateM2MToken(caller, backendtest.TokenOptions{Scopes: []string{f.service.ID}})
	return token
}

// send sends token to gateway and returns the answer, checking that a 200
// names the caller.
func (f *fleet) send(gateway *caddyproc.Process, token string, caller *backendtest.Machine) *http.Response {
	f.t.Helper()
	resp, body := gateway.Get(f.t, "/", token)
	if resp.StatusCode == http.StatusOK {
		assert.Equal(f.t, "through "+caller.ID, body)
	}
	return resp
}

// status is the status of send's answer.
func (f *fleet) status(gateway *caddyproc.Process, token string, caller *backendtest.Machine) int {
	f.t.Helper()
	return f.send(gateway, token, caller).StatusCode
}

// The samples of the gateways' metrics the tests read.
const (
	sharedHits  = `caddy_clerk_m2m_cache_lookups_total{cache="shared",result="hit"}`
	writeErrors = `caddy_clerk_m2m_shared_cache_errors_total{op="write"}`
)
