package redis

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
)

func TestOneClerkCallPerTokenAcrossThreeGateways(t *testing.T) {
	f := newFleet(t)
	gateways := []*caddyproc.Process{f.gateway("", ""), f.gateway("", ""), f.gateway("", "")}
	token := f.token(f.callerA)

	require.Equal(t, http.StatusOK, f.status(gateways[0], token, f.callerA))
	f.redis.waitForEntries(1)
	for _, gateway := range gateways[1:] {
		for range 3 {
			assert.Equal(t, http.StatusOK, f.status(gateway, token, f.callerA))
		}
		assert.Equal(t, 1.0, gateway.Metric(t, sharedHits), "read once from Redis, then from memory")
	}
	assert.Equal(t, 1, f.clerk.Calls(verifyPath), "one call to Clerk for the three gateways")
}

// TestWhileRedisIsDownTheFleetAsksClerk: with Redis stopped, then frozen,
// the gateways answer every request through Clerk (and from memory what
// they had read), and count the writes that failed (Redis's storage
// reports a failed read as "not found": a lookup is a miss); once Redis is
// back, they share again.
func TestWhileRedisIsDownTheFleetAsksClerk(t *testing.T) {
	f := newFleet(t)
	gateways := []*caddyproc.Process{f.gateway("", ""), f.gateway("", "")}
	known := f.token(f.callerA)
	require.Equal(t, http.StatusOK, f.status(gateways[0], known, f.callerA))
	f.redis.waitForEntries(1)
	require.Equal(t, http.StatusOK, f.status(gateways[1], known, f.callerA))
	require.Equal(t, 1, f.clerk.Calls(verifyPath), "shared")

	verifiedByEach := func(state string) {
		t.Helper()
		calls, fresh := f.clerk.Calls(verifyPath), f.token(f.callerB)
		for i, gateway := range gateways {
			failedWrites := gateway.Metric(t, writeErrors)
			assert.Equal(t, http.StatusOK, f.status(gateway, fresh, f.callerB), "%s: a new token on gateway %d", state, i)
			assert.Equal(t, http.StatusOK, f.status(gateway, known, f.callerA), "%s: a token in memory on gateway %d", state, i)
			require.Eventually(t, func() bool { return gateway.Metric(t, writeErrors) > failedWrites }, hung, 10*time.Millisecond,
				"%s: the failed write is counted", state)
		}
		assert.Equal(t, calls+len(gateways), f.clerk.Calls(verifyPath), "%s: each gateway asked Clerk", state)
	}

	f.redis.stop()
	verifiedByEach("Redis stopped")

	f.redis.restart()
	require.NoError(t, f.redis.proc.Signal(syscall.SIGSTOP))
	verifiedByEach("Redis frozen")
	require.NoError(t, f.redis.proc.Signal(syscall.SIGCONT))

	calls, back := f.clerk.Calls(verifyPath), f.token(f.callerB)
	require.Equal(t, http.StatusOK, f.status(gateways[0], back, f.callerB))
	f.redis.waitForEntries(1)
	assert.Equal(t, http.StatusOK, f.status(gateways[1], back, f.callerB))
	assert.Equal(t, calls+1, f.clerk.Calls(verifyPath), "Redis back: shared again")
}

// TestCaddyDoesNotLoadAConfigurationWhileRedisIsDown: the Redis storage
// asks Redis when a configuration loads, so Caddy does not start while
// Redis does not answer, and a reload meanwhile is refused (the running
// configuration goes on).
func TestCaddyDoesNotLoadAConfigurationWhileRedisIsDown(t *testing.T) {
	f := newFleet(t)
	gateway := f.gateway("", "")
	token := f.token(f.callerA)
	require.Equal(t, http.StatusOK, f.status(gateway, token, f.callerA))
	f.redis.stop()

	config := filepath.Join(t.TempDir(), "Caddyfile")
	require.NoError(t, os.WriteFile(config, []byte(fmt.Sprintf("{\n\tadmin off\n%s}\n\nhttp://127.0.0.1:0 {\n\trespond \"up\"\n}\n",
		f.redis.storageBlock())), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), hung)
	defer cancel()
	start := exec.CommandContext(ctx, caddyproc.BinaryOf(t, redisCaddy), "run", "--config", config, "--adapter", "caddyfile")
	start.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	out, err := start.CombinedOutput()
	require.Error(t, err, "%s", out)
	require.NoError(t, ctx.Err(), "it gave up on its own")
	assert.Contains(t, string(out), "provision caddy.storage.redis")
	assert.Contains(t, string(out), "connection refused")

	source, err := os.ReadFile(config)
	require.NoError(t, err)
	resp, err := f.client.Post(gateway.AdminURL()+"/load", "text/caddyfile", bytes.NewReader(source))
	require.NoError(t, err)
	refusal, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.NotEqual(t, http.StatusOK, resp.StatusCode, "a reload is refused")
	assert.Contains(t, string(refusal), "provision caddy.storage.redis")
	assert.Equal(t, http.StatusOK, f.status(gateway, token, f.callerA), "the running configuration goes on")
}
