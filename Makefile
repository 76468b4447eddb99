# Conveniences; the README's two commands need none of this.

.PHONY: test ci bench microbench

test:
	go test ./...

ci:
	bash .ci/run

# Load run against a real Caddy on loopback (needs wrk: apt-get install wrk).
bench:
	go run ./bench/loadtest

# Go benchmarks, each next to its floor (RSA verification, SHA-256, a
# pass-through handler) measured in the same run.
microbench:
	go test -run '^$$' -bench . -count 6 ./ ./verify/
