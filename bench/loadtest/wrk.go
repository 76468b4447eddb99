package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// wrkScript sends GET / with "Authorization: Bearer <line>", the lines
// coming from a table. Every thread formats its share of the table once, in
// init, and then cycles through it, so that per request the load generator
// only picks the next string, the same way in every scenario; and, with
// distinct tokens, no token comes back while it could still be cached. A
// run starts where the scenario's last run stopped: done prints how far the
// furthest thread went, and the next run gets it as its argument, so that
// neither short runs nor a thread that started late present tokens again
// that could still be cached; done prints the latencies' median and 99th
// percentile too, in microseconds.
// wrk runs the init of one thread while the threads before it already
// send, so what init costs is the same in every scenario too: every table
// has the same number of lines.
const wrkScript = `
local threads = {}
function setup(thread)
	thread:set("share_index", #threads)
	threads[#threads + 1] = thread
end

function init(args)
	local lines = {}
	for line in io.lines(%[1]q) do
		if line ~= "" then lines[#lines + 1] = line end
	end
	local share = math.floor(#lines / %[2]d)
	requests = {}
	for i = share_index * share + 1, (share_index + 1) * share do
		requests[#requests + 1] = wrk.format("GET", "/", {["Authorization"] = "Bearer " .. lines[i]})
	end
	count = #requests
	n = tonumber(args[1])
end

function request()
	n = n + 1
	return requests[n %% count + 1]
end

function done(summary, latency, requests)
	local furthest = 0
	for _, thread in ipairs(threads) do
		furthest = math.max(furthest, thread:get("n"))
	end
	io.write(string.format("next offset %%d\n", furthest))
	io.write(string.format("latency p50 %%d p99 %%d\n", latency:percentile(50), latency:percentile(99)))
end
`

// wrkResult is what one run of wrk measured.
type wrkResult struct {
	rps        float64
	requests   int
	nextOffset int           // where the next run of the scenario starts
	cpu        time.Duration // wrk's own CPU time
	p50, p99   time.Duration // the requests' latency: median, 99th percentile
}

var (
	requestsPerSecond = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	requestsDone      = regexp.MustCompile(`(\d+) requests in `)
	nextOffset        = regexp.MustCompile(`next offset (\d+)`)
	latencies         = regexp.MustCompile(`latency p50 (\d+) p99 (\d+)`)
	errorLines        = regexp.MustCompile(`(Non-2xx or 3xx responses|Socket errors):.*`)
)

// runWrk drives port with the table's requests for the run's duration. Any
// answer other than 2xx, or any socket error, spoils the measurement.
func runWrk(dir string, port int, tablePath string, offset int, opts options) (wrkResult, error) {
	script := filepath.Join(dir, filepath.Base(tablePath)+".lua")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(wrkScript, tablePath, opts.threads)), 0o600); err != nil {
		return wrkResult{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.duration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk",
		"-t", strconv.Itoa(opts.threads), "-c", strconv.Itoa(opts.connections),
		"-d", opts.duration.String(), "-s", script, fmt.Sprintf("http://127.0.0.1:%d/", port),
		"--", strconv.Itoa(offset))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	res, err := parseWrk(out)
	res.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return res, err
}

func parseWrk(out []byte) (wrkResult, error) {
	if bad := errorLines.Find(out); bad != nil {
		return wrkResult{}, fmt.Errorf("wrk reports %s", bad)
	}
	rps := requestsPerSecond.FindSubmatch(out)
	done := requestsDone.FindSubmatch(out)
	offset := nextOffset.FindSubmatch(out)
	latency := latencies.FindSubmatch(out)
	if rps == nil || done == nil || offset == nil || latency == nil {
		return wrkResult{}, fmt.Errorf("no request count, rate, next offset or latencies in wrk's output:\n%s", out)
	}
	var res wrkResult
	var err error
	if res.rps, err = strconv.ParseFloat(string(rps[1]), 64); err != nil {
		return res, err
	}
	if res.requests, err = strconv.Atoi(string(done[1])); err != nil {
		return res, err
	}
	if res.nextOffset, err = strconv.Atoi(string(offset[1])); err != nil {
		return res, err
	}
	p50, _ := strconv.Atoi(string(latency[1])) // digits, as matched
	p99, _ := strconv.Atoi(string(latency[2]))
	res.p50, res.p99 = time.Duration(p50)*time.Microsecond, time.Duration(p99)*time.Microsecond
	return res, nil
}
