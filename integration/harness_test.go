// Package integration runs Caddy with the clerk_m2m handlers end to end: a
// real Caddy in this process, an echo upstream, and the fake Clerk of
// backend/backendtest, as Caddy's own caddytest/integration does for its
// modules.
//
// Caddy is a process-wide singleton: the tests of this package run one after
// the other, each loading its own configuration into the one Caddy, which
// listens on ports chosen when the package starts. This file is the whole
// harness; every suite uses only what is here and its own helpers.
package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	_ "github.com/caddy-clerk/clerk-m2m"
	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/freeport"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
)

// The ports of the Caddy under test, chosen by startCaddy. They stay bound
// from the first configuration to the last: a configuration load binds the
// new listeners before the old ones close, so no other process can take a
// port in between.
var httpPort, httpsPort, adminPort int

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	// Caddy keeps data (its instance id, certificates, shared verdicts) in
	// the user's data directory: keep the tests out of a developer's own.
	// Its default storage was placed when the package was initialised,
	// before this runs, so every configuration names its own (globals).
	home, err := os.MkdirTemp("", "clerk-m2m-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(home)
	os.Setenv("XDG_DATA_HOME", filepath.Join(home, "data"))
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
	storageDir = filepath.Join(home, "data", "caddy")
	if err := startCaddy(); err != nil {
		fmt.Fprintln(os.Stderr, "starting Caddy:", err)
		return 1
	}
	defer func() { _ = caddy.Stop() }()
	return m.Run()
}

// storageDir is where the tests' Caddy keeps its data: a temporary
// folder of the test process.
var storageDir string

// idleCaddyfile is what Caddy runs until a test loads its configuration.
const idleCaddyfile = "http://{{GATEWAY}} {\n\trespond \"no test configuration loaded\" 503\n}\n"

// startCaddy starts Caddy on free ports, chosen again when another
// process took one before Caddy bound it.
func startCaddy() error {
	_, err := freeport.Retry(3, func(ports []int) (struct{}, error) {
		httpPort, httpsPort, adminPort = ports[0], ports[1], ports[2]
		config, err := adapt(globals("") + idleCaddyfile)
		if err != nil {
			return struct{}{}, err
		}
		return struct{}{}, caddy.Load(config, true)
	})
	return err
}

// gatewayAddress is the host and port of the sites the tests configure.
func gatewayAddress() string { return "localhost:" + strconv.Itoa(httpPort) }

// gatewayURL is the URL of path on the gateway.
func gatewayURL(path string) string { return "http://" + gatewayAddress() + path }

// adminURL is the URL of path on Caddy's admin endpoint.
func adminURL(path string) string { return "http://127.0.0.1:" + strconv.Itoa(adminPort) + path }

// globals are the global options every test configuration starts with:
// the ports of the Caddy under test, on loopback, and extra options.
func globals(extra string) string {
	// persist_config off: tests must not replace the autosave.json that a
	// developer's own `caddy run --resume` loads.
	return "{\n\tadmin 127.0.0.1:{{ADMIN_PORT}}\n\tdefault_bind 127.0.0.1\n\tpersist_config off\n\thttp_port {{HTTP_PORT}}\n\thttps_port {{HTTPS_PORT}}\n" +
		"\tgrace_period 1ns\n\tskip_install_trust\n\tstorage file_system {{STORAGE}}\n" + extra + "}\n"
}

// Log options for globals: everything to the test's log file, or errors
// only (a load run).
const (
	debugLog = "\tlog {\n\t\toutput file {{LOG}}\n\t\tlevel DEBUG\n\t}\n"
	errorLog = "\tlog {\n\t\tlevel ERROR\n\t}\n"
)

// gatewayWith is a configuration whose one site verifies with clerk_m2m
// (the test's keys, and subdirectives), answers "through" and reports
// refusals in X-Clerk-Error.
func gatewayWith(subdirectives string) string {
	return globals("") + `
http://{{GATEWAY}} {
	clerk_m2m {
		secret_key {{SECRET}}
		machine_secret_key {{GATEWAY_KEY}}
		api_url {{CLERK}}
		` + subdirectives + `
	}
	respond "through"
	handle_errors {
		header X-Clerk-Error {http.auth.clerk_m2m.error}
		respond "refused" {http.error.status_code}
	}
}
`
}

// adapt fills in the ports and adapts a Caddyfile to Caddy's JSON.
func adapt(caddyfile string) ([]byte, error) {
	caddyfile = strings.NewReplacer(
		"{{GATEWAY}}", gatewayAddress(),
		"{{HTTP_PORT}}", strconv.Itoa(httpPort),
		"{{HTTPS_PORT}}", strconv.Itoa(httpsPort),
		"{{ADMIN_PORT}}", strconv.Itoa(adminPort),
		"{{STORAGE}}", storageDir,
	).Replace(caddyfile)
	config, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	return config, err
}

// waitForHandOver waits out the switch from the previous configuration:
// caddy.Load returns while the old servers still shut down in the
// background (caddyhttp's App.stop), and a connection they accept
// meanwhile is served by the old configuration, or reset when their
// listening socket closes with it still queued (the new and the old
// sockets share the port through SO_REUSEPORT). Once the old sockets are
// closed, only the new configuration answers.
func waitForHandOver(t testing.TB) {
	t.Helper()
	for _, address := range []string{freeport.Addr(httpPort), freeport.Addr(adminPort)} {
		require.Eventually(t, func() bool { return handedOver(address) }, 10*time.Second, time.Millisecond,
			"the previous configuration kept listening on %s", address)
	}
}

// handedOver reports whether only one configuration listens on address.
// Caddy forgets a listener a moment before it closes the socket, so where
// the kernel can tell (Linux), its count of listening sockets decides.
func handedOver(address string) bool {
	if caddy.ListenerUsage("tcp", address) > 1 {
		return false
	}
	sockets, known := listeningSockets(address)
	return !known || sockets <= 1
}

// listeningSockets counts the sockets listening on an IPv4 address (the
// tests' are 127.0.0.1), from /proc/net/tcp; false where it cannot be
// read. A configuration may listen on the same port of other addresses
// too ([::1]): those are not this address's.
func listeningSockets(address string) (int, bool) {
	host, port, _ := net.SplitHostPort(address)
	number, err := strconv.Atoi(port)
	ip := net.ParseIP(host).To4()
	if err != nil || ip == nil {
		return 0, false
	}
	local := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], number) // as /proc/net/tcp writes it
	const listen = "0A"                                                               // TCP_LISTEN
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, false
	}
	count := 0
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(line) // sl local_address rem_address st ...
		if len(fields) > 3 && fields[1] == local && fields[3] == listen {
			count++
		}
	}
	return count, true
}

// newClient returns the client of the gateway: it dials the gateway's
// IPv4 loopback whatever the URL's host, and resends the requests whose
// connection Caddy dropped unanswered, as any client would: during a
// configuration load, Caddy's hand-over of the listening socket from the
// old servers to the new ones resets a few fresh connections, whatever the
// handlers (as in caddyserver/caddy#4184; about 1 in 100 in a test of
// back-to-back loads).
func newClient() *http.Client {
	dialer := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 5 * time.Second}
	return &http.Client{
		Transport: &resendDropped{base: &http.Transport{
			DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
				_, port, err := net.SplitHostPort(address)
				if err != nil {
					return nil, err
				}
				return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
			},
			MaxIdleConns:    100,
			IdleConnTimeout: 90 * time.Second,
		}},
		Timeout: 30 * time.Second, // a gateway waiting on a Clerk that never answers fails here
	}
}

// maxResends bounds the resends of one request. A hand-over also resets
// the fresh connections waiting in the old listening socket, and
// back-to-back loads on a busy machine have reset one request four times in
// a row: ten leaves a wide margin, and any other answer still fails.
const maxResends = 10

// resendDropped resends, up to maxResends times, a request without a body
// whose connection ended before any answer, each time on a new connection,
// and counts the resends.
type resendDropped struct {
	base    http.RoundTripper
	resends atomic.Int64
}

func (r *resendDropped) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		resp, err := r.base.RoundTrip(req)
		if err == nil || attempt > maxResends || req.Body != nil && req.Body != http.NoBody ||
			!errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			return resp, err
		}
		r.resends.Add(1)
		// The other idle connections were most likely dropped by the same
		// hand-over: the resend goes on a connection of its own.
		r.base.(interface{ CloseIdleConnections() }).CloseIdleConnections()
	}
}

// resends is how many requests client has resent so far.
func resends(client *http.Client) int64 {
	return client.Transport.(*resendDropped).resends.Load()
}

// env is what one test runs against: a fake Clerk with the machine the
// gateway stands for and one allowed to call it, an echo upstream, a log
// file, and the client of the gateway.
type env struct {
	t        *testing.T
	client   *http.Client
	clerk    *backendtest.Server
	gateway  *backendtest.Machine // the machine the gateway stands for
	caller   *backendtest.Machine // a machine allowed to call it
	upstream string               // host:port of the echo upstream
	logFile  string
	secrets  []string // must never appear in the log
}

// newEnv makes a test's world, with prepare applied to the fake Clerk
// first (faults already there when the configuration starts, say). The
// environment's Clerk variables are emptied for the test, so that a
// developer's own keys never leak into it.
func newEnv(t *testing.T, prepare ...func(*backendtest.Server)) *env {
	t.Helper()
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	for _, f := range prepare {
		f(clerk)
	}
	e := &env{
		t:        t,
		client:   newClient(),
		clerk:    clerk,
		gateway:  clerk.NewMachine("gateway"),
		caller:   clerk.NewMachine("caller"),
		upstream: strings.TrimPrefix(echoUpstream(t).URL, "http://"),
		logFile:  filepath.Join(t.TempDir(), "caddy.log"),
	}
	e.secrets = []string{clerk.SecretKey(), e.gateway.SecretKey, e.caller.SecretKey}
	return e
}

// start makes a test's world and loads caddyfile into it.
func start(t *testing.T, caddyfile string) *env {
	t.Helper()
	e := newEnv(t)
	e.load(caddyfile)
	return e
}

// load runs caddyfile and waits until only it answers; idle connections
// to the previous configuration are dropped. These are filled in:
// {{GATEWAY}} (the host and port of the gateway's site), {{LOG}},
// {{SECRET}} (the instance secret key), {{GATEWAY_KEY}} and {{GATEWAY_ID}}
// (the gateway's machine), {{CLERK}} (the fake Clerk's URL) and
// {{UPSTREAM}} (the echo upstream).
func (e *env) load(caddyfile string) {
	e.t.Helper()
	e.reload(caddyfile)
	waitForHandOver(e.t)
	e.client.CloseIdleConnections()
}

// reload runs caddyfile as an operator's reload does: the previous
// configuration may still answer a few requests (or drop them) meanwhile.
func (e *env) reload(caddyfile string) {
	e.t.Helper()
	config, err := adapt(strings.NewReplacer(
		"{{LOG}}", e.logFile,
		"{{SECRET}}", e.clerk.SecretKey(),
		"{{GATEWAY_KEY}}", e.gateway.SecretKey,
		"{{GATEWAY_ID}}", e.gateway.ID,
		"{{CLERK}}", e.clerk.URL,
		"{{UPSTREAM}}", e.upstream,
	).Replace(caddyfile))
	require.NoError(e.t, err)
	require.NoError(e.t, caddy.Load(config, true))
}

// echoUpstream answers with the X-Clerk-* headers it received, and the
// Authorization and Cookie headers if any, as JSON.
func echoUpstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen := map[string]string{}
		for name, values := range r.Header {
			if strings.HasPrefix(name, "X-Clerk-") || name == "Authorization" || name == "Cookie" {
				seen[name] = strings.Join(values, "|")
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(seen)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// request sends a GET to path with the given Authorization header values.
func (e *env) request(path string, authorization ...string) (*http.Response, map[string]string) {
	e.t.Helper()
	return e.send(path, func(req *http.Request) {
		for _, value := range authorization {
			req.Header.Add("Authorization", value)
		}
	})
}

// send sends a GET to path, prepared by prepare, and returns the answer and
// the X-Clerk-* headers the upstream saw (for a 200).
func (e *env) send(path string, prepare func(*http.Request)) (*http.Response, map[string]string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, gatewayURL(path), nil)
	require.NoError(e.t, err)
	prepare(req)
	resp, err := e.client.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	seen := map[string]string{}
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(e.t, json.NewDecoder(resp.Body).Decode(&seen))
	}
	return resp, seen
}

// bearer sends token as a bearer token to path, and remembers it as a
// secret that must never be logged.
func (e *env) bearer(path, token string) (*http.Response, map[string]string) {
	e.t.Helper()
	e.secrets = append(e.secrets, token)
	return e.request(path, "Bearer "+token)
}

// rawStatus sends a GET with the given Authorization header lines written
// as they are (Go's HTTP client refuses to send some of them) and returns
// the status; a panic in Caddy would show as a 500 or a broken connection.
func (e *env) rawStatus(path string, authorization ...string) int {
	e.t.Helper()
	conn, err := net.Dial("tcp", freeport.Addr(httpPort))
	require.NoError(e.t, err)
	defer conn.Close()
	request := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n", path, gatewayAddress())
	for _, value := range authorization {
		request += "Authorization: " + value + "\r\n"
	}
	_, _ = conn.Write([]byte(request + "Connection: close\r\n\r\n")) // the server may answer before reading it all
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(e.t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// burst sends n requests with the given tokens at once, through the
// gateway, and returns how many got each status (0: no answer).
func (e *env) burst(path string, tokens func(i int) string, n int) map[int]int {
	e.t.Helper()
	var mu sync.Mutex
	statuses := map[int]int{}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, gatewayURL(path), nil)
			req.Header.Set("Authorization", "Bearer "+tokens(i))
			<-start
			resp, err := e.client.Do(req)
			status := 0
			if err == nil {
				status = resp.StatusCode
				resp.Body.Close()
			}
			mu.Lock()
			statuses[status]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return statuses
}

// requireRefused asserts a refusal with the given status and reason, as
// the test configurations' handle_errors routes report it.
func requireRefused(t *testing.T, resp *http.Response, status int, reason string) {
	t.Helper()
	require.Equal(t, status, resp.StatusCode)
	assert.Equal(t, reason, resp.Header.Get("X-Clerk-Error"))
	if status == http.StatusUnauthorized {
		challenge := resp.Header.Get("WWW-Authenticate")
		assert.True(t, strings.HasPrefix(challenge, `Bearer realm="clerk"`), "challenge %q", challenge)
		if reason != "token_missing" {
			assert.Contains(t, challenge, `error="invalid_token"`)
		}
	}
}

// lastRequest returns the last request the fake received on route.
func lastRequest(t *testing.T, clerk *backendtest.Server, route string) backendtest.Request {
	t.Helper()
	requests := clerk.Requests()
	for i := len(requests) - 1; i >= 0; i-- {
		if strings.HasSuffix(requests[i].Path, route) {
			return requests[i]
		}
	}
	t.Fatalf("no request to %s", route)
	return backendtest.Request{}
}

// accessLogEntry waits for the access log entry of the request for uri
// in the log file (Caddy writes it once the answer is sent), and returns
// it.
func accessLogEntry(t *testing.T, logFile, uri string) map[string]any {
	t.Helper()
	var entry map[string]any
	require.Eventually(t, func() bool {
		for _, line := range strings.Split(readLog(t, logFile), "\n") {
			if strings.Contains(line, `"uri":"`+uri+`"`) && strings.Contains(line, `"msg":"handled request"`) {
				return json.Unmarshal([]byte(line), &entry) == nil
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "the access log entry of %s", uri)
	return entry
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(data)
}

// assertNoSecretsLogged checks that the log holds no piece of size
// characters of any token or secret the test used.
func (e *env) assertNoSecretsLogged(size int) {
	e.t.Helper()
	logs := readLog(e.t, e.logFile)
	require.Contains(e.t, logs, "credential refused", "the DEBUG log was captured")
	for _, secret := range e.secrets {
		for _, fragment := range secretFragments(secret, size) {
			if strings.Contains(logs, fragment) {
				e.t.Errorf("a %d-character piece of a token or secret was logged: %q", size, fragment)
				return
			}
		}
	}
}

// secretFragments returns every piece of size characters of the part of a
// secret that is hard to guess: for a JWT the payload and signature (its
// header is the same for every token of an instance), for a prefixed
// credential what follows the prefix.
func secretFragments(secret string, size int) []string {
	if parts := strings.Split(secret, "."); len(parts) == 3 {
		secret = parts[1] + "." + parts[2]
	} else if _, rest, ok := strings.Cut(secret, "_"); ok {
		secret = rest
		if _, rest, ok := strings.Cut(secret, "_"); ok && strings.HasPrefix(secret, "test_") || strings.HasPrefix(secret, "live_") {
			secret = rest
		}
	}
	var fragments []string
	for i := 0; i+size <= len(secret); i++ {
		fragments = append(fragments, secret[i:i+size])
	}
	return fragments
}

// settledGoroutines counts the process's goroutines once the idle
// connections are closed (the client's to Caddy, and Caddy's to the fake
// Clerk: how many are kept alive depends on how busy the machine was, not
// on a leak) and the count stops moving.
func (e *env) settledGoroutines() int {
	e.client.CloseIdleConnections()
	e.clerk.CloseClientConnections()
	count := runtime.NumGoroutine()
	for range 50 {
		time.Sleep(20 * time.Millisecond)
		next := runtime.NumGoroutine()
		if next == count {
			return count
		}
		count = next
	}
	return count
}
