package clerkm2m

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func init() {
	// Right before reverse_proxy: the token goes on the request that is
	// forwarded, after any request_header that would remove Authorization.
	registerDirective[MintHandler]("clerk_m2m_token", httpcaddyfile.Before, "reverse_proxy")
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	clerk_m2m_token [<matcher>] {
//	    machine_secret_key <ak_…>
//	    api_url            <url>
//	    format             opaque|jwt
//	    ttl                <duration>
//	    min_remaining_ttl  <duration>
//	    renew_at           <share of the lifetime: 0.5 or 50%>
//	    header             <name>
//	    timeout            <duration>
//	    claims {
//	        <name> <value>
//	        ...
//	    }
//	    disable_metrics
//	}
//
// Every subdirective is optional; without a block, the key comes from
// CLERK_MACHINE_SECRET_KEY and the Backend API from CLERK_API_URL.
func (h *MintHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return mintSubdirectives.unmarshal(d, h)
}

// mintSubdirectives are clerk_m2m_token's, in the order its syntax lists
// them.
var mintSubdirectives = block[MintHandler]{
	textArg("machine_secret_key", func(h *MintHandler) *string { return &h.MachineSecretKey }),
	textArg("api_url", func(h *MintHandler) *string { return &h.APIURL }),
	textArg("format", func(h *MintHandler) *string { return &h.Format }),
	optionalDurationArg("ttl", func(h *MintHandler) **caddy.Duration { return &h.TTL }),
	durationArg("min_remaining_ttl", func(h *MintHandler) *caddy.Duration { return &h.MinRemainingTTL }),
	{"renew_at", func(d *caddyfile.Dispenser, h *MintHandler) error { return shareArg(d, &h.RenewAt) }},
	textArg("header", func(h *MintHandler) *string { return &h.Header }),
	optionalDurationArg("timeout", func(h *MintHandler) **caddy.Duration { return &h.Timeout }),
	{"claims", func(d *caddyfile.Dispenser, h *MintHandler) error { return claimsBlock(d, &h.Claims) }},
	flagArg("disable_metrics", func(h *MintHandler) *bool { return &h.DisableMetrics }),
}

// shareArg reads a share: a fraction (0.5) or a percentage (50%).
func shareArg(d *caddyfile.Dispenser, dest *float64) error {
	var text string
	if err := singleArg(d, &text); err != nil {
		return err
	}
	number, percent := strings.CutSuffix(text, "%")
	share, err := strconv.ParseFloat(number, 64)
	if err != nil {
		return d.Errf("renew_at: %q is neither a fraction (0.5) nor a percentage (50%%)", text)
	}
	if percent {
		share /= 100
	}
	if !isShare(share) { // refused here: 0 would otherwise mean the default
		return d.Errf("renew_at: %q is not a share of the lifetime above 0 and at most 1 (or 100%%)", text)
	}
	*dest = share
	return nil
}

// claimsBlock reads a block of "<name> <value>" lines.
func claimsBlock(d *caddyfile.Dispenser, dest *map[string]string) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	*dest = make(map[string]string)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		var value string
		if err := singleArg(d, &value); err != nil {
			return err
		}
		if _, dup := (*dest)[name]; dup {
			return d.Errf("claim %s given twice", name)
		}
		(*dest)[name] = value
	}
	if len(*dest) == 0 {
		return d.Err("claims: the block names no claim")
	}
	return nil
}
