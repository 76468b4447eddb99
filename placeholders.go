package clerkm2m

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-clerk/clerk-m2m/verify"
)

// identityPlaceholderPrefix starts every identity placeholder.
const identityPlaceholderPrefix = "http.auth.user."

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
	repl.DeleteByPrefix(identityPlaceholderPrefix)
	// The variables are looked up once, for both the look and the store
	// (GetVar and SetVar would look them up each).
	vars, _ := ctx.Value(caddyhttp.VarsCtxKey).(map[string]any)
	if holder, ok := vars[identityHolderVar].(*identityHolder); ok {
		holder.id = id
		return
	}
	holder := &identityHolder{id: id}
	if vars != nil {
		vars[identityHolderVar] = holder
	}
	repl.Map(holder.placeholder)
}

func (h *identityHolder) placeholder(key string) (any, bool) {
	name, ok := strings.CutPrefix(key, identityPlaceholderPrefix)
	switch {
	case !ok:
		return nil, false
	case h.id == nil:
		return "", true
	}
	return identityPlaceholder(h.id, name)
}

// claimPlaceholderPrefix starts {http.auth.user.claims.<path>}.
const claimPlaceholderPrefix = "claims."

// identityPlaceholder answers {http.auth.user.<name>}: a field of the
// identity, by its name (see verify.Identity.Field), or one of its claims.
func identityPlaceholder(id *verify.Identity, name string) (any, bool) {
	if value, ok := id.Field(name); ok {
		return value, true
	}
	path, ok := strings.CutPrefix(name, claimPlaceholderPrefix)
	if !ok {
		return nil, false
	}
	// A claim the credential does not carry is known and empty, as every
	// placeholder of an anonymous request is: left unknown, a handler
	// would send the placeholder's own text on (header_up X-Role
	// {http.auth.user.claims.role} would forward "{http.auth.user.claims.role}").
	value, found := lookupClaim(id.Claims(), path)
	if !found {
		return "", true
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
