package clerkm2m

import (
	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(App{})
}

// App starts the background work of clerk_m2m handlers (fetching Clerk's
// signing keys, and keeping them fresh) when their configuration starts,
// and never while a configuration is only being validated. It needs no
// configuration: clerk_m2m handlers load it themselves.
type App struct {
	// Registered while the configuration is provisioned and read when it
	// starts; Caddy does both in one goroutine, one after the other.
	instances []*instance
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "clerk_m2m",
		New: func() caddy.Module { return new(App) },
	}
}

// register has inst started with the configuration.
func (a *App) register(inst *instance) {
	a.instances = append(a.instances, inst)
}

// Start starts the registered instances (those still running from the
// previous configuration carry on as they were).
func (a *App) Start() error {
	for _, inst := range a.instances {
		inst.start()
	}
	return nil
}

// Stop does nothing: an instance stops when the last configuration using it
// is cleaned up, so that a reload does not interrupt it.
func (a *App) Stop() error { return nil }

// Interface guards
var (
	_ caddy.App = (*App)(nil)
)
