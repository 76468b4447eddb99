package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
	"github.com/caddy-clerk/clerk-m2m/internal/freeport"
)

// environment is a running Caddy, the fake Clerk it asks, and the tables
// of requests.
type environment struct {
	work     string
	clerk    *backendtest.Server
	caddy    *caddyproc.Process
	started  time.Time
	tables   map[table]string
	offsets  map[string]int // by scenario: where each thread goes on in its share of the table
	ports    map[site]int
	metrics  string // the URL of the module's metrics
	profiles string // the admin API's pprof URL; empty when not profiling
}

func startEnvironment(work string, opts options, withPeer bool) (*environment, error) {
	env := &environment{work: work, clerk: backendtest.New(), offsets: map[string]int{}}
	ok := false
	defer func() {
		if !ok {
			env.stop()
		}
	}()
	gateway := env.clerk.NewMachine("gateway")
	fmt.Printf("minting %d distinct JWTs ...\n", opts.tableSize)
	var err error
	if env.tables, err = writeTables(work, env.clerk, gateway, opts.tableSize); err != nil {
		return nil, err
	}
	if opts.profile != "" {
		if err := os.MkdirAll(opts.profile, 0o755); err != nil {
			return nil, err
		}
	}
	peerKey := ""
	if withPeer {
		peerKey = env.clerk.PublicKeyPEM()
	}
	// The bare site on Caddy's HTTP port, the others on three more.
	env.caddy, err = caddyproc.Run(caddyproc.Command{Binary: opts.caddy, MorePorts: 3, Config: func(p caddyproc.Ports) ([]byte, error) {
		env.ports = map[site]int{bareSite: p.HTTP, clerkSite: p.More[0], peerSite: p.More[1]}
		env.metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", p.More[2])
		return writeConfig(work, opts.caddy, caddyConfig{
			Admin: freeport.Addr(p.Admin), BarePort: p.HTTP, ClerkPort: p.More[0], MetricsPort: p.More[2],
			SecretKey: env.clerk.SecretKey(), MachineSecretKey: gateway.SecretKey, ClerkURL: env.clerk.URL,
		}, p.More[1], peerKey)
	}})
	if err != nil {
		return nil, err
	}
	env.started = time.Now()
	if opts.profile != "" {
		env.profiles = env.caddy.AdminURL() + "/debug/pprof/profile"
	}
	if err := env.waitReady(withPeer); err != nil {
		return nil, fmt.Errorf("%v\ncaddy's output:\n%s", err, env.caddy.Output())
	}
	ok = true
	return env, nil
}

// writeConfig writes the Caddyfile and returns its JSON, adapted by the
// binary, with the peer's server on peerPort when peerKey (the PEM the
// peer verifies with) is set. Caddy runs the JSON.
func writeConfig(work, binary string, config caddyConfig, peerPort int, peerKey string) ([]byte, error) {
	var caddyfile bytes.Buffer
	if err := caddyfileTemplate.Execute(&caddyfile, config); err != nil {
		return nil, err
	}
	caddyfilePath := filepath.Join(work, "Caddyfile")
	if err := os.WriteFile(caddyfilePath, caddyfile.Bytes(), 0o600); err != nil {
		return nil, err
	}
	adapted, err := adaptCaddyfile(binary, caddyfilePath)
	if err != nil || peerKey == "" {
		return adapted, err
	}
	return addPeerServer(adapted, peerPort, peerKey)
}

// waitReady waits until every site answers a request of its scenarios.
func (env *environment) waitReady(withPeer bool) error {
	checks := map[site][]table{bareSite: {opaqueTable}, clerkSite: {jwtTable, opaqueTable}}
	if withPeer {
		checks[peerSite] = []table{jwtTable}
	}
	for s, tables := range checks {
		for _, t := range tables {
			token, err := firstLine(env.tables[t])
			if err != nil {
				return err
			}
			if err := waitForOK(fmt.Sprintf("http://127.0.0.1:%d/", env.ports[s]), "Bearer "+token, env.caddy.Exited()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (env *environment) stop() {
	if env.caddy != nil {
		env.caddy.Stop()
	}
	env.clerk.Close()
}

// runResult is what one run of one scenario measured.
type runResult struct {
	rps      float64
	requests int
	caddyCPU time.Duration
	wrkCPU   time.Duration
	otherCPU float64 // cores
}

// perRequest is a CPU time per request, in microseconds.
func perRequest(cpu time.Duration, requests int) float64 {
	if requests == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(requests)
}

// measure runs one scenario once, and checks that the module's cache
// answered its requests as the scenario says. With profile set, a CPU
// profile of Caddy during the run is written there.
func (env *environment) measure(sc scenario, opts options, profile string) (runResult, error) {
	countsBefore, err := env.cacheCounts()
	if err != nil {
		return runResult{}, err
	}
	profiled := make(chan error, 1)
	if profile != "" {
		go func() { profiled <- env.saveProfile(profile, opts.duration) }()
	} else {
		profiled <- nil
	}
	before, err := sampleCPU(env.caddy.Pid())
	if err != nil {
		return runResult{}, err
	}
	w, err := runWrk(env.work, env.ports[sc.site], env.tables[sc.table], env.offsets[sc.name], opts)
	if err != nil {
		return runResult{}, err
	}
	env.offsets[sc.name] = w.nextOffset
	after, err := sampleCPU(env.caddy.Pid())
	if err != nil {
		return runResult{}, err
	}
	if err := <-profiled; err != nil {
		return runResult{}, fmt.Errorf("profile: %v", err)
	}
	countsAfter, err := env.cacheCounts()
	if err != nil {
		return runResult{}, err
	}
	if err := checkCache(sc, countsBefore, countsAfter, w.requests); err != nil {
		return runResult{}, err
	}
	return runResult{
		rps: w.rps, requests: w.requests, wrkCPU: w.cpu,
		caddyCPU: after.caddy - before.caddy,
		otherCPU: otherCPU(before, after, w.cpu),
	}, nil
}

// checkCache fails a run whose requests the cache did not answer as the
// scenario says: a "distinct" run answered from the cache, or a "repeated"
// one verified again and again, would measure something else than its
// name.
func checkCache(sc scenario, before, after cacheCounts, requests int) error {
	if sc.cache == (cacheExpectation{}) {
		return nil
	}
	counted := after[sc.cache] - before[sc.cache]
	if share := counted / float64(requests); share < 0.98 {
		return fmt.Errorf("the %s cache answered %s to %.0f of %d requests (%.0f%%): the scenario does not measure what it says",
			sc.cache.cache, sc.cache.result, counted, requests, 100*share)
	}
	return nil
}

// cacheCounts are the module's cache lookups so far, by cache and result.
type cacheCounts map[cacheExpectation]float64

var cacheLookupLine = regexp.MustCompile(`^caddy_clerk_m2m_cache_lookups_total\{cache="(\w+)",result="(\w+)"\} (\S+)$`)

func (env *environment) cacheCounts() (cacheCounts, error) {
	resp, err := http.Get(env.metrics)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return parseCacheCounts(resp.Body)
}

func parseCacheCounts(r io.Reader) (cacheCounts, error) {
	counts := cacheCounts{}
	scanner := bufio.NewScanner(r)
	for scanner.Scan() {
		m := cacheLookupLine.FindStringSubmatch(scanner.Text())
		if m == nil {
			continue
		}
		value, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %v", err)
		}
		counts[cacheExpectation{m[1], m[2]}] = value
	}
	return counts, scanner.Err()
}

// saveProfile writes a CPU profile of Caddy over the run's duration.
func (env *environment) saveProfile(path string, duration time.Duration) error {
	seconds := max(1, int(duration.Seconds()))
	resp, err := http.Get(env.profiles + "?seconds=" + strconv.Itoa(seconds))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkOpaqueCalls checks that the opaque token, presented in every round,
// was verified with Clerk about once per cache_ttl (30s) and no more.
func (env *environment) checkOpaqueCalls() error {
	allowed := 2 + int(time.Since(env.started)/(30*time.Second))
	if calls := env.clerk.Calls("/m2m_tokens/verify"); calls > allowed {
		return fmt.Errorf("the opaque token was verified with Clerk %d times (at most %d expected)", calls, allowed)
	}
	return nil
}

func firstLine(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64<<10), 64<<10)
	if !scanner.Scan() {
		return "", fmt.Errorf("%s is empty", path)
	}
	return scanner.Text(), nil
}
