package clerkm2m

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-clerk/clerk-m2m/verify"
)

// Placeholder names set for a verified request.
const (
	userPrefix           = "http.auth.user."
	userIDPlaceholder    = userPrefix + "id"
	claimsPlaceholder    = userPrefix + "claims"
	claimPathPrefix      = claimsPlaceholder + "."
	tokenTypePlaceholder = userPrefix + "token_type"
)

// setIdentityPlaceholders publishes a verified identity. The claims are
// rendered only if a placeholder asks for them.
func setIdentityPlaceholders(repl *caddy.Replacer, id *verify.Identity) {
	repl.Set(userIDPlaceholder, id.Subject)
	repl.Set(tokenTypePlaceholder, string(id.TokenType))
	repl.Set(userPrefix+"token_format", string(id.Format))
	repl.Set(userPrefix+"token_id", id.TokenID)
	repl.Set(userPrefix+"scopes", strings.Join(id.Scopes, " "))
	expiresAt := ""
	if !id.ExpiresAt.IsZero() {
		expiresAt = strconv.FormatInt(id.ExpiresAt.Unix(), 10)
	}
	repl.Set(userPrefix+"expires_at", expiresAt)
	repl.Map(claimsProvider(id))
}

// claimsProvider answers {http.auth.user.claims} with the claims as a JSON
// object and {http.auth.user.claims.<path>} with one claim, found by walking
// the dotted path into nested objects.
func claimsProvider(id *verify.Identity) caddy.ReplacerFunc {
	return func(key string) (any, bool) {
		if key == claimsPlaceholder {
			return id.ClaimsJSON(), true
		}
		path, ok := strings.CutPrefix(key, claimPathPrefix)
		if !ok {
			return nil, false
		}
		value, found := lookupClaim(id.Claims(), path)
		if !found {
			return nil, false
		}
		return renderClaim(value), true
	}
}

func lookupClaim(claims map[string]any, path string) (any, bool) {
	var current any = claims
	for _, name := range strings.Split(path, ".") {
		object, ok := current.(map[string]any)
		if !ok {
			return nil, false
		}
		if current, ok = object[name]; !ok {
			return nil, false
		}
	}
	return current, true
}

// renderClaim gives strings as they are and everything else as JSON.
func renderClaim(value any) string {
	if s, ok := value.(string); ok {
		return s
	}
	data, err := json.Marshal(value)
	if err != nil {
		return ""
	}
	return string(data)
}
