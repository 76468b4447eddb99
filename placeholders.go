package clerkm2m

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-clerk/clerk-m2m/verify"
)

// userPrefix starts every identity placeholder.
const userPrefix = "http.auth.user."

// identityHolderVar names, in the request's variables, the identity that
// the {http.auth.user.*} placeholders answer from. No placeholder can spell
// it (it starts with a NUL).
const identityHolderVar = "\x00clerk_m2m.identity"

// identityHolder is the identity a request's placeholders answer from; nil
// for an anonymous request.
type identityHolder struct{ id *verify.Identity }

// String keeps the holder out of any text it could be rendered into.
func (*identityHolder) String() string { return "" }

// publishIdentity makes the {http.auth.user.*} placeholders answer from id,
// on demand, so that a request pays only for the ones something reads; a
// nil id publishes "no identity": every one of them is known and empty, so
// that a handler reading one (header_up X-User {http.auth.user.id}) gets
// nothing rather than the placeholder's own text.
//
// A request has one holder, however many clerk_m2m handlers it passes: the
// replacer asks its providers in the order they were added, so a second
// provider would be shadowed by the first, and the identity a later
// handler verified hidden behind an earlier one's. The holder is kept in
// the request's variables, which Caddy makes for every request with room
// to spare. Values another handler set under the same names are removed:
// they would shadow the identity.
func publishIdentity(ctx context.Context, repl *caddy.Replacer, id *verify.Identity) {
	repl.DeleteByPrefix(userPrefix)
	if holder, ok := caddyhttp.GetVar(ctx, identityHolderVar).(*identityHolder); ok {
		holder.id = id
		return
	}
	holder := &identityHolder{id: id}
	caddyhttp.SetVar(ctx, identityHolderVar, holder)
	repl.Map(holder.placeholder)
}

func (h *identityHolder) placeholder(key string) (any, bool) {
	name, ok := strings.CutPrefix(key, userPrefix)
	switch {
	case !ok:
		return nil, false
	case h.id == nil:
		return "", true
	}
	return identityPlaceholder(h.id, name)
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
	case "actor":
		return id.Actor, true
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
