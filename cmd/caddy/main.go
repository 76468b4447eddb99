// Command caddy is Caddy with its standard modules and clerk_m2m: what
// `xcaddy build --with github.com/caddy-clerk/clerk-m2m` produces, buildable
// with plain `go build ./cmd/caddy`.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-clerk/clerk-m2m"
)

func main() {
	caddycmd.Main()
}
