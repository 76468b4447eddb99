package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
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
			ratio = fmt.Sprintf("%.2f of %s", x, sc.baseline)
		}
		fmt.Printf("  %-13s %7.0f req/s  %-22s Caddy %5.1f µs/req  wrk %4.1f µs/req  other %.2f cores\n",
			sc.name, run.rps, ratio, perRequest(run.caddyCPU, run.requests), perRequest(run.wrkCPU, run.requests), run.otherCPU)
	}
}

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
	fmt.Println("| scenario | requests/s (median) | ratio to bare with the same header (median, min–max) | Caddy CPU per request (µs, median) |")
	fmt.Println("|---|---:|---:|---:|")
	var failures []string
	for _, sc := range scenarios {
		var rates, cpu []float64
		for _, r := range used {
			rates = append(rates, r.runs[sc.name].rps)
			cpu = append(cpu, perRequest(r.runs[sc.name].caddyCPU, r.runs[sc.name].requests))
		}
		ratio := "1.00 (baseline)"
		if ratios := ratiosOf(used, sc.name, sc.baseline); len(ratios) > 0 {
			s := summarize(ratios)
			ratio = s.String()
			if s.median > 1+s.tolerance {
				failures = append(failures, fmt.Sprintf("%s / %s = %.2f, above 1 by more than its noise (%.2f)",
					sc.name, sc.baseline, s.median, s.tolerance))
			}
		} else if sc.baseline != "" {
			ratio = "(no baseline run)"
		}
		fmt.Printf("| %s | %.0f | %s | %.1f |\n", sc.description, median(rates), ratio, median(cpu))
	}
	printPeerComparison(scenarios, used, peerMissing, opts.peer)
	if len(failures) > 0 {
		return fmt.Errorf("\n*** THE HARNESS IS NOT FAIR: a ratio exceeds the physical limit (bare Caddy):\n  %s",
			strings.Join(failures, "\n  "))
	}
	return nil
}

func printPeerComparison(scenarios []scenario, used []round, peerMissing bool, peer string) {
	fmt.Println()
	if peerMissing {
		fmt.Printf("The peer (%s) could not be built: the module is not compared with it.\n", peer)
		return
	}
	printed := false
	for _, sc := range scenarios {
		if ratios := ratiosOf(used, sc.name, sc.peer); len(ratios) > 0 {
			if !printed {
				fmt.Println("| this module over the peer, same traffic | requests/s ratio (median, min–max) |")
				fmt.Println("|---|---:|")
				printed = true
			}
			fmt.Printf("| %s | %s× |\n", sc.description, summarize(ratios))
		}
	}
}

// ratiosOf is a's rate over b's in each round that ran both.
func ratiosOf(rounds []round, a, b string) []float64 {
	var ratios []float64
	for _, r := range rounds {
		if x, ok := r.ratio(a, b); ok {
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
