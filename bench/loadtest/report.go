package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// round is one run of every scenario.
type round struct {
	number int
	runs   map[string]runResult
	quiet  bool
}

// otherCPU is the most CPU other processes took during any run of the
// round, in cores.
func (r round) otherCPU() float64 {
	most := 0.0
	for _, run := range r.runs {
		most = max(most, run.otherCPU)
	}
	return most
}

// ratio is a's requests per second over b's in this round.
func (r round) ratio(a, b string) (float64, bool) {
	ra, okA := r.runs[a]
	rb, okB := r.runs[b]
	if !okA || !okB || rb.rps == 0 {
		return 0, false
	}
	return ra.rps / rb.rps, true
}

// cpuRatio is b's Caddy CPU time per request over a's in this round: how
// much of b's speed a keeps, by CPU per request rather than throughput
// (which swings more from one run to the next, with whatever else the
// machine does).
func (r round) cpuRatio(a, b string) (float64, bool) {
	ra, okA := r.runs[a]
	rb, okB := r.runs[b]
	if !okA || !okB || ra.requests == 0 || rb.requests == 0 || ra.caddyCPU == 0 {
		return 0, false
	}
	return perRequest(rb.caddyCPU, rb.requests) / perRequest(ra.caddyCPU, ra.requests), true
}

func printRound(r round, scenarios []scenario) {
	state := "NOT QUIET, to be run again"
	if r.quiet {
		state = "quiet"
	}
	fmt.Printf("round %d: %s (other processes took at most %.2f cores)\n", r.number, state, r.otherCPU())
	for _, sc := range scenarios {
		run := r.runs[sc.name]
		ratio := ""
		if x, ok := r.ratio(sc.name, sc.baseline); ok {
			byCPU, _ := r.cpuRatio(sc.name, sc.baseline)
			ratio = fmt.Sprintf("%.2f (CPU %.2f) of %s", x, byCPU, sc.baseline)
		}
		fmt.Printf("  %-13s %7.0f req/s  %-32s Caddy %5.1f µs/req  p50 %5.2f ms  p99 %5.2f ms  wrk %4.1f µs/req  other %.2f cores\n",
			sc.name, run.rps, ratio, perRequest(run.caddyCPU, run.requests), milliseconds(run.p50), milliseconds(run.p99),
			perRequest(run.wrkCPU, run.requests), run.otherCPU)
	}
}

func milliseconds(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// spread is the median of a set of per-round figures and their range.
type spread struct {
	median, min, max float64
	n                int
	tolerance        float64 // how far the median may lie from the truth by chance
}

func summarize(values []float64) spread {
	s := spread{median: median(values), min: slices.Min(values), max: slices.Max(values), n: len(values)}
	deviations := make([]float64, len(values))
	for i, v := range values {
		deviations[i] = math.Abs(v - s.median)
	}
	// Twice the standard error of a median of n rounds, from their spread
	// (1.4826 × the median absolute deviation estimates a standard deviation
	// robustly; a median's standard error is about 1.2533 σ/√n), and never
	// under 2%.
	sigma := 1.4826 * median(deviations)
	s.tolerance = max(0.02, 2*1.2533*sigma/math.Sqrt(float64(len(values))))
	return s
}

func (s spread) String() string {
	return fmt.Sprintf("%.2f (%.2f–%.2f)", s.median, s.min, s.max)
}

// described is the median and range of values; empty for none.
func described(values []float64) string {
	if len(values) == 0 {
		return ""
	}
	return summarize(values).String()
}

// report prints the medians over the quiet rounds, and fails when a ratio
// to bare Caddy exceeds 1 by more than its noise: no handler makes Caddy
// faster than answering at once, so such a figure is the harness's doing.
func report(scenarios []scenario, rounds []round, opts options, peerMissing bool) error {
	used := slices.DeleteFunc(slices.Clone(rounds), func(r round) bool { return !r.quiet })
	switch {
	case len(used) == 0:
		fmt.Printf("\n*** No round was quiet (other processes under %.2f cores): the figures below come from noisy rounds.\n", opts.quietCPU)
		used = rounds
	case len(used) < opts.rounds:
		fmt.Printf("\n*** Only %d of %d rounds were quiet within %d: the figures below come from those.\n", len(used), opts.rounds, opts.maxRounds)
	}
	fmt.Printf("\nMedians of %d rounds (of %d run), each scenario for %s, %d connections, %d wrk threads, %d CPUs shared by Caddy and wrk; load average %s\n\n",
		len(used), len(rounds), opts.duration, opts.connections, opts.threads, runtime.NumCPU(), loadAverage())
	fmt.Println("| scenario | requests/s | of its baseline (bare, same header) | Caddy CPU µs/request | of its baseline, by CPU per request | latency p50 / p99 (ms) | its baseline's p50 / p99 |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	var failures []string
	for _, sc := range scenarios {
		var rates, cpu, p50, p99 []float64
		for _, r := range used {
			run := r.runs[sc.name]
			rates = append(rates, run.rps)
			cpu = append(cpu, perRequest(run.caddyCPU, run.requests))
			p50, p99 = append(p50, milliseconds(run.p50)), append(p99, milliseconds(run.p99))
		}
		ratio, byCPU, baseLatency := "1.00 (baseline)", "1.00 (baseline)", ""
		if ratios := ratiosOf(used, sc.name, sc.baseline, round.ratio); len(ratios) > 0 {
			s := summarize(ratios)
			ratio = s.String()
			if s.median > 1+s.tolerance {
				failures = append(failures, fmt.Sprintf("%s / %s = %.2f, above 1 by more than its noise (%.2f)",
					sc.name, sc.baseline, s.median, s.tolerance))
			}
			byCPU = described(ratiosOf(used, sc.name, sc.baseline, round.cpuRatio))
			baseLatency = latencyOf(used, sc.baseline)
		} else if sc.baseline != "" {
			ratio, byCPU = "(no baseline run)", ""
		}
		fmt.Printf("| %s | %.0f | %s | %.1f | %s | %.2f / %.2f | %s |\n",
			sc.description, median(rates), ratio, median(cpu), byCPU, median(p50), median(p99), baseLatency)
	}
	printComparisons(scenarios, used, peerMissing, opts.peer)
	if len(failures) > 0 {
		return fmt.Errorf("\n*** THE HARNESS IS NOT FAIR: a ratio exceeds the physical limit (bare Caddy):\n  %s",
			strings.Join(failures, "\n  "))
	}
	return nil
}

// latencyOf is a scenario's median p50 and p99 over the rounds, in ms.
func latencyOf(rounds []round, name string) string {
	var p50, p99 []float64
	for _, r := range rounds {
		if run, ok := r.runs[name]; ok {
			p50, p99 = append(p50, milliseconds(run.p50)), append(p99, milliseconds(run.p99))
		}
	}
	return fmt.Sprintf("%.2f / %.2f", median(p50), median(p99))
}

// printComparisons compares the module's scenarios with the floor's and
// the peer's with the same traffic, by throughput and by CPU per request.
func printComparisons(scenarios []scenario, used []round, peerMissing bool, peer string) {
	fmt.Println()
	if peerMissing {
		fmt.Printf("The peer (%s) could not be built: the module is not compared with it.\n\n", peer)
	}
	printed := false
	for _, sc := range scenarios {
		for _, other := range []struct{ name, what string }{{sc.floor, "of the floor"}, {sc.peer, "over the peer"}} {
			ratios := ratiosOf(used, sc.name, other.name, round.ratio)
			if len(ratios) == 0 {
				continue
			}
			if !printed {
				fmt.Println("| this module, same traffic | requests/s ratio (median, min–max) | by CPU per request |")
				fmt.Println("|---|---:|---:|")
				printed = true
			}
			fmt.Printf("| %s, %s | %s | %s |\n", sc.description, other.what, described(ratios),
				described(ratiosOf(used, sc.name, other.name, round.cpuRatio)))
		}
	}
}

// ratiosOf is a ratio of a to b (round.ratio or round.cpuRatio) in each
// round that ran both.
func ratiosOf(rounds []round, a, b string, ratio func(round, string, string) (float64, bool)) []float64 {
	var ratios []float64
	for _, r := range rounds {
		if x, ok := ratio(r, a, b); ok {
			ratios = append(ratios, x)
		}
	}
	return ratios
}

func median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	if n := len(sorted); n%2 == 0 {
		return (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return sorted[len(sorted)/2]
}

func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(data))[:3], " ")
}

// printHeap reports what Caddy's live heap grew by, per verdict, when the
// many-callers site was filled.
func printHeap(scenarios []scenario, heap map[string]float64, opts options) {
	if len(heap) == 0 {
		return
	}
	fmt.Printf("\nMany callers: %d of each, a cache of %d bytes (cache_max_bytes) that kept them all. Caddy's live heap per verdict cached:\n\n", opts.tableSize, opts.manyCacheBytes)
	for _, sc := range scenarios {
		if per, ok := heap[sc.name]; ok {
			fmt.Printf("- %s: %.0f bytes\n", sc.description, per)
		}
	}
}
