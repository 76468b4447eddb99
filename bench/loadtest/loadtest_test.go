package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-clerk/clerk-m2m"
	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	_ "github.com/caddy-clerk/clerk-m2m/bench/loadtest/floor"
)

func TestParseMachineBusy(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	stat := "cpu  100 20 30 5000 70 4 6 10 50 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
	busy, err := parseMachineBusy([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 170 * time.Second / clockTicks; busy != want {
		t.Errorf("busy = %v, want %v (idle, iowait and guest left out)", busy, want)
	}
	if _, err := parseMachineBusy([]byte("intr 1 2 3\n")); err == nil {
		t.Error("a /proc/stat without its cpu line was read")
	}
}

func TestParseProcessCPU(t *testing.T) {
	// A command name may hold spaces and parentheses.
	stat := "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 300 1000 200"
	cpu, err := parseProcessCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 300 * time.Second / clockTicks; cpu != want {
		t.Errorf("cpu = %v, want %v", cpu, want)
	}
}

func TestOtherCPU(t *testing.T) {
	start := time.Now()
	before := cpuSample{at: start, machine: 10 * time.Second, caddy: 3 * time.Second, self: time.Second}
	after := cpuSample{at: start.Add(4 * time.Second), machine: 18 * time.Second, caddy: 8 * time.Second, self: time.Second}
	// 8s busy over 4s: 5s Caddy, 2s wrk, so 1s, a quarter of a core, was someone else's.
	if got := otherCPU(before, after, 2*time.Second); got != 0.25 {
		t.Errorf("otherCPU = %v, want 0.25", got)
	}
}

const wrkOutput = `Running 4s test @ http://127.0.0.1:40000/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  310.00us   9.00ms   90.00%
    Req/Sec    15.50k     1.00k   17.00k    70.00%
  123456 requests in 4.00s, 15.00MB read
Requests/sec:  30864.00
Transfer/sec:      3.75MB
next offset 61730
latency p50 980 p99 2450
`

func TestParseWrk(t *testing.T) {
	res, err := parseWrk([]byte(wrkOutput))
	if err != nil {
		t.Fatal(err)
	}
	if res.rps != 30864 || res.requests != 123456 || res.nextOffset != 61730 ||
		res.p50 != 980*time.Microsecond || res.p99 != 2450*time.Microsecond {
		t.Errorf("parsed %+v", res)
	}
	spoiled := strings.Replace(wrkOutput, "Requests/sec", "  Non-2xx or 3xx responses: 12\nRequests/sec", 1)
	if _, err := parseWrk([]byte(spoiled)); err == nil || !strings.Contains(err.Error(), "Non-2xx") {
		t.Errorf("a run with failed requests was accepted: %v", err)
	}
	if _, err := parseWrk([]byte("unable to connect")); err == nil {
		t.Error("output without figures was accepted")
	}
}

func TestCacheCheck(t *testing.T) {
	metrics := `# HELP caddy_clerk_m2m_cache_lookups_total Lookups
# TYPE caddy_clerk_m2m_cache_lookups_total counter
caddy_clerk_m2m_cache_lookups_total{cache="jwt",result="hit"} 10
caddy_clerk_m2m_cache_lookups_total{cache="jwt",result="miss"} 1000
caddy_clerk_m2m_verifications_total{outcome="verified",token_format="jwt",token_type="m2m_token"} 1010
`
	before, err := parseCacheCounts(strings.NewReader(metrics))
	if err != nil {
		t.Fatal(err)
	}
	if before[cacheExpectation{"jwt", "miss"}] != 1000 || len(before) != 2 {
		t.Fatalf("parsed %v", before)
	}
	distinct, _ := scenarioNamed(allScenarios(builtIn{}), "distinct")
	after := cacheCounts{{"jwt", "hit"}: 10, {"jwt", "miss"}: 1990}
	if err := checkCache(distinct, before, after, 1000); err != nil {
		t.Errorf("990 misses for 1000 distinct requests: %v", err)
	}
	after[cacheExpectation{"jwt", "hit"}] = 510
	after[cacheExpectation{"jwt", "miss"}] = 1500
	if err := checkCache(distinct, before, after, 1000); err == nil {
		t.Error("a distinct run answered half from the cache passed")
	}
	bare, _ := scenarioNamed(allScenarios(builtIn{}), "bare-jwt")
	if err := checkCache(bare, before, before, 1000); err != nil {
		t.Errorf("a bare run was checked: %v", err)
	}
}

func TestSummarize(t *testing.T) {
	s := summarize([]float64{0.95, 0.97, 0.96, 0.99, 0.90, 0.96, 0.97})
	if s.median != 0.96 || s.min != 0.90 || s.max != 0.99 {
		t.Errorf("summary %+v", s)
	}
	if s.tolerance != 0.02 {
		t.Errorf("tolerance %v, want the 2%% floor for a tight spread", s.tolerance)
	}
	wide := summarize([]float64{0.8, 1.2, 0.9, 1.1, 1.0, 0.7, 1.3})
	if wide.tolerance <= 0.1 {
		t.Errorf("tolerance %v for rounds spread from 0.7 to 1.3", wide.tolerance)
	}
}

// rounds makes quiet rounds in which each scenario ran at the rates given.
func rounds(rates ...map[string]float64) []round {
	var made []round
	for i, r := range rates {
		runs := map[string]runResult{}
		for name, rps := range r {
			runs[name] = runResult{rps: rps, requests: int(rps)}
		}
		made = append(made, round{number: i + 1, runs: runs, quiet: true})
	}
	return made
}

func TestReportFailsAboveBare(t *testing.T) {
	scenarios, _ := selectScenarios(allScenarios(builtIn{}), "jwt")
	opts := options{rounds: 3, maxRounds: 9, quietCPU: 0.1}
	fair := rounds(
		map[string]float64{"bare-opaque": 100, "bare-jwt": 90, "jwt": 88},
		map[string]float64{"bare-opaque": 102, "bare-jwt": 91, "jwt": 87},
		map[string]float64{"bare-opaque": 99, "bare-jwt": 89, "jwt": 86},
	)
	if err := report(scenarios, fair, opts, false); err != nil {
		t.Errorf("a fair run failed: %v", err)
	}
	faster := rounds(
		map[string]float64{"bare-opaque": 100, "bare-jwt": 90, "jwt": 99},
		map[string]float64{"bare-opaque": 102, "bare-jwt": 91, "jwt": 100},
		map[string]float64{"bare-opaque": 99, "bare-jwt": 89, "jwt": 97},
	)
	err := report(scenarios, faster, opts, false)
	if err == nil || !strings.Contains(err.Error(), "jwt / bare-jwt = 1.10") {
		t.Errorf("a module faster than bare Caddy passed: %v", err)
	}
	longerFaster := rounds(
		map[string]float64{"bare-opaque": 90, "bare-jwt": 100, "jwt": 90},
		map[string]float64{"bare-opaque": 91, "bare-jwt": 101, "jwt": 91},
		map[string]float64{"bare-opaque": 89, "bare-jwt": 99, "jwt": 89},
	)
	if err := report(scenarios, longerFaster, opts, false); err == nil {
		t.Error("a longer header answered faster than a shorter one passed")
	}
}

func TestSelectScenarios(t *testing.T) {
	names := func(scenarios []scenario) []string {
		var n []string
		for _, sc := range scenarios {
			n = append(n, sc.name)
		}
		return n
	}
	selected, err := selectScenarios(allScenarios(builtIn{floor: true, peer: true}), "distinct")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(selected), []string{"bare-opaque", "bare-jwt", "distinct", "floor", "peer-distinct"}; !slices.Equal(got, want) {
		t.Errorf("selected %v, want %v (the baselines of the baselines, the floor and the peer)", got, want)
	}
	if _, err := selectScenarios(allScenarios(builtIn{}), "peer-jwt"); err == nil {
		t.Error("a peer scenario was selected without the peer")
	}
	for _, sc := range allScenarios(builtIn{}) {
		if sc.peer != "" || sc.floor != "" {
			t.Errorf("%s is compared with a peer or a floor that is not there", sc.name)
		}
	}
}

func TestRotateStartsEachScenarioOnce(t *testing.T) {
	scenarios := allScenarios(builtIn{floor: true, peer: true})
	first := map[string]int{}
	for n := 1; n <= len(scenarios); n++ {
		order := rotate(scenarios, n)
		if len(order) != len(scenarios) {
			t.Fatalf("round %d runs %d scenarios", n, len(order))
		}
		first[order[0].name]++
	}
	for _, sc := range scenarios {
		if first[sc.name] != 1 {
			t.Errorf("%s went first %d times in %d rounds", sc.name, first[sc.name], len(scenarios))
		}
	}
}

// adaptedConfig is the load run's Caddyfile adapted to JSON, with the
// peer's server on port 2003 and the floor's on 2005.
func adaptedConfig(t *testing.T) []byte {
	t.Helper()
	var text strings.Builder
	config := caddyConfig{Admin: "off", BarePort: 2001, ClerkPort: 2002, MetricsPort: 2004, ManyPort: 2006,
		SecretKey: "sk_test_x", MachineSecretKey: "ak_x", ClerkURL: "http://127.0.0.1:9", ManyCacheBytes: 1 << 30}
	if err := caddyfileTemplate.Execute(&text, config); err != nil {
		t.Fatal(err)
	}
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text.String()), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, text.String())
	}
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	withSites, err := addServers(adapted, map[string]any{
		peerName:          jsonSite(2003, peerHandler(clerk.PublicKeyPEM())),
		string(floorSite): jsonSite(2005, floorHandler(clerk.PublicKeyPEM())),
	})
	if err != nil {
		t.Fatal(err)
	}
	return withSites
}

// TestOneSitePerRoute adapts the load run's Caddyfile and adds the peer
// and the floor: every route is a server of its own, on its own loopback
// port, with no matcher to pay for.
func TestOneSitePerRoute(t *testing.T) {
	adapted := adaptedConfig(t)
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
					Routes []struct {
						Match  []json.RawMessage `json:"match"`
						Handle []struct {
							Routes []struct {
								Match json.RawMessage `json:"match"`
							} `json:"routes"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	var listens []string
	for name, srv := range cfg.Apps.HTTP.Servers {
		listens = append(listens, srv.Listen...)
		if len(srv.Routes) != 1 || len(srv.Routes[0].Match) != 0 {
			t.Errorf("server %s: %d routes, the first with matchers %s", name, len(srv.Routes), srv.Routes[0].Match)
		}
		for _, h := range srv.Routes[0].Handle {
			for _, sub := range h.Routes {
				if len(sub.Match) != 0 {
					t.Errorf("server %s has a matcher %s", name, sub.Match)
				}
			}
		}
	}
	slices.Sort(listens)
	if want := []string{"127.0.0.1:2001", "127.0.0.1:2002", "127.0.0.1:2003", "127.0.0.1:2004", "127.0.0.1:2005", "127.0.0.1:2006"}; !slices.Equal(listens, want) {
		t.Errorf("listening on %v, want %v", listens, want)
	}
}

// TestWrkScript runs the load generator's script against a server that
// records what it receives: every request carries a line of the table, as
// a bearer token; every thread's share is sent; and the next offset is how
// far the furthest thread went.
func TestWrkScript(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk is not installed (apt-get install wrk)")
	}
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("Authorization")]++
		mu.Unlock()
	}))
	defer srv.Close()
	dir := t.TempDir()
	tokens := []string{"t0", "t1", "t2", "t3", "t4", "t5"}
	tablePath := filepath.Join(dir, "table.tokens")
	if err := os.WriteFile(tablePath, []byte(strings.Join(tokens, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())
	res, err := runWrk(dir, port, tablePath, 0, options{threads: 2, connections: 2, duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for header, n := range seen {
		total += n
		if !slices.Contains(tokens, strings.TrimPrefix(header, "Bearer ")) {
			t.Errorf("a request carried %q", header)
		}
	}
	for _, token := range tokens {
		if seen["Bearer "+token] == 0 {
			t.Errorf("%s was never sent", token)
		}
	}
	if res.nextOffset <= 0 || res.nextOffset > total {
		t.Errorf("next offset %d after %d requests", res.nextOffset, total)
	}
	if res.cpu <= 0 {
		t.Error("wrk's CPU time was not measured")
	}
}

// TestCPURatio: by CPU per request, a scenario keeps the share of its
// baseline's speed that its baseline's CPU time per request is of its own,
// whatever the throughputs.
func TestCPURatio(t *testing.T) {
	r := round{runs: map[string]runResult{
		"bare-jwt": {rps: 100, requests: 1000, caddyCPU: 60 * time.Millisecond},
		"jwt":      {rps: 120, requests: 500, caddyCPU: 40 * time.Millisecond},
	}}
	if got, ok := r.cpuRatio("jwt", "bare-jwt"); !ok || got != 0.75 {
		t.Errorf("cpuRatio = %v, %v; want 0.75 (60 µs a request over 80)", got, ok)
	}
	if _, ok := r.cpuRatio("jwt", "bare-opaque"); ok {
		t.Error("a ratio to a scenario that did not run")
	}
}

// TestFillPresentsEveryLineTwice fills a site standing in for Caddy's: each
// line of the table comes twice (a JWT's verdict is kept from its second
// use), as a bearer token, and the heap Caddy's
// metrics report after the admin API's collection, before and after, is
// shared out between the lines.
func TestFillPresentsEveryLineTwice(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	collections := 0
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen[r.Header.Get("Authorization")]++
	}))
	defer gateway.Close()
	caddy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case "/debug/pprof/heap":
			if r.URL.Query().Get("gc") == "1" {
				collections++
			}
		case "/metrics":
			fmt.Fprintf(w, "go_memstats_heap_alloc_bytes_total 1\ngo_memstats_heap_alloc_bytes %d\n", 1000+collections/2*3000)
		}
	}))
	defer caddy.Close()
	dir := t.TempDir()
	tokens := []string{"mt_0", "mt_1", "mt_2", "mt_3", "mt_4", "mt_5", "mt_6", "mt_7", "mt_8", "mt_9"}
	path := filepath.Join(dir, "callers.tokens")
	if err := os.WriteFile(path, []byte(strings.Join(tokens, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(gateway.URL)
	port, _ := strconv.Atoi(u.Port())
	env := &environment{tables: map[table]string{callersTable: path}, ports: map[site]int{manySite: port},
		admin: caddy.URL, metrics: caddy.URL + "/metrics"}
	many, _ := scenarioNamed(allScenarios(builtIn{}), "many-opaque")
	perVerdict, err := env.fill(many)
	if err != nil {
		t.Fatal(err)
	}
	if perVerdict != 300 {
		t.Errorf("%v bytes a verdict, want 300 (3000 over 10 lines)", perVerdict)
	}
	for _, token := range tokens {
		if seen["Bearer "+token] != 2 {
			t.Errorf("%s was presented %d times", token, seen["Bearer "+token])
		}
	}
	if collections != 2 {
		t.Errorf("%d collections, want one before and one after", collections)
	}
}
