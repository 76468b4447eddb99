# Caddy with the clerk_m2m module, on Caddy's official images, built from
# this checkout:
#
#   docker build -t caddy-clerk-m2m .
#
# The result is Caddy's own image with the module built in: run it as
# Caddy's (https://hub.docker.com/_/caddy), with the CLERK_* variables.

ARG CADDY_VERSION=2.11

FROM caddy:${CADDY_VERSION}-builder AS builder
COPY . /src/clerk-m2m
# xcaddy asks the Go module proxy for the module before it applies the
# replacement by /src/clerk-m2m; when the proxy refuses (403), an empty
# proxy after it lets the replacement stand.
RUN GOPROXY="$(go env GOPROXY | cut -d, -f1)|file://$(mktemp -d)" \
	xcaddy build --with github.com/caddy-clerk/clerk-m2m=/src/clerk-m2m

FROM caddy:${CADDY_VERSION}
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
