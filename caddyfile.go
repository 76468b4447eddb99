package clerkm2m

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func init() {
	// Before basic_auth, like the other authentication directives: after
	// rewrites, and before request_header, so that it can use the identity
	// placeholders, and before the handlers that serve the request.
	registerDirective[Handler]("clerk_m2m", httpcaddyfile.Before, "basic_auth")
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
//	    protected_resource <uri> {
//	        authorization_servers  <url> [<url>…]
//	        scopes_supported       <scope> [<scope>…]
//	        resource_name          <name>
//	        resource_documentation <url>
//	    }
//	    optional
//	    strip_authorization
//	    disable_metrics
//	    timeout            <duration>
//	    clock_skew         <duration>
//	    cache_ttl          <duration>
//	    jwks_max_stale     <duration>
//	    max_clerk_calls    <n>
//	    max_clerk_rate     <n>
//	    cache_max_bytes    <size>
//	    shared_cache
//	}
//
// Every subdirective is optional; without a block, the keys come from the
// CLERK_SECRET_KEY, CLERK_MACHINE_SECRET_KEY, CLERK_JWT_KEY,
// CLERK_PUBLISHABLE_KEY and CLERK_API_URL environment variables. A key
// written as off is none: its variable is not read. Keys, URLs
// and lists may be placeholders such as {env.NAME} or {file.path}, expanded
// when the configuration loads. A size is a number of bytes, or one with a
// unit: 64MiB, 500KB. The block of protected_resource may be left out, and
// so may each of its lines.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return handlerSubdirectives.unmarshal(d, h)
}

// handlerSubdirectives are clerk_m2m's, in the order its syntax lists them.
var handlerSubdirectives = block[Handler]{
	keyArg("secret_key", func(h *Handler) *string { return &h.SecretKey }),
	keyArg("machine_secret_key", func(h *Handler) *string { return &h.MachineSecretKey }),
	keyArg("jwt_key", func(h *Handler) *string { return &h.JWTKey }),
	textArg("api_url", func(h *Handler) *string { return &h.APIURL }),
	keyArg("publishable_key", func(h *Handler) *string { return &h.PublishableKey }),
	listArg("accept", func(h *Handler) *[]string { return &h.Accept }),
	listArg("require_scopes", func(h *Handler) *[]string { return &h.RequireScopes }),
	listArg("allowed_subjects", func(h *Handler) *[]string { return &h.AllowedSubjects }),
	listArg("authorized_parties", func(h *Handler) *[]string { return &h.AuthorizedParties }),
	listArg("audience", func(h *Handler) *[]string { return &h.Audience }),
	listArg("issuer", func(h *Handler) *[]string { return &h.Issuer }),
	blockArg("protected_resource", func(h *Handler) **ProtectedResource { return &h.ProtectedResource },
		func(p *ProtectedResource) *string { return &p.Resource }, resourceSubdirectives),
	flagArg("optional", func(h *Handler) *bool { return &h.Optional }),
	flagArg("strip_authorization", func(h *Handler) *bool { return &h.StripAuthorization }),
	flagArg("disable_metrics", func(h *Handler) *bool { return &h.DisableMetrics }),
	optionalDurationArg("timeout", func(h *Handler) **caddy.Duration { return &h.Timeout }),
	optionalDurationArg("clock_skew", func(h *Handler) **caddy.Duration { return &h.ClockSkew }),
	optionalDurationArg("cache_ttl", func(h *Handler) **caddy.Duration { return &h.CacheTTL }),
	optionalDurationArg("jwks_max_stale", func(h *Handler) **caddy.Duration { return &h.JWKSMaxStale }),
	countArg("max_clerk_calls", func(h *Handler) *int { return &h.MaxClerkCalls }),
	countArg("max_clerk_rate", func(h *Handler) *int { return &h.MaxClerkRate }),
	sizeArg("cache_max_bytes", func(h *Handler) *int64 { return &h.CacheMaxBytes }),
	flagArg("shared_cache", func(h *Handler) *bool { return &h.SharedCache }),
}

// resourceSubdirectives are protected_resource's, in the order its syntax
// lists them.
var resourceSubdirectives = block[ProtectedResource]{
	listArg("authorization_servers", func(p *ProtectedResource) *[]string { return &p.AuthorizationServers }),
	listArg("scopes_supported", func(p *ProtectedResource) *[]string { return &p.ScopesSupported }),
	textArg("resource_name", func(p *ProtectedResource) *string { return &p.ResourceName }),
	textArg("resource_documentation", func(p *ProtectedResource) *string { return &p.ResourceDocumentation }),
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
