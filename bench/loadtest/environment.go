package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
	"github.com/caddy-clerk/clerk-m2m/internal/freeport"
)

// environment is a running Caddy, the fake Clerk it asks, and the tables
// of requests.
type environment struct {
	work  string
	clerk *backendtest.Server
	caddy *caddyproc.Process
	// started is when the runs started, after the fills, and
	// callsBefore how many opaque tokens Clerk had verified then.
	started     time.Time
	callsBefore int
	tables      map[table]string
	offsets     map[string]int // by scenario: where each thread goes on in its share of the table
	ports       map[site]int
	metrics     string // the URL of the module's metrics
	admin       string // the admin API's URL
}

func startEnvironment(work string, opts options, with builtIn) (*environment, error) {
	env := &environment{work: work, clerk: backendtest.New(), offsets: map[string]int{}}
	ok := false
	defer func() {
		if !ok {
			env.stop()
		}
	}()
	gateway := env.clerk.NewMachine("gateway")
	fmt.Printf("minting %d distinct JWTs and %d distinct opaque tokens ...\n", opts.tableSize, opts.tableSize)
	var err error
	if env.tables, err = writeTables(work, env.clerk, gateway, opts.tableSize); err != nil {
		return nil, err
	}
	if opts.profile != "" {
		if err := os.MkdirAll(opts.profile, 0o755); err != nil {
			return nil, err
		}
	}
	// The bare site on Caddy's HTTP port, the others on more.
	env.caddy, err = caddyproc.Run(caddyproc.Command{Binary: opts.caddy, MorePorts: 5, Config: func(p caddyproc.Ports) ([]byte, error) {
		env.ports = map[site]int{bareSite: p.HTTP, clerkSite: p.More[0], peerSite: p.More[1], floorSite: p.More[3], manySite: p.More[4]}
		env.metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", p.More[2])
		return writeConfig(work, opts.caddy, caddyConfig{
			Admin: freeport.Addr(p.Admin), BarePort: p.HTTP, ClerkPort: p.More[0], ManyPort: p.More[4], MetricsPort: p.More[2],
			SecretKey: env.clerk.SecretKey(), MachineSecretKey: gateway.SecretKey, ClerkURL: env.clerk.URL,
			ManyCacheBytes: opts.manyCacheBytes,
		}, env.jsonSites(with))
	}})
	if err != nil {
		return nil, err
	}
	env.admin = env.caddy.AdminURL()
	if err := env.waitReady(with); err != nil {
		return nil, fmt.Errorf("%v\ncaddy's output:\n%s", err, env.caddy.Output())
	}
	ok = true
	return env, nil
}

// jsonSites are the sites of the modules compared that Caddy has, which
// are configured in JSON: they verify with the fake Clerk's public key.
func (env *environment) jsonSites(with builtIn) map[string]any {
	sites := map[string]any{}
	if with.floor {
		sites[string(floorSite)] = jsonSite(env.ports[floorSite], floorHandler(env.clerk.PublicKeyPEM()))
	}
	if with.peer {
		sites[peerName] = jsonSite(env.ports[peerSite], peerHandler(env.clerk.PublicKeyPEM()))
	}
	return sites
}

// writeConfig writes the Caddyfile and returns its JSON, adapted by the
// binary, with the sites configured in JSON added. Caddy runs the JSON.
func writeConfig(work, binary string, config caddyConfig, jsonSites map[string]any) ([]byte, error) {
	var caddyfile bytes.Buffer
	if err := caddyfileTemplate.Execute(&caddyfile, config); err != nil {
		return nil, err
	}
	caddyfilePath := filepath.Join(work, "Caddyfile")
	if err := os.WriteFile(caddyfilePath, caddyfile.Bytes(), 0o600); err != nil {
		return nil, err
	}
	adapted, err := adaptCaddyfile(binary, caddyfilePath)
	if err != nil {
		return nil, err
	}
	return addServers(adapted, jsonSites)
}

// waitReady waits until every site answers a request of its scenarios.
func (env *environment) waitReady(with builtIn) error {
	checks := map[site][]table{bareSite: {opaqueTable}, clerkSite: {jwtTable, opaqueTable}, manySite: {jwtTable}}
	if with.floor {
		checks[floorSite] = []table{jwtTable}
	}
	if with.peer {
		checks[peerSite] = []table{jwtTable}
	}
	for s, tables := range checks {
		for _, t := range tables {
			token, err := firstLine(env.tables[t])
			if err != nil {
				return err
			}
			if err := waitForOK(env.url(s), "Bearer "+token, env.caddy.Exited()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (env *environment) url(s site) string { return fmt.Sprintf("http://127.0.0.1:%d/", env.ports[s]) }

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
	otherCPU float64       // cores
	p50, p99 time.Duration // latency, as wrk saw it
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
		rps: w.rps, requests: w.requests, wrkCPU: w.cpu, p50: w.p50, p99: w.p99,
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
	resp, err := http.Get(env.admin + "/debug/pprof/profile?seconds=" + strconv.Itoa(seconds))
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

// startRuns notes when the runs start, after the fills, and what Clerk
// was asked until then.
func (env *environment) startRuns() {
	env.started, env.callsBefore = time.Now(), env.clerk.Calls(opaqueVerifyPath)
}

// opaqueVerifyPath is the path of Clerk's verification of opaque M2M tokens.
const opaqueVerifyPath = "/m2m_tokens/verify"

// checkOpaqueCalls checks that, during the runs, the opaque token presented
// again and again was verified with Clerk about once per cache_ttl (30s)
// and no more, and no caller's opaque token at all: every one was
// remembered from the fill.
func (env *environment) checkOpaqueCalls() error {
	allowed := 2 + int(time.Since(env.started)/(30*time.Second))
	if calls := env.clerk.Calls(opaqueVerifyPath) - env.callsBefore; calls > allowed {
		return fmt.Errorf("opaque tokens were verified with Clerk %d times during the runs (at most %d expected)", calls, allowed)
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

// fillers is how many requests fill presents at once: fewer than the calls
// to Clerk a client may have in flight (max_clerk_calls' fair share).
const fillers = 8

// fill presents every line of the scenario's table to its site twice in a
// row (the module keeps a JWT's verdict from its second use), before the runs,
// so that the site's cache holds a verdict on each (the many-callers
// scenarios measure a gateway all of whose callers came before), and
// returns how much Caddy's live heap grew by, per line.
func (env *environment) fill(sc scenario) (heapPerVerdict float64, err error) {
	lines, err := readLines(env.tables[sc.table])
	if err != nil {
		return 0, err
	}
	before, err := env.liveHeap()
	if err != nil {
		return 0, err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: fillers}}
	defer client.CloseIdleConnections()
	failures := make(chan error, fillers)
	var wg sync.WaitGroup
	for w := range fillers {
		wg.Go(func() {
			for i := w; i < len(lines); i += fillers {
				for range 2 {
					if err := present(client, env.url(sc.site), lines[i]); err != nil {
						failures <- fmt.Errorf("filling %s, line %d: %v", sc.site, i+1, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(failures)
	if err := <-failures; err != nil {
		return 0, err
	}
	after, err := env.liveHeap()
	if err != nil {
		return 0, err
	}
	return float64(after-before) / float64(len(lines)), nil
}

func present(client *http.Client, url, token string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

var heapAllocLine = regexp.MustCompile(`(?m)^go_memstats_heap_alloc_bytes (\S+)$`)

// liveHeap is the memory Caddy's live objects hold: its heap just after a
// collection (which the admin API's heap profile runs first).
func (env *environment) liveHeap() (int64, error) {
	resp, err := http.Get(env.admin + "/debug/pprof/heap?gc=1")
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp, err = http.Get(env.metrics); err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	m := heapAllocLine.FindSubmatch(body)
	if m == nil {
		return 0, errors.New("no go_memstats_heap_alloc_bytes in Caddy's metrics")
	}
	bytes, err := strconv.ParseFloat(string(m[1]), 64)
	return int64(bytes), err
}

func readLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(data)), nil
}
