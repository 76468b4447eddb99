package clerkm2m

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

// ProtectedResource makes the route an OAuth protected resource (RFC
// 9728), as MCP's authorization makes of an HTTP MCP server: the handler
// serves the resource's metadata, unauthenticated, at
// `/.well-known/oauth-protected-resource` followed by the resource's path
// (and at `/.well-known/oauth-protected-resource` itself, where clients
// that ignore the challenge look); every 401 and 403 it answers names that
// document in its challenge (`resource_metadata="…"`); and an OAuth access
// token passes only when it was issued for the resource (its `aud` names
// the resource's URI, RFC 8707). The route must accept `oauth_token`.
//
// It is a subdirective of clerk_m2m rather than a handler of its own
// because the metadata and the gate must agree: the URI published is the
// audience the gate requires, the scopes published are those it requires,
// the challenge points at the document it serves. One block says them
// once. The metadata is served only to the requests that reach the
// handler: when clerk_m2m covers only part of a site, route
// `/.well-known/oauth-protected-resource*` to it too.
type ProtectedResource struct {
	// The resource's canonical URI (RFC 8707): the URL its clients are
	// given, such as `https://mcp.example.com/mcp`, written as they write
	// it (a client compares it with the URL it was given, and asks for a
	// token for exactly this string). https, or http for a loopback host;
	// no query, fragment or credentials. It joins `audience`: an OAuth
	// access token must name it (or another `audience`), and so must a
	// session token or an M2M JWT that names an audience at all.
	Resource string `json:"resource,omitempty"`

	// The authorization servers whose tokens the resource accepts, by their
	// issuer URL: clients use the first. Default: the instance's Frontend
	// API, which the publishable key names.
	AuthorizationServers []string `json:"authorization_servers,omitempty"`

	// The scopes clients should ask for (`scopes_supported`); MCP's SDK
	// asks for all of them. Default: `require_scopes`, else none.
	ScopesSupported []string `json:"scopes_supported,omitempty"`

	// A name for the resource that clients may show to users
	// (`resource_name`). Default: none.
	ResourceName string `json:"resource_name,omitempty"`

	// A page with documentation for developers
	// (`resource_documentation`). Default: none.
	ResourceDocumentation string `json:"resource_documentation,omitempty"`
}

// metadataWellKnown is where RFC 9728 puts a protected resource's
// metadata, ahead of the resource's path.
const metadataWellKnown = "/.well-known/oauth-protected-resource"

// resourceMetadata is a protected resource as the handler serves it.
type resourceMetadata struct {
	uri      string   // the resource's canonical URI, the audience
	url      string   // where its metadata is, for the challenges
	paths    []string // the request paths the metadata is served at
	document []byte   // the metadata, as served
}

// metadataDocument is RFC 9728's document, with the members the module
// fills; optional members are left out when empty, never null.
type metadataDocument struct {
	Resource              string   `json:"resource"`
	AuthorizationServers  []string `json:"authorization_servers"`
	ScopesSupported       []string `json:"scopes_supported,omitempty"`
	BearerMethods         []string `json:"bearer_methods_supported"`
	ResourceName          string   `json:"resource_name,omitempty"`
	ResourceDocumentation string   `json:"resource_documentation,omitempty"`
}

// expandResource resolves the placeholders of p and builds what the
// handler serves, with o's publishable key and required scopes for the
// defaults.
func expandResource(repl *caddy.Replacer, p *ProtectedResource, o *verify.Options) (*resourceMetadata, error) {
	doc := metadataDocument{BearerMethods: []string{"header"}} // OAuth tokens are read from the Authorization header only
	if err := expandFields(repl,
		field{name: "protected_resource", configured: p.Resource, dest: &doc.Resource},
		field{name: "resource_name", configured: p.ResourceName, dest: &doc.ResourceName},
		field{name: "resource_documentation", configured: p.ResourceDocumentation, dest: &doc.ResourceDocumentation},
	); err != nil {
		return nil, err
	}
	if doc.Resource == "" {
		return nil, errors.New("protected_resource needs the resource's URI, such as https://mcp.example.com/mcp")
	}
	u, err := checkResourceURL("protected_resource", doc.Resource, true)
	if err != nil {
		return nil, err
	}
	if doc.ResourceDocumentation != "" {
		if _, err := checkResourceURL("resource_documentation", doc.ResourceDocumentation, false); err != nil {
			return nil, err
		}
	}
	if doc.AuthorizationServers, err = authorizationServers(repl, p.AuthorizationServers, o.PublishableKey); err != nil {
		return nil, err
	}
	if doc.ScopesSupported, err = expandList(repl, "scopes_supported", p.ScopesSupported); err != nil {
		return nil, err
	}
	if len(p.ScopesSupported) == 0 {
		doc.ScopesSupported = o.RequireScopes
	}
	// RFC 9728 §3.1: the well-known path goes between the host and the
	// resource's path, without a lone "/" after the host.
	path, escaped := u.Path, u.EscapedPath()
	if path == "/" {
		path, escaped = "", ""
	}
	m := &resourceMetadata{
		uri:   doc.Resource,
		url:   u.Scheme + "://" + u.Host + metadataWellKnown + escaped,
		paths: slices.Compact([]string{metadataWellKnown + path, metadataWellKnown}),
	}
	if quotable(m.url) != m.url {
		return nil, fmt.Errorf("protected_resource: %q makes a metadata URL that cannot be quoted in a challenge", doc.Resource)
	}
	m.document, err = json.Marshal(doc)
	o.Audience = append(o.Audience, m.uri)
	return m, err
}

// authorizationServers are the configured ones, checked, else the
// Frontend API of the publishable key.
func authorizationServers(repl *caddy.Replacer, configured []string, publishableKey string) ([]string, error) {
	servers, err := expandList(repl, "authorization_servers", configured)
	if err != nil {
		return nil, err
	}
	for _, server := range servers {
		if _, err := checkResourceURL("authorization_servers", server, true); err != nil {
			return nil, err
		}
	}
	if len(servers) > 0 {
		return servers, nil
	}
	if publishableKey == "" {
		return nil, errors.New("protected_resource needs its authorization server: set publishable_key (Clerk's authorization " +
			"server is the Frontend API it names), or authorization_servers")
	}
	key, err := backend.ParsePublishableKey(publishableKey)
	if err != nil {
		return nil, fmt.Errorf("publishable_key: %v", err)
	}
	return []string{key.URL()}, nil
}

// checkResourceURL refuses what is not an absolute https URL (http for a
// loopback host), with credentials or a fragment, or a query if
// noQuery.
func checkResourceURL(name, raw string, noQuery bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %v", name, err)
	case u.Host == "" || u.Scheme != "https" && !(u.Scheme == "http" && backend.IsLoopbackHost(u.Hostname())):
		return nil, fmt.Errorf("%s: %q is not an absolute https URL (http only for a loopback host)", name, raw)
	case u.User != nil || u.Fragment != "" || noQuery && (u.RawQuery != "" || u.ForceQuery):
		return nil, fmt.Errorf("%s: %q may have no credentials, fragment or query", name, raw)
	}
	return u, nil
}

// checkAccepts refuses a protected resource on a route that does not
// accept the OAuth access tokens its clients are sent to get.
func (m *resourceMetadata) checkAccepts(accepted []verify.TokenType) error {
	if m != nil && !slices.Contains(accepted, verify.OAuthToken) {
		return fmt.Errorf("protected_resource: its clients present OAuth access tokens: add %s to accept", verify.OAuthToken)
	}
	return nil
}

// serves reports whether a request for path is one for the metadata.
func (m *resourceMetadata) serves(path string) bool {
	return m != nil && slices.Contains(m.paths, path)
}

// challengeParam is what a challenge adds for this resource: nothing
// without one.
func (m *resourceMetadata) challengeParam() string {
	if m == nil {
		return ""
	}
	return `, resource_metadata="` + m.url + `"`
}

// serve answers a request for the metadata: GET and HEAD with the
// document, OPTIONS as a CORS preflight; anyone may read it, from any
// origin (browser-based MCP clients send MCP-Protocol-Version, which
// takes a preflight).
func (m *resourceMetadata) serve(w http.ResponseWriter, r *http.Request) error {
	const methods = "GET, HEAD, OPTIONS"
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "public, max-age=300")
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusOK)
			return nil
		}
		_, err := w.Write(m.document)
		return err
	case http.MethodOptions:
		h.Set("Access-Control-Allow-Methods", methods)
		h.Set("Access-Control-Allow-Headers", "MCP-Protocol-Version, *")
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	h.Set("Allow", methods)
	return caddyhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("%s of the protected resource metadata", r.Method))
}
