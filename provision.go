package clerkm2m

import (
	"slices"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-clerk/clerk-m2m/verify"
)

// Provision expands placeholders in the configuration and takes the
// shared Clerk instance it verifies with. It makes no network call.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.alerts = newAlerter(h.logger)
	var err error
	if h.settings, err = h.expand(); err != nil {
		return err
	}
	if h.observer, err = newObserver(ctx, h.DisableMetrics); err != nil {
		return err
	}
	warnIfCleartext(h.logger, h.settings.verify.APIURL)
	inst, lease, err := loadInstance(h.settings.instance, !h.DisableMetrics, h.logger)
	if err != nil {
		return err
	}
	h.instance = lease
	h.settings.verify.Pool = inst.pool
	h.settings.verify.OnCacheLookup = h.observer.cacheLookup
	h.settings.verify.ClientOf = clientOf
	if h.SharedCache {
		h.useClusterStore(ctx)
	}
	return registerWithApp(ctx, inst, h.logger)
}

// Validate builds the verifier, which refuses a configuration that cannot
// work (a type accepted with no key to verify it, a check no accepted type
// reads, and the like), naming what to set. It makes no network call.
func (h *Handler) Validate() error {
	var err error
	if h.verifier, err = verify.New(h.settings.verify); err != nil {
		return err
	}
	setup := h.verifier.Setup()
	if err := h.settings.resource.checkAccepts(setup.Accept); err != nil {
		return err
	}
	if c := h.logger.Check(zap.DebugLevel, "clerk_m2m provisioned"); c != nil {
		c.Write(zap.Any("accept", setup.Accept), zap.String("api_url", setup.APIURL),
			zap.String("opaque_tokens_verified_with", setup.OpaqueWith), zap.String("jwts_verified_with", setup.JWTsWith))
	}
	for _, caution := range setup.Cautions() {
		h.logger.Warn(caution)
	}
	if slices.Contains(setup.Accept, verify.SessionToken) && len(setup.SessionCookies) == 0 {
		// A browser's session cookies then get token_missing: said once
		// here, for a configuration that relied on them before.
		h.logger.Info("session tokens are read from the Authorization header only: without publishable_key, " +
			"which names the app whose cookies they are, no browser cookie is read")
	}
	return nil
}

// registerWithApp has the App start shared with the configuration.
func registerWithApp(ctx caddy.Context, shared starter, logger *zap.Logger) error {
	app, err := ctx.App("clerk_m2m")
	if err != nil {
		return err
	}
	app.(*App).register(shared, logger)
	return nil
}
