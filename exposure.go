package clerkm2m

import (
	"net"
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// warnAboutExposedSidecars warns, once per server, when a clerk_m2m_token
// handler sits on a server that others than this host can reach: whoever
// reaches it calls the upstream with the machine's authority (a Host
// matcher is no gate, a client sets the Host header it likes).
func (a *App) warnAboutExposedSidecars() {
	httpApp, err := a.ctx.AppIfConfigured("http")
	if err != nil {
		return
	}
	for name, server := range httpApp.(*caddyhttp.App).Servers {
		exposed := exposedListeners(server.Listen)
		if len(exposed) == 0 || !mintsOn(server) {
			continue
		}
		a.logger.Warn("clerk_m2m_token attaches the machine's M2M token to the requests this server forwards, and the "+
			"server listens beyond loopback: anyone who can reach it calls the upstream with the machine's authority. "+
			"Listen on loopback only (bind 127.0.0.1 [::1] in the site block) or on a unix socket",
			zap.String("server", name), zap.Strings("listen", exposed))
	}
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

// mintsOn reports whether a clerk_m2m_token handler is among the server's
// routes, its error routes or its named routes, at any depth of subroutes.
func mintsOn(server *caddyhttp.Server) bool {
	lists := []caddyhttp.RouteList{server.Routes}
	if server.Errors != nil {
		lists = append(lists, server.Errors.Routes)
	}
	for _, route := range server.NamedRoutes {
		lists = append(lists, caddyhttp.RouteList{*route})
	}
	return slices.ContainsFunc(lists, routesMint)
}

// routesMint reports whether a clerk_m2m_token handler is among routes, at
// any depth of subroutes.
func routesMint(routes caddyhttp.RouteList) bool {
	for _, route := range routes {
		for _, handler := range route.Handlers {
			switch handler := handler.(type) {
			case *MintHandler:
				return true
			case *caddyhttp.Subroute:
				if routesMint(handler.Routes) || handler.Errors != nil && routesMint(handler.Errors.Routes) {
					return true
				}
			}
		}
	}
	return false
}
