package redis

import (
	"bufio"
	"crypto/rand"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// perMachine limits each calling machine to 3 requests a minute; sync is
// the distributed block, or nothing.
func perMachine(sync string) string {
	return `	rate_limit {
		zone per_machine {
			key {http.auth.user.id}
			events 3
			window 1m
		}
` + sync + `	}
`
}

// rateLimitOrder has rate_limit run after clerk_m2m, which sets the key.
const rateLimitOrder = "\torder rate_limit after clerk_m2m\n"

func TestRateLimitsPerCallingMachine(t *testing.T) {
	f := newFleet(t)
	gateway := f.gateway(rateLimitOrder, perMachine(""))
	tokenA, tokenB := f.token(f.callerA), f.token(f.callerB)
	for range 3 {
		require.Equal(t, http.StatusOK, f.status(gateway, tokenA, f.callerA))
	}
	refused := f.send(gateway, tokenA, f.callerA)
	assert.Equal(t, http.StatusTooManyRequests, refused.StatusCode, "a fourth request of A in the minute")
	assert.NotEmpty(t, refused.Header.Get("Retry-After"))
	assert.Equal(t, http.StatusOK, f.status(gateway, tokenB, f.callerB), "B has a budget of its own")
	assert.Equal(t, http.StatusUnauthorized, f.status(gateway, "mt_"+rand.Text(), nil), "an invalid credential is refused before it counts")
}

// TestRateLimitsPerCallingMachineAcrossTheFleet: with distributed, what A
// spent on one gateway counts on the other, once the other has read it
// from Redis; B's budget is untouched.
func TestRateLimitsPerCallingMachineAcrossTheFleet(t *testing.T) {
	f := newFleet(t)
	distributed := perMachine("\t\tdistributed {\n\t\t\tread_interval 100ms\n\t\t\twrite_interval 100ms\n\t\t}\n")
	first := f.gateway(rateLimitOrder, distributed)
	firstState := f.redis.waitForStates()
	second := f.gateway(rateLimitOrder, distributed)
	secondState := f.redis.waitForStates(firstState)
	commands := f.redis.monitor()

	tokenA, tokenB := f.token(f.callerA), f.token(f.callerB)
	for range 3 {
		require.Equal(t, http.StatusOK, f.status(first, tokenA, f.callerA))
	}
	require.Equal(t, http.StatusTooManyRequests, f.status(first, tokenA, f.callerA))

	// The second gateway has taken in A's requests once the first has
	// written its state twice since (the first write may have taken its
	// state before the last request), the second has loaded it since,
	// and then written its own (it reads and writes in turn, in one
	// goroutine).
	marker := "after A's requests " + rand.Text()
	require.NoError(t, f.redis.client.Echo(t.Context(), marker).Err())
	commands.waitFor(`"echo" "` + marker + `"`)
	commands.waitFor(`"set" "` + firstState + `"`)
	commands.waitFor(`"set" "` + firstState + `"`)
	commands.waitFor(`"get" "` + firstState + `"`)
	commands.waitFor(`"set" "` + secondState + `"`)

	assert.Equal(t, http.StatusTooManyRequests, f.status(second, tokenA, f.callerA), "A's first request to the second gateway")
	assert.Equal(t, http.StatusOK, f.status(second, tokenB, f.callerB))
}

// statesPattern matches the keys of the rate limiters' states, one per
// Caddy instance.
const statesPattern = keyPrefix + "/rate_limit/instances/*.rlstate"

// waitForStates waits until Redis holds the state of a rate limiter that
// is not one of known (a newly started gateway's), and returns its key.
func (r *redisServer) waitForStates(known ...string) string {
	r.t.Helper()
	var found string
	require.Eventually(r.t, func() bool {
		for _, key := range r.keys(statesPattern) {
			if !slices.Contains(known, key) {
				found = key
				return true
			}
		}
		return false
	}, hung, 10*time.Millisecond, "a new gateway's rate limiter state")
	return found
}

// commandStream is what Redis runs, as MONITOR shows it, a command a line.
type commandStream struct {
	t     *testing.T
	lines chan string
}

// monitor streams the commands Redis runs from now on (redis-cli monitor).
func (r *redisServer) monitor() *commandStream {
	r.t.Helper()
	cmd := exec.Command("redis-cli", "-p", strconv.Itoa(r.port), "monitor")
	out, err := cmd.StdoutPipe()
	require.NoError(r.t, err)
	require.NoError(r.t, cmd.Start())
	r.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	s := &commandStream{t: r.t, lines: make(chan string, 1<<16)}
	go func() {
		defer close(s.lines)
		scanner := bufio.NewScanner(out)
		scanner.Buffer(nil, 1<<20)
		for scanner.Scan() {
			s.lines <- scanner.Text()
		}
	}()
	first, ok := <-s.lines
	require.True(r.t, ok && first == "OK", "MONITOR answered %q", first)
	return s
}

// waitFor reads the commands run until one whose line holds text, as
// MONITOR quotes it: "command" "argument"...
func (s *commandStream) waitFor(text string) {
	s.t.Helper()
	deadline := time.After(hung)
	for {
		select {
		case line, ok := <-s.lines:
			require.True(s.t, ok, "MONITOR ended before %s", text)
			if strings.Contains(line, text) {
				return
			}
		case <-deadline:
			s.t.Fatalf("Redis ran no %s", text)
		}
	}
}
