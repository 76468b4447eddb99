package clerkm2m

import (
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
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
	instances []registered
}

// registered is an instance and the logger of the handler that loaded it.
type registered struct {
	inst   *instance
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "clerk_m2m",
		New: func() caddy.Module { return new(App) },
	}
}

// register has inst started with the configuration, logging to logger.
func (a *App) register(inst *instance, logger *zap.Logger) {
	a.instances = append(a.instances, registered{inst, logger})
}

// Start starts the registered instances (those still running from the
// previous configuration carry on as they were), and has them log from now
// on where this configuration says: the previous one's logs may close.
func (a *App) Start() error {
	for _, r := range a.instances {
		r.inst.start(r.logger)
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
