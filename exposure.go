package clerkm2m

import (
	"maps"
	"net"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/intercept"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

// warnAboutExposedSidecars warns, once per server, when a server that
// others than this host can reach attaches a machine's M2M token to what it
// forwards, itself or through a server it proxies to: whoever reaches it
// calls the upstream with the machine's authority (a Host matcher is no
// gate, a client sets the Host header it likes).
func (a *App) warnAboutExposedSidecars(servers map[string]*caddyhttp.Server) {
	for _, s := range exposedSidecars(servers) {
		if s.mintsOn == s.server {
			a.logger.Warn("clerk_m2m_token attaches the machine's M2M token to the requests this server forwards, and the "+
				"server listens beyond loopback: anyone who can reach it calls the upstream with the machine's authority. "+
				"Listen on loopback only (bind 127.0.0.1 [::1] in the site block) or on a unix socket",
				zap.String("server", s.server), zap.Strings("listen", s.listen))
			continue
		}
		a.logger.Warn("this server listens beyond loopback and proxies to a server whose clerk_m2m_token attaches the "+
			"machine's M2M token to the requests it forwards: anyone who can reach this one calls with the machine's "+
			"authority. Listen on loopback only (bind 127.0.0.1 [::1] in the site block), or proxy elsewhere",
			zap.String("server", s.server), zap.Strings("listen", s.listen), zap.String("proxies_to", s.mintsOn))
	}
}

// exposedSidecar is a server that others than this host can reach and
// that hands out a machine's authority: its addresses beyond loopback, and
// the server whose clerk_m2m_token it reaches (itself, or one it proxies
// to, at any remove).
type exposedSidecar struct {
	server, mintsOn string
	listen          []string
}

// exposedSidecars finds, in a configuration's servers, those that listen
// beyond loopback and reach a clerk_m2m_token handler: one of their own, or
// one of a server they proxy to, which a static upstream of theirs reaches
// (an upstream known only per request is not followed; nor is an address
// of this host other than loopback, which the configuration does not
// name).
func exposedSidecars(servers map[string]*caddyhttp.Server) []exposedSidecar {
	names := slices.Sorted(maps.Keys(servers))
	walks := map[string]serverWalk{}
	mintsOn := map[string]string{} // the servers that reach a clerk_m2m_token, and the server whose it is
	for _, name := range names {
		walks[name] = walkServer(servers[name])
		if walks[name].mints {
			mintsOn[name] = name
		}
	}
	for found := true; found; { // until no server is found to proxy to one found before
		found = false
		for _, name := range names {
			if _, known := mintsOn[name]; known {
				continue
			}
			for _, target := range names {
				if minter, ok := mintsOn[target]; ok && walks[name].proxiesTo(servers[target].Listen) {
					mintsOn[name], found = minter, true
					break
				}
			}
		}
	}
	var exposed []exposedSidecar
	for _, name := range names {
		if minter, ok := mintsOn[name]; ok {
			if listen := exposedListeners(servers[name].Listen); len(listen) > 0 {
				exposed = append(exposed, exposedSidecar{server: name, mintsOn: minter, listen: listen})
			}
		}
	}
	return exposed
}

// exposedListeners returns the addresses of listen that another host may
// reach: all but loopback addresses and unix sockets (a file descriptor
// handed over by a parent process may be anything).
func exposedListeners(listen []string) []string {
	return slices.DeleteFunc(slices.Clone(listen), func(address string) bool {
		parsed, err := caddy.ParseNetworkAddress(address)
		if err != nil {
			return false
		}
		if parsed.IsUnixNetwork() {
			return true
		}
		ip := net.ParseIP(parsed.Host)
		return parsed.Host == "localhost" || ip != nil && ip.IsLoopback()
	})
}

// serverWalk is what a server's handlers do that matters here: whether one
// of them mints, and the addresses its reverse proxies' static upstreams
// dial.
type serverWalk struct {
	mints bool
	dials []string
}

// walkServer looks at every handler of the server: in its routes, its
// error routes and its named routes, at any depth.
func walkServer(server *caddyhttp.Server) serverWalk {
	var w serverWalk
	eachRouteList(server, func(routes caddyhttp.RouteList) {
		for _, route := range routes {
			for _, handler := range route.Handlers {
				switch h := handler.(type) {
				case *MintHandler:
					w.mints = true
				case *reverseproxy.Handler:
					for _, upstream := range h.Upstreams {
						w.dials = append(w.dials, upstream.Dial)
					}
				}
			}
		}
	})
	return w
}

// eachRouteList calls visit with every list of routes of the server (see
// serverRouteLists), and the routes their handlers run in turn, at any
// depth.
func eachRouteList(server *caddyhttp.Server, visit func(caddyhttp.RouteList)) {
	for _, routes := range serverRouteLists(server) {
		eachNestedList(routes, visit)
	}
}

// serverRouteLists are the server's own lists of routes: its routes, its
// error routes, and each of its named routes.
func serverRouteLists(server *caddyhttp.Server) []caddyhttp.RouteList {
	lists := []caddyhttp.RouteList{server.Routes}
	if server.Errors != nil {
		lists = append(lists, server.Errors.Routes)
	}
	for _, name := range slices.Sorted(maps.Keys(server.NamedRoutes)) {
		lists = append(lists, caddyhttp.RouteList{*server.NamedRoutes[name]})
	}
	return lists
}

// eachNestedList calls visit with routes and every list of routes their
// handlers run.
func eachNestedList(routes caddyhttp.RouteList, visit func(caddyhttp.RouteList)) {
	visit(routes)
	for _, route := range routes {
		for _, handler := range route.Handlers {
			for _, nested := range nestedRoutes(handler) {
				eachNestedList(nested, visit)
			}
		}
	}
}

// nestedRoutes are the routes a handler runs: a subroute's (route, handle
// and their kin) and its error routes, and the handle_response routes of
// reverse_proxy and intercept, whose handlers run on the response's
// request, a clerk_m2m_token's included.
func nestedRoutes(handler caddyhttp.MiddlewareHandler) []caddyhttp.RouteList {
	var responses []caddyhttp.ResponseHandler
	switch h := handler.(type) {
	case *caddyhttp.Subroute:
		if h.Errors != nil {
			return []caddyhttp.RouteList{h.Routes, h.Errors.Routes}
		}
		return []caddyhttp.RouteList{h.Routes}
	case *reverseproxy.Handler:
		responses = h.HandleResponse
	case *intercept.Intercept:
		responses = h.HandleResponse
	}
	lists := make([]caddyhttp.RouteList, 0, len(responses))
	for _, response := range responses {
		lists = append(lists, response.Routes)
	}
	return lists
}

// proxiesTo reports whether an upstream of the walked server dials one of
// the listen addresses.
func (w serverWalk) proxiesTo(listen []string) bool {
	return slices.ContainsFunc(w.dials, func(dial string) bool {
		return slices.ContainsFunc(listen, func(address string) bool { return reaches(dial, address) })
	})
}

// reaches reports whether dialing dial, from this host, reaches a listener
// on listen: the same unix socket, or a port of the listener's on a host
// that is the listener's (one on every interface answers on loopback too;
// localhost is 127.0.0.1 and ::1).
func reaches(dial, listen string) bool {
	if strings.Contains(dial, "{") { // a placeholder: known only per request
		return false
	}
	to, err := caddy.ParseNetworkAddress(dial)
	if err != nil {
		return false
	}
	on, err := caddy.ParseNetworkAddress(listen)
	switch {
	case err != nil || to.IsUnixNetwork() != on.IsUnixNetwork() || to.IsFdNetwork() || on.IsFdNetwork():
		return false
	case on.IsUnixNetwork():
		return socketPath(to.Host) == socketPath(on.Host)
	}
	return to.StartPort >= on.StartPort && to.StartPort <= on.EndPort && answers(on.Host, to.Host)
}

// socketPath is a unix socket's address without the file mode Caddy
// allows after it (unix//run/sidecar.sock|0222).
func socketPath(host string) string {
	path, _, _ := strings.Cut(host, "|")
	return path
}

// answers reports whether a listener on listenHost answers a dial, from
// this host, to dialHost.
func answers(listenHost, dialHost string) bool {
	listenIP, dialIP := net.ParseIP(listenHost), net.ParseIP(dialHost)
	switch {
	case listenHost == "" || listenIP != nil && listenIP.IsUnspecified():
		return dialHost == "" || dialHost == "localhost" || dialIP != nil && dialIP.IsLoopback()
	case strings.EqualFold(listenHost, dialHost) || listenIP != nil && listenIP.Equal(dialIP):
		return true
	}
	return listenHost == "localhost" && isLocalhost(dialIP) || dialHost == "localhost" && isLocalhost(listenIP)
}

// isLocalhost reports whether ip is one that localhost stands for.
func isLocalhost(ip net.IP) bool {
	return ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback)
}
