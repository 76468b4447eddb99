// Command loadtest measures what clerk_m2m costs a real Caddy, from the
// outside: it builds a Caddy with the module from this checkout (and, as a
// peer, ggicci/caddy-jwt), starts it on loopback against a fake Clerk, drives
// it with wrk, and reports each scenario as a ratio to bare Caddy answering
// requests with the same headers, by throughput and by Caddy's CPU time per
// request, with the latencies beside bare Caddy's.
//
// Beside bare Caddy, the same Caddy has the floor of a JWT never seen
// before (package floor: the signature check no verifier can skip, and
// nothing else), fed the same distinct JWTs, so that what the module costs
// beyond it shows; and a site whose cache keeps many callers' verdicts
// (-table distinct JWTs and as many distinct opaque tokens, all presented
// twice before the runs), for a gateway in front of a large fleet, with the
// live heap each verdict holds.
//
// A ratio above 1 (faster than bare Caddy) is physically impossible, so it
// betrays the harness; the run fails when a median ratio exceeds 1 by more
// than its noise. What keeps the comparison fair:
//   - The load generator does the same work per request in every scenario:
//     each reads its requests from a table of the same size, formatted once
//     before the run, and picks the next one per request the same way (a
//     token repeated is a table holding it N times).
//   - Every baseline carries an Authorization header of the same length as
//     the scenarios compared with it.
//   - Every route is a site of its own, on its own port, so that no route
//     pays for another's matchers.
//   - Rounds interleave all scenarios, in an order that rotates from round to
//     round, and each ratio is taken within a round.
//   - The CPU other processes used during each run is reported beside it
//     (/proc/stat less Caddy, wrk and this program); only quiet rounds are
//     summarised, and noisy rounds are run again, up to -max-rounds.
//   - Each scenario is checked to hit or miss the verified-credential cache
//     as it claims to (from the module's metrics).
//
// Usage:
//
//	go run ./bench/loadtest                 # or: make bench
//	go run ./bench/loadtest -rounds 9 -duration 5s
//	go run ./bench/loadtest -only jwt,distinct -profile /tmp/prof
//	go run ./bench/loadtest -peer-source /path/to/caddy-jwt
//	go run ./bench/loadtest -checkout /path/to/another/checkout   # a before → after comparison
//
// The peer is fetched from the Go module proxy; where the proxy refuses it,
// -peer-source names a directory holding its source (a Go module declaring
// the peer's path), which the build module takes in its place through a
// replace directive. The peer is configured in Caddy's JSON (handler
// "authentication", provider "jwt"), so a copy without its Caddyfile
// directive serves as well.
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

func main() {
	opts := options{}
	flag.IntVar(&opts.rounds, "rounds", 7, "quiet rounds to measure; each runs every scenario once")
	flag.IntVar(&opts.maxRounds, "max-rounds", 0, "rounds to run at most, noisy ones included (default: 3 × -rounds)")
	flag.DurationVar(&opts.duration, "duration", 4*time.Second, "length of one run of one scenario")
	flag.IntVar(&opts.connections, "connections", 32, "concurrent keep-alive connections")
	flag.IntVar(&opts.threads, "threads", runtime.NumCPU(), "wrk threads")
	flag.IntVar(&opts.tableSize, "table", 100_000, "requests in every scenario's table: distinct JWTs to cycle through, far more than the verified-JWT cache keeps and than its admission remembers, so that each pass through them is new; the many callers")
	flag.Int64Var(&opts.manyCacheBytes, "many-cache", 1<<30, "cache_max_bytes of the many-callers site: enough to keep every caller's verdict")
	flag.Float64Var(&opts.quietCPU, "quiet", 0.10, "most CPU (in cores) other processes may use during a run of a quiet round")
	flag.StringVar(&opts.caddy, "caddy", "", "a Caddy binary with clerk_m2m (default: build one, with the floor and the peer)")
	flag.StringVar(&opts.checkout, "checkout", "", "the checkout of clerk_m2m to build Caddy with (default: this one)")
	flag.StringVar(&opts.peer, "peer", "github.com/ggicci/caddy-jwt@v1.1.1", `the peer module built into the same Caddy ("" for none)`)
	flag.StringVar(&opts.peerSource, "peer-source", "", "a directory holding the peer's source, built in its place (for when the Go module proxy does not serve it)")
	flag.StringVar(&opts.only, "only", "", "comma-separated scenarios to run (their baselines are added)")
	flag.StringVar(&opts.profile, "profile", "", "a directory for a CPU profile of Caddy during every run (profiling costs Caddy a few percent)")
	flag.Parse()
	if opts.maxRounds == 0 {
		opts.maxRounds = 3 * opts.rounds
	}
	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

type options struct {
	rounds, maxRounds, connections, threads, tableSize int
	manyCacheBytes                                     int64
	duration                                           time.Duration
	quietCPU                                           float64
	caddy, checkout, peer, peerSource, only, profile   string
}

func run(opts options) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is needed: apt-get install wrk")
	}
	if (opts.peerSource != "" || opts.checkout != "") && opts.caddy != "" {
		return errors.New("-peer-source and -checkout are for the Caddy the run builds: leave out -caddy")
	}
	if opts.tableSize < opts.threads {
		return fmt.Errorf("-table %d is smaller than -threads %d", opts.tableSize, opts.threads)
	}
	work, err := os.MkdirTemp("", "clerk-m2m-loadtest")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	if opts.caddy == "" {
		fmt.Printf("building Caddy with clerk_m2m from %s ...\n", cmp.Or(opts.checkout, "this checkout"))
		if opts.caddy, err = buildCaddy(work, opts.checkout, opts.peer, opts.peerSource); err != nil {
			return err
		}
	}
	with, err := builtInto(opts.caddy)
	if err != nil {
		return err
	}
	if !with.floor {
		fmt.Printf("\n*** The floor (%s) is not in this Caddy: its scenario is left out.\n\n", floorModule)
	}
	peerMissing := opts.peer != "" && !with.peer
	if peerMissing {
		fmt.Printf("\n*** The peer (%s) is not in this Caddy: its scenarios are left out.\n\n", opts.peer)
	}

	env, err := startEnvironment(work, opts, with)
	if err != nil {
		return err
	}
	defer env.stop()

	scenarios, err := selectScenarios(allScenarios(with), opts.only)
	if err != nil {
		return err
	}
	heap := map[string]float64{}
	for _, sc := range scenarios {
		if sc.filled {
			fmt.Printf("presenting every line of the %s table to the %s site twice ...\n", sc.table, sc.site)
			if heap[sc.name], err = env.fill(sc); err != nil {
				return err
			}
		}
	}
	env.startRuns()
	fmt.Println("warming up ...")
	warmUp := opts
	warmUp.duration = time.Second
	for _, sc := range scenarios {
		if _, err := env.measure(sc, warmUp, ""); err != nil {
			return fmt.Errorf("warm-up, %s: %v", sc.name, err)
		}
	}

	var rounds []round
	quiet := 0
	for n := 1; quiet < opts.rounds && n <= opts.maxRounds; n++ {
		r := round{number: n, runs: map[string]runResult{}}
		for _, sc := range rotate(scenarios, n) {
			res, err := env.measure(sc, opts, profilePath(opts.profile, sc.name, n))
			if err != nil {
				return fmt.Errorf("round %d, %s: %v", n, sc.name, err)
			}
			r.runs[sc.name] = res
		}
		r.quiet = r.otherCPU() <= opts.quietCPU
		if r.quiet {
			quiet++
		}
		printRound(r, scenarios)
		rounds = append(rounds, r)
	}
	if err := env.checkOpaqueCalls(); err != nil {
		return err
	}
	if err := report(scenarios, rounds, opts, peerMissing); err != nil {
		return err
	}
	printHeap(scenarios, heap, opts)
	return nil
}

// rotate returns the scenarios in the order of round n: each round starts
// one scenario further, so that none always runs first, or always after
// the same one.
func rotate(scenarios []scenario, n int) []scenario {
	k := n % len(scenarios)
	return append(append([]scenario{}, scenarios[k:]...), scenarios[:k]...)
}

// selectScenarios keeps the scenarios named in only (comma-separated; all
// when empty) and those they are compared with, and theirs.
func selectScenarios(all []scenario, only string) ([]scenario, error) {
	if only == "" {
		return all, nil
	}
	wanted := map[string]bool{}
	pending := strings.Split(only, ",")
	for len(pending) > 0 {
		name := strings.TrimSpace(pending[0])
		pending = pending[1:]
		sc, ok := scenarioNamed(all, name)
		if !ok {
			return nil, fmt.Errorf("-only: no scenario %q", name)
		}
		if !wanted[name] {
			wanted[name] = true
			pending = append(pending, sc.comparedWith()...)
		}
	}
	var selected []scenario
	for _, sc := range all {
		if wanted[sc.name] {
			selected = append(selected, sc)
		}
	}
	return selected, nil
}

func profilePath(dir, scenario string, round int) string {
	if dir == "" {
		return ""
	}
	return fmt.Sprintf("%s/%s.%d.pprof", dir, scenario, round)
}
