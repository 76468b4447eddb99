package clerkm2m

import (
	"maps"
	"reflect"
	"slices"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

// The layouts in which a clerk_m2m cannot gate what it seems to.
const (
	// gateBeside: a clerk_m2m under a matcher, in a route that answers
	// nothing itself, before a route of the same list that forwards and
	// is not under the same matcher: the requests the matcher does not
	// match reach the upstream unverified (/api, /api;x/secret and
	// /api%00/x beside clerk_m2m /api/*).
	gateBeside = "clerk_m2m verifies only the requests its matcher matches, and a reverse_proxy after it, not under " +
		"that matcher, forwards every other request unverified (for /api/*: /api, /api;x/secret, /api%00/x). " +
		"Put the reverse_proxy inside the block that verifies: handle /api/* { clerk_m2m; reverse_proxy … }, and let " +
		"nothing else of the site forward"
	// gateAfterAnswer: a clerk_m2m after a handler that answers every
	// request that reaches it: the clerk_m2m never runs.
	gateAfterAnswer = "clerk_m2m comes after a handler that answers the request itself, so it never runs and nothing " +
		"is verified. Put clerk_m2m first: in a route block, handlers run in the order written"
)

// unsafeGate is a clerk_m2m that cannot gate what it seems to: the server
// and site it is in, which layout it is, and the handler that answers
// past it.
type unsafeGate struct {
	server, layout, answeredBy string
	sites                      []string
}

// unsafeGates finds, in a configuration's servers, the clerk_m2m handlers
// that cannot gate what they seem to (see gateBeside, gateAfterAnswer), in
// every list of routes at any depth. Each is named with its server and the
// hosts of the site it is in.
func unsafeGates(servers map[string]*caddyhttp.Server) []unsafeGate {
	var found []unsafeGate
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		for _, routes := range serverRouteLists(servers[name]) {
			for _, gate := range listGates(routes) {
				found = append(found, unsafeGate{server: name, sites: hostsOf(gate.route), layout: gate.layout, answeredBy: gate.answeredBy})
			}
			for _, site := range routes {
				for _, handler := range site.Handlers {
					for _, nested := range nestedRoutes(handler) {
						eachNestedList(nested, func(routes caddyhttp.RouteList) {
							for _, gate := range listGates(routes) {
								found = append(found, unsafeGate{server: name, sites: hostsOf(site), layout: gate.layout,
									answeredBy: gate.answeredBy})
							}
						})
					}
				}
			}
		}
	}
	return found
}

// foundGate is an unsafe gate found in a list: which layout, the handler
// that answers past it, and the route it is in.
type foundGate struct {
	layout, answeredBy string
	route              caddyhttp.Route
}

// listGates finds the unsafe gates of one list of routes.
func listGates(routes caddyhttp.RouteList) []foundGate {
	var found []foundGate
	answered := "" // by a route without matchers: every later handler of the list is past it
	for i, route := range routes {
		answeredInRoute := answered
		for _, handler := range route.Handlers {
			if answeredInRoute != "" && holdsGate(handler) {
				found = append(found, foundGate{gateAfterAnswer, answeredInRoute, route})
			}
			if name := answerer(handler); name != "" && answeredInRoute == "" {
				answeredInRoute = name
			}
		}
		if len(route.MatcherSets) == 0 && answered == "" {
			answered = answeredInRoute
		}
		if forwarder := ungatedForwardAfter(routes, i); forwarder != "" {
			found = append(found, foundGate{gateBeside, forwarder, route})
		}
	}
	return found
}

// ungatedForwardAfter names the handler that forwards, unverified, the
// requests routes[i] gates but for its matcher: when routes[i] is under a
// matcher (and not terminal, which ends a site), holds a clerk_m2m and
// answers nothing after it, and a later route not under the same
// matchers forwards before any clerk_m2m all requests pass. "" when none
// does.
func ungatedForwardAfter(routes caddyhttp.RouteList, i int) string {
	gate := routes[i]
	if len(gate.MatcherSets) == 0 || gate.Terminal {
		return ""
	}
	at := slices.IndexFunc(gate.Handlers, func(h caddyhttp.MiddlewareHandler) bool { _, ok := h.(*Handler); return ok })
	if at < 0 || slices.ContainsFunc(gate.Handlers[at:], func(h caddyhttp.MiddlewareHandler) bool { return answerer(h) != "" }) {
		return ""
	}
	var later caddyhttp.RouteList
	for _, route := range routes[i+1:] {
		if !reflect.DeepEqual(route.MatcherSets, gate.MatcherSets) {
			later = append(later, route)
		}
	}
	return ungatedForward(later)
}

// ungatedForward names the first reverse_proxy a request can reach
// through routes without passing a clerk_m2m first; "" when there is
// none. A clerk_m2m in a route without matchers gates the rest of the
// list; one under a matcher, the rest of its route.
func ungatedForward(routes caddyhttp.RouteList) string {
	for _, route := range routes {
		for _, handler := range route.Handlers {
			switch h := handler.(type) {
			case *Handler:
				if len(route.MatcherSets) == 0 {
					return ""
				}
			case *reverseproxy.Handler:
				return "reverse_proxy"
			case *caddyhttp.Subroute:
				if name := ungatedForward(h.Routes); name != "" {
					return name
				}
				continue
			default:
				continue
			}
			break // past a clerk_m2m under a matcher: the rest of the route is gated
		}
	}
	return ""
}

// answerer names the handler when it answers every request that reaches
// it, never calling the next one: what comes after it in a route never
// runs. A subroute does when a route of its own without matchers answers.
func answerer(handler caddyhttp.MiddlewareHandler) string {
	switch h := handler.(type) {
	case *reverseproxy.Handler:
		return "reverse_proxy"
	case *caddyhttp.StaticResponse:
		return "respond"
	case *caddyhttp.StaticError:
		return "error"
	case *fileserver.FileServer:
		if !h.PassThru {
			return "file_server"
		}
	case *caddyhttp.Subroute:
		for _, route := range h.Routes {
			if len(route.MatcherSets) > 0 {
				continue
			}
			for _, inner := range route.Handlers {
				if name := answerer(inner); name != "" {
					return name
				}
			}
		}
	}
	return ""
}

// holdsGate reports whether handler is a clerk_m2m, or runs one in routes
// of its own.
func holdsGate(handler caddyhttp.MiddlewareHandler) bool {
	if _, ok := handler.(*Handler); ok {
		return true
	}
	for _, routes := range nestedRoutes(handler) {
		for _, route := range routes {
			if slices.ContainsFunc(route.Handlers, holdsGate) {
				return true
			}
		}
	}
	return false
}

// hostsOf lists the hosts a route's matchers name: its site's.
func hostsOf(route caddyhttp.Route) []string {
	var hosts []string
	for _, set := range route.MatcherSets {
		for _, matcher := range set {
			if host, ok := matcher.(*caddyhttp.MatchHost); ok {
				hosts = append(hosts, *host...)
			}
		}
	}
	return hosts
}

// warnAboutUnsafeGates warns, once per clerk_m2m found, about the gates
// that cannot gate what they seem to.
func (a *App) warnAboutUnsafeGates(servers map[string]*caddyhttp.Server) {
	for _, gate := range unsafeGates(servers) {
		a.logger.Warn(gate.layout, zap.String("server", gate.server), zap.Strings("site", gate.sites),
			zap.String("answered_by", gate.answeredBy))
	}
}
