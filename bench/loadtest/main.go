// Command loadtest measures what clerk_m2m costs a real Caddy: it builds
// Caddy with the module from this checkout, starts it on loopback against a
// fake Clerk, and drives it with wrk, comparing requests per second for
//
//   - bare:     a route that only responds (the baseline),
//   - jwt:      one M2M JWT presented again and again,
//   - distinct: M2M JWTs each presented once (no cache can help),
//   - opaque:   one opaque M2M token presented again and again,
//
// each as a ratio to a bare route receiving the very same requests. The
// machines this runs on are shared and noisy, so every scenario runs back to
// back with its baseline (which one goes first alternates between rounds),
// the ratio is taken within each pair, and the median over the rounds is
// reported. Every scenario sends its requests through the same wrk script, so
// the load generator costs the same in all of them.
//
//	go run ./bench/loadtest                 # or: make bench
//	go run ./bench/loadtest -rounds 9 -duration 5s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

func main() {
	opts := options{}
	flag.IntVar(&opts.rounds, "rounds", 7, "rounds of all scenarios, each next to its baseline")
	flag.DurationVar(&opts.duration, "duration", 4*time.Second, "length of one run of one scenario")
	flag.IntVar(&opts.connections, "connections", 32, "concurrent keep-alive connections")
	flag.IntVar(&opts.threads, "threads", runtime.NumCPU(), "wrk threads")
	flag.IntVar(&opts.distinct, "distinct", 30_000, "distinct JWTs to cycle through (more than the verified-JWT cache holds)")
	flag.StringVar(&opts.caddy, "caddy", "", "a Caddy binary with clerk_m2m (default: build ./cmd/caddy)")
	flag.Parse()
	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

type options struct {
	rounds, connections, threads, distinct int
	duration                               time.Duration
	caddy                                  string
}

// scenario is one kind of traffic: a path and the tokens to present.
type scenario struct {
	name, path, tokens string // tokens: a file with one token per line
	description        string
	// baseline names the bare scenario that sends the very same requests
	// to a route without clerk_m2m.
	baseline string
}

func run(opts options) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is needed: apt-get install wrk")
	}
	work, err := os.MkdirTemp("", "clerk-m2m-loadtest")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if opts.caddy == "" {
		opts.caddy = filepath.Join(work, "caddy")
		fmt.Println("building Caddy with clerk_m2m from this checkout ...")
		if out, err := exec.Command("go", "build", "-o", opts.caddy, "./cmd/caddy").CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	}

	clerk := backendtest.New()
	defer clerk.Close()
	gateway := clerk.NewMachine("gateway")
	caller := clerk.NewMachine("caller")
	granted := backendtest.TokenOptions{Scopes: []string{gateway.ID}, TTL: 2 * time.Hour}

	fmt.Printf("minting %d distinct JWTs ...\n", opts.distinct)
	scenarios, err := writeTokens(work, clerk, caller, granted, opts.distinct)
	if err != nil {
		return err
	}

	addr, err := freeAddr()
	if err != nil {
		return err
	}
	caddyfile := filepath.Join(work, "Caddyfile")
	if err := os.WriteFile(caddyfile, []byte(fmt.Sprintf(caddyfileTemplate, addr, clerk.SecretKey(), gateway.SecretKey, clerk.URL)), 0o600); err != nil {
		return err
	}
	stop, err := startCaddy(opts.caddy, caddyfile, addr)
	if err != nil {
		return err
	}
	defer stop()

	results := map[string]*measurements{}
	for _, sc := range scenarios {
		results[sc.name] = &measurements{}
	}
	for round := 1; round <= opts.rounds; round++ {
		for _, sc := range scenarios {
			if sc.baseline == sc.name {
				continue
			}
			pair := []scenario{byName(scenarios, sc.baseline), sc}
			if round%2 == 0 {
				pair[0], pair[1] = pair[1], pair[0]
			}
			rates := map[string]float64{}
			for _, run := range pair {
				rps, err := drive(work, addr, run, opts)
				if err != nil {
					return fmt.Errorf("round %d, %s: %v", round, run.name, err)
				}
				rates[run.name] = rps
				results[run.name].rates = append(results[run.name].rates, rps)
			}
			ratio := rates[sc.name] / rates[sc.baseline]
			results[sc.name].ratios = append(results[sc.name].ratios, ratio)
			fmt.Printf("round %d  %-9s %8.0f requests/s  %-9s %8.0f requests/s  ratio %.2f\n",
				round, sc.name, rates[sc.name], sc.baseline, rates[sc.baseline], ratio)
		}
	}
	report(scenarios, results, opts)
	if calls := clerk.Calls("/m2m_tokens/verify"); calls > 1+int(time.Duration(opts.rounds*2*(len(scenarios)-2))*opts.duration/(30*time.Second)) {
		return fmt.Errorf("the opaque token was verified with Clerk %d times", calls)
	}
	return nil
}

const caddyfileTemplate = `{
	admin off
	persist_config off
	grace_period 1s
	log {
		level ERROR
	}
}

http://%[1]s {
	handle /bare {
		respond "ok"
	}
	handle /m2m {
		clerk_m2m {
			secret_key %[2]s
			machine_secret_key %[3]s
			api_url %[4]s
		}
		respond "ok"
	}
}
`

// writeTokens mints the tokens each scenario presents and writes them to
// files for the wrk script.
func writeTokens(dir string, clerk *backendtest.Server, caller *backendtest.Machine,
	granted backendtest.TokenOptions, distinct int) ([]scenario, error) {
	jwt := clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: granted})
	opaque, _ := clerk.CreateM2MToken(caller, granted)
	many := mintConcurrently(distinct, func() string {
		return clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: granted})
	})
	files := map[string][]string{"jwt": {jwt}, "opaque": {opaque}, "distinct": many}
	for name, tokens := range files {
		if err := os.WriteFile(filepath.Join(dir, name+".tokens"), []byte(strings.Join(tokens, "\n")+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	return []scenario{
		{"bare", "/bare", filepath.Join(dir, "opaque.tokens"), "bare `respond`, short (opaque) token header", "bare"},
		{"bare-jwt", "/bare", filepath.Join(dir, "distinct.tokens"), "bare `respond`, JWT header", "bare-jwt"},
		{"jwt", "/m2m", filepath.Join(dir, "jwt.tokens"), "clerk_m2m, one M2M JWT repeated", "bare-jwt"},
		{"distinct", "/m2m", filepath.Join(dir, "distinct.tokens"), "clerk_m2m, distinct M2M JWTs (each verified)", "bare-jwt"},
		{"opaque", "/m2m", filepath.Join(dir, "opaque.tokens"), "clerk_m2m, one opaque token repeated", "bare"},
	}, nil
}

func mintConcurrently(n int, mint func() string) []string {
	tokens := make([]string, n)
	var wg sync.WaitGroup
	workers := runtime.NumCPU()
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				tokens[i] = mint()
			}
		})
	}
	wg.Wait()
	return tokens
}

// startCaddy runs the Caddy binary and waits until it answers.
func startCaddy(binary, caddyfile, addr string) (stop func(), err error) {
	cmd := exec.Command(binary, "run", "--config", caddyfile, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/bare")
		if err == nil {
			resp.Body.Close()
			// Let the signing keys, fetched when the config starts, arrive.
			time.Sleep(500 * time.Millisecond)
			return stop, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	return nil, errors.New("caddy did not start")
}

// wrkScript sends GET <path> with "Authorization: Bearer <token>", each wrk
// thread cycling through its own share of the tokens, so that with many
// tokens no token is presented twice while it could still be cached.
const wrkScript = `
local index = 0
function setup(thread)
	thread:set("thread_index", index)
	index = index + 1
end

function init(args)
	tokens = {}
	for line in io.lines("%[1]s") do
		if line ~= "" then tokens[#tokens + 1] = line end
	end
	share = math.floor(#tokens / %[2]d)
	first = 0
	if share < 1 then
		share = #tokens
	else
		first = thread_index * share
	end
	n = 0
end

function request()
	local token = tokens[first + (n %% share) + 1]
	n = n + 1
	return wrk.format("GET", "%[3]s", {["Authorization"] = "Bearer " .. token})
end
`

var (
	requestsPerSecond = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	errorLines        = regexp.MustCompile(`(Non-2xx or 3xx responses|Socket errors):.*`)
)

// drive runs wrk for one scenario and returns its requests per second. Any
// answer other than 2xx, or any socket error, spoils the measurement.
func drive(dir, addr string, sc scenario, opts options) (float64, error) {
	script := filepath.Join(dir, sc.name+".lua")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(wrkScript, sc.tokens, opts.threads, sc.path)), 0o600); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.duration+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "wrk",
		"-t", strconv.Itoa(opts.threads), "-c", strconv.Itoa(opts.connections),
		"-d", opts.duration.String(), "-s", script, "http://"+addr+"/").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	if bad := errorLines.Find(out); bad != nil {
		return 0, fmt.Errorf("wrk reports %s", bad)
	}
	match := requestsPerSecond.FindSubmatch(out)
	if match == nil {
		return 0, fmt.Errorf("no Requests/sec in wrk's output:\n%s", out)
	}
	return strconv.ParseFloat(string(match[1]), 64)
}

// measurements are one scenario's requests per second over all its runs
// and, for a module scenario, its ratio to its baseline in each round.
type measurements struct {
	rates, ratios []float64
}

func byName(scenarios []scenario, name string) scenario {
	for _, sc := range scenarios {
		if sc.name == name {
			return sc
		}
	}
	panic("no scenario " + name)
}

// report prints the median requests per second of each scenario and the
// median of its per-round ratios to the bare route receiving the same
// requests; the ratio of medians to the bare route with the shortest
// requests is given too, as the strictest (and noisiest) comparison.
func report(scenarios []scenario, results map[string]*measurements, opts options) {
	bare := median(results["bare"].rates)
	fmt.Printf("\n%d rounds, runs of %s, %d connections, %d wrk threads, %d CPUs shared by Caddy and wrk\n\n",
		opts.rounds, opts.duration, opts.connections, opts.threads, runtime.NumCPU())
	fmt.Println("| scenario | requests/s (median) | ratio to bare, same requests (median of rounds) | ratio to bare, short header |")
	fmt.Println("|---|---:|---:|---:|")
	for _, sc := range scenarios {
		m := results[sc.name]
		ratio := "1.00 (baseline)"
		if len(m.ratios) > 0 {
			ratio = fmt.Sprintf("%.2f (%.2f–%.2f)", median(m.ratios), slices.Min(m.ratios), slices.Max(m.ratios))
		}
		fmt.Printf("| %s | %.0f | %s | %.2f |\n", sc.description, median(m.rates), ratio, median(m.rates)/bare)
	}
}

func median(values []float64) float64 {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	return sorted[len(sorted)/2]
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
