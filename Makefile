# Conveniences; the README's two commands need none of this.

.PHONY: test ci bench microbench instructions

test:
	go test ./...

ci:
	bash .ci/run

# Load run against a real Caddy on loopback, built with the peer (caddy-jwt)
# when the Go module proxy serves it; needs wrk (apt-get install wrk) and a
# quiet machine. Not part of CI, which only compiles it and tests its parts.
bench:
	go run ./bench/loadtest

# Go benchmarks, each next to its floor (RSA verification, SHA-256, a
# pass-through handler) measured in the same run.
microbench:
	go test -run '^$$' -bench . -count 6 ./ ./verify/

# Instructions per request through the handler, counted by callgrind (needs
# valgrind): repeatable on a busy machine, where clocks are not.
instructions:
	go run ./bench/instructions
