package clerkm2m

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(App{})
}

// App starts the background work of the shared state of clerk_m2m and
// clerk_m2m_token handlers (fetching Clerk's signing keys, and keeping them
// fresh; logging about minted tokens) when their configuration starts, and
// never while a configuration is only being validated. It needs no
// configuration: the handlers load it themselves.
//
// When the configuration starts, and when `caddy validate` is done with
// it, it also warns about every server that listens beyond loopback and
// carries a clerk_m2m_token handler, or proxies to a server that does (see
// exposedSidecars), and about every clerk_m2m that cannot gate what it
// seems to (see unsafeGates). When a clerk_m2m handler has shared_cache,
// it removes the expired shared verdicts from the storage every minute or
// so.
type App struct {
	// Registered while the configuration is provisioned and read when it
	// starts; Caddy does both in one goroutine, one after the other.
	registered []registered
	sweeper    *verdictSweeper // of the shared verdicts, when a handler has shared_cache
	started    bool

	ctx    caddy.Context
	logger *zap.Logger
}

// starter is shared state that starts with a configuration, and logs where
// the configuration that started last says.
type starter interface {
	start(logger *zap.Logger)
}

// registered is shared state and the logger of the handler that loaded it.
type registered struct {
	shared starter
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "clerk_m2m",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision keeps the configuration's context, to look at its servers
// when it starts.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx, a.logger = ctx, ctx.Logger()
	return nil
}

// register has shared started with the configuration, logging to logger.
func (a *App) register(shared starter, logger *zap.Logger) {
	a.registered = append(a.registered, registered{shared, logger})
}

// sweepVerdicts has the expired shared verdicts removed from storage
// while the configuration runs.
func (a *App) sweepVerdicts(storage certmagic.Storage) {
	if a.sweeper == nil {
		a.sweeper = newVerdictSweeper(storage, a.logger.Named("shared_cache"))
	}
}

// Start starts the registered state (what is still running from the
// previous configuration carries on as it was), and has it log from now on
// where this configuration says: the previous one's logs may close.
func (a *App) Start() error {
	for _, r := range a.registered {
		r.shared.start(r.logger)
	}
	if a.sweeper != nil {
		a.sweeper.start()
	}
	a.started = true
	a.warnAboutLayouts()
	return nil
}

// Cleanup warns about the layouts of a configuration that was provisioned
// in full and never started: one `caddy validate` (or `caddy adapt
// --validate`) loaded, which calls only Provision, Validate and Cleanup.
// That is the first moment every server is provisioned, as the walks
// need: this App is provisioned while the http app is, by its handlers.
func (a *App) Cleanup() error {
	if !a.started {
		a.warnAboutLayouts()
	}
	return nil
}

// warnAboutLayouts warns about the servers' layouts that expose a
// machine's authority, or let requests past a clerk_m2m unverified. A
// configuration whose http app failed to load has none to look at.
func (a *App) warnAboutLayouts() {
	httpApp, err := a.ctx.AppIfConfigured("http")
	if err != nil {
		return
	}
	servers := httpApp.(*caddyhttp.App).Servers
	a.warnAboutExposedSidecars(servers)
	a.warnAboutUnsafeGates(servers)
}

// Stop stops the sweeps of shared verdicts. An instance stops when the
// last configuration using it is cleaned up, so that a reload does not
// interrupt it.
func (a *App) Stop() error {
	if a.sweeper != nil {
		a.sweeper.halt()
	}
	return nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
