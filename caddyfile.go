package clerkm2m

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("clerk_m2m", parseCaddyfile)
	// Before basic_auth, like the other authentication directives: after
	// rewrites, and before request_header, so that it can use the identity
	// placeholders, and before the handlers that serve the request.
	httpcaddyfile.RegisterDirectiveOrder("clerk_m2m", httpcaddyfile.Before, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	clerk_m2m [<matcher>] {
//	    secret_key         <sk_…>
//	    machine_secret_key <ak_…>
//	    jwt_key            <PEM text or file>
//	    api_url            <url>
//	    publishable_key    <pk_…>
//	    accept             <type> [<type>…]
//	    require_scopes     <scope> [<scope>…]
//	    allowed_subjects   <id> [<id>…]
//	    authorized_parties <origin> [<origin>…]
//	    audience           <aud> [<aud>…]
//	    issuer             <iss> [<iss>…]
//	    optional
//	    strip_authorization
//	    disable_metrics
//	    timeout            <duration>
//	    clock_skew         <duration>
//	    cache_ttl          <duration>
//	    jwks_max_stale     <duration>
//	}
//
// Every subdirective is optional; without a block, the keys come from the
// CLERK_SECRET_KEY, CLERK_MACHINE_SECRET_KEY, CLERK_JWT_KEY,
// CLERK_PUBLISHABLE_KEY and CLERK_API_URL environment variables. Keys, URLs
// and lists may be placeholders such as {env.NAME} or {file.path}, expanded
// when the configuration loads.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalBlock(d, h.unmarshalSubdirective)
}

// unmarshalBlock reads a directive that takes no argument on its line, only
// a block of subdirectives, each given at most once, handing each to read.
func unmarshalBlock(d *caddyfile.Dispenser, read func(d *caddyfile.Dispenser, name string) error) error {
	d.Next() // the directive's name
	directive := d.Val()
	if d.NextArg() {
		return d.Errf("%s takes no arguments on its line, only a block of subdirectives; got %q", directive, d.Val())
	}
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		name := d.Val()
		if seen[name] {
			return d.Errf("subdirective %s given twice", name)
		}
		seen[name] = true
		if err := read(d, name); err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) unmarshalSubdirective(d *caddyfile.Dispenser, name string) error {
	switch name {
	case "secret_key":
		return singleArg(d, &h.SecretKey)
	case "machine_secret_key":
		return singleArg(d, &h.MachineSecretKey)
	case "jwt_key":
		return singleArg(d, &h.JWTKey)
	case "api_url":
		return singleArg(d, &h.APIURL)
	case "publishable_key":
		return singleArg(d, &h.PublishableKey)
	case "accept":
		return listArgs(d, &h.Accept)
	case "require_scopes":
		return listArgs(d, &h.RequireScopes)
	case "allowed_subjects":
		return listArgs(d, &h.AllowedSubjects)
	case "authorized_parties":
		return listArgs(d, &h.AuthorizedParties)
	case "audience":
		return listArgs(d, &h.Audience)
	case "issuer":
		return listArgs(d, &h.Issuer)
	case "optional":
		return flagArg(d, &h.Optional)
	case "strip_authorization":
		return flagArg(d, &h.StripAuthorization)
	case "disable_metrics":
		return flagArg(d, &h.DisableMetrics)
	case "timeout":
		return durationArg(d, name, &h.Timeout)
	case "clock_skew":
		h.ClockSkew = new(caddy.Duration)
		return durationArg(d, name, h.ClockSkew)
	case "cache_ttl":
		h.CacheTTL = new(caddy.Duration)
		return durationArg(d, name, h.CacheTTL)
	case "jwks_max_stale":
		return durationArg(d, name, &h.JWKSMaxStale)
	default:
		return d.Errf("unknown subdirective %q in clerk_m2m (known: secret_key, machine_secret_key, jwt_key, "+
			"api_url, publishable_key, accept, require_scopes, allowed_subjects, authorized_parties, audience, issuer, "+
			"optional, strip_authorization, disable_metrics, timeout, clock_skew, cache_ttl, jwks_max_stale)", name)
	}
}

// singleArg reads the one argument of a subdirective.
func singleArg(d *caddyfile.Dispenser, dest *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dest = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// flagArg reads a subdirective that takes no argument.
func flagArg(d *caddyfile.Dispenser, dest *bool) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	*dest = true
	return nil
}

// listArgs reads the one or more arguments of a subdirective.
func listArgs(d *caddyfile.Dispenser, dest *[]string) error {
	*dest = d.RemainingArgs()
	if len(*dest) == 0 {
		return d.ArgErr()
	}
	return nil
}

func durationArg(d *caddyfile.Dispenser, name string, dest *caddy.Duration) error {
	var text string
	if err := singleArg(d, &text); err != nil {
		return err
	}
	value, err := caddy.ParseDuration(text)
	if err != nil {
		return d.Errf("%s: %v", name, err)
	}
	*dest = caddy.Duration(value)
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
