// Command caddy is Caddy as a fleet on Redis builds it, what
//
//	xcaddy build --with github.com/caddy-clerk/clerk-m2m \
//		--with github.com/pberkel/caddy-storage-redis@v1.8.1 \
//		--with github.com/mholt/caddy-ratelimit@v0.1.0
//
// produces: the standard modules, clerk_m2m, the Redis storage and the
// rate limiter. The tests of this module build and run it.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-clerk/clerk-m2m"
	_ "github.com/mholt/caddy-ratelimit"
	_ "github.com/pberkel/caddy-storage-redis"
)

func main() {
	caddycmd.Main()
}
