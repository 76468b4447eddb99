package clerkm2m

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-clerk/clerk-m2m/verify"
)

// userPrefix starts every identity placeholder.
const userPrefix = "http.auth.user."

// setIdentityPlaceholders publishes a verified identity as the
// {http.auth.user.*} placeholders. They are answered on demand from the
// identity, so a request pays only for the ones something reads. Values an
// earlier handler set under the same names are removed first: they would
// shadow the identity.
func setIdentityPlaceholders(repl *caddy.Replacer, id *verify.Identity) {
	repl.DeleteByPrefix(userPrefix)
	repl.Map(func(key string) (any, bool) {
		name, ok := strings.CutPrefix(key, userPrefix)
		if !ok {
			return nil, false
		}
		return identityPlaceholder(id, name)
	})
}

// setAnonymousPlaceholders publishes "no identity": every
// {http.auth.user.*} placeholder is known and empty, so that a handler
// reading one (header_up X-User {http.auth.user.id}) gets nothing rather
// than the placeholder's own text, or a value an earlier handler set.
func setAnonymousPlaceholders(repl *caddy.Replacer) {
	repl.DeleteByPrefix(userPrefix)
	repl.Map(func(key string) (any, bool) {
		return "", strings.HasPrefix(key, userPrefix)
	})
}

// identityPlaceholder answers {http.auth.user.<name>}.
func identityPlaceholder(id *verify.Identity, name string) (any, bool) {
	switch name {
	case "id":
		return id.Subject, true
	case "token_type":
		return string(id.TokenType), true
	case "token_format":
		return string(id.Format), true
	case "token_id":
		return id.TokenID, true
	case "scopes":
		return strings.Join(id.Scopes, " "), true
	case "expires_at":
		if id.ExpiresAt.IsZero() {
			return "", true
		}
		return strconv.FormatInt(id.ExpiresAt.Unix(), 10), true
	case "claims":
		return id.ClaimsJSON(), true
	case "client_id":
		return id.ClientID, true
	case "session_id":
		return id.SessionID, true
	case "org_id":
		return id.OrgID, true
	case "name":
		return id.Name, true
	}
	path, ok := strings.CutPrefix(name, "claims.")
	if !ok {
		return nil, false
	}
	value, found := lookupClaim(id.Claims(), path)
	if !found {
		return nil, false
	}
	return renderClaim(value), true
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
