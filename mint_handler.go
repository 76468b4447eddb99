package clerkm2m

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/mint"
)

func init() {
	caddy.RegisterModule(MintHandler{})
}

// Defaults of clerk_m2m_token that package mint does not already have.
const (
	defaultTokenFormat = "opaque"
	defaultTokenTTL    = time.Hour
	defaultTokenHeader = "Authorization"

	// maxMintTimeout bounds timeout, as clerk_m2m's is bounded.
	maxMintTimeout = time.Hour
)

// MintHandler gives the requests it handles an M2M token of the machine
// it stands for, minted by Clerk, so that the service behind (another
// service's clerk_m2m gateway, say) sees a verified caller: Caddy as the
// sidecar on the calling end. It sets the token in `Authorization: Bearer
// <token>` (or another header, as is), replacing whatever the client sent.
//
// The token is minted when first needed (once, however many requests
// arrive at the same time), reused until a share of its lifetime has
// passed (`renew_at`), then renewed in the background while requests go on
// with the current one. If Clerk cannot mint, requests keep the current
// token while it is valid; when there is none, they are refused with 503
// and `Retry-After` (500 when Clerk rejects the machine secret key), and
// `{http.auth.clerk_m2m_token.error}` says which (`clerk_unavailable`,
// `misconfigured`). The token is shared by all handlers with the same
// settings and kept across configuration reloads. This handler never logs
// the token or the key; in a `header` other than Authorization, though,
// Caddy's reverse_proxy logs the token at DEBUG (it redacts only
// Authorization and cookies), which the handler warns about when it loads.
type MintHandler struct {
	// The secret key of the machine the tokens are minted for (`ak_…`);
	// only a machine secret key may mint.
	// Default: `{env.CLERK_MACHINE_SECRET_KEY}`.
	MachineSecretKey string `json:"machine_secret_key,omitempty"`

	// The base URL of Clerk's Backend API.
	// Default: `{env.CLERK_API_URL}`, else `https://api.clerk.com`.
	APIURL string `json:"api_url,omitempty"`

	// `opaque` (an `mt_…` token the callee verifies with Clerk) or `jwt`
	// (verified by the callee without a call to Clerk). Default: `opaque`.
	Format string `json:"format,omitempty"`

	// The tokens' lifetime (Clerk's `seconds_until_expiration`): at least
	// `30s`, three times the 10 seconds before expiry in which a token is no
	// longer handed out (so 0 is refused), and at most `24h`: a token that
	// leaks works until it expires, and the handler renews its tokens
	// itself. Default: `1h`.
	TTL *caddy.Duration `json:"ttl,omitempty"`

	// Let Clerk hand back a token of this machine that is still live for
	// at least this long instead of minting a new one (Clerk's
	// `min_remaining_ttl_seconds`, in whole seconds): each mint is billed,
	// and a fleet of sidecars, or one restarting, then shares one token.
	// Clerk hands back any live token of the machine with the same claims,
	// whoever minted it: one is used only if it expires within `ttl` of
	// now; one that outlives it (one that never expires, one minted with a
	// longer `ttl`) is not, and a new token is minted at once, which costs
	// one more billed mint each time (logged at WARN). Opaque tokens only
	// (Clerk stores no JWT); less than `ttl`. Without it, or with 0,
	// every mint is a new token. Default: none.
	MinRemainingTTL caddy.Duration `json:"min_remaining_ttl,omitempty"`

	// Custom claims the tokens carry. Values may be placeholders, expanded
	// when the configuration loads. Default: none.
	Claims map[string]string `json:"claims,omitempty"`

	// The share of a token's lifetime after which the next one is minted:
	// above 0 and at most 1 (in the Caddyfile, also a percentage such as
	// `50%`). Default: `0.5`.
	RenewAt float64 `json:"renew_at,omitempty"`

	// The request header that carries the token: `Authorization` (as
	// `Bearer <token>`) or any other (the token as is). Caddy's
	// reverse_proxy logs the request headers at DEBUG and redacts
	// Authorization only: in another header the token shows in clear in
	// that log, and the handler warns when it loads.
	// Default: `Authorization`.
	Header string `json:"header,omitempty"`

	// The budget of one call to Clerk. 0 would give Clerk no time, and is
	// refused; so is more than `1h`. Default: `5s`.
	Timeout *caddy.Duration `json:"timeout,omitempty"`

	// Leave this handler out of the `caddy_clerk_m2m_*` metrics. It still
	// shares the token of the other handlers with the same settings, whose
	// mints are counted while one of those handlers is. Default: off.
	DisableMetrics bool `json:"disable_metrics,omitempty"`

	machineSecretKey string
	apiURL           string
	claims           map[string]any
	source           *tokenSource
	sourceLease      *lease
	logger           *zap.Logger
	alerts           *alerter
}

// CaddyModule returns the Caddy module information.
func (MintHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.clerk_m2m_token",
		New: func() caddy.Module { return new(MintHandler) },
	}
}

// Provision expands placeholders, applies defaults and loads the shared
// token source. It mints nothing.
func (h *MintHandler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.alerts = newAlerter(h.logger)
	if err := h.expand(); err != nil {
		return err
	}
	h.applyDefaults()
	// What this handler does that is counted, the source does (see
	// sharers); the collectors must still be in this configuration's
	// registry for it to show.
	if _, err := newObserver(ctx, h.DisableMetrics); err != nil {
		return err
	}
	h.warnIfLoggedInClear()
	if err := h.loadSource(); err != nil {
		return err
	}
	return registerWithApp(ctx, h.source, h.logger)
}

// warnIfLoggedInClear warns that a token in a header of its own is logged
// by Caddy: reverse_proxy's DEBUG "upstream roundtrip" line shows the
// request's headers, and redacts only Authorization, Cookie and their kin,
// a list a module cannot extend.
func (h *MintHandler) warnIfLoggedInClear() {
	if strings.EqualFold(h.Header, defaultTokenHeader) {
		return
	}
	h.logger.Warn("the minted M2M token goes in a header that Caddy does not redact: reverse_proxy's DEBUG log "+
		"(\"upstream roundtrip\") shows it in clear; use header Authorization, or keep DEBUG logging off",
		zap.String("header", h.Header))
}

func (h *MintHandler) applyDefaults() {
	if h.Format == "" {
		h.Format = defaultTokenFormat
	}
	if h.TTL == nil {
		h.TTL = new(caddy.Duration(defaultTokenTTL))
	}
	if h.RenewAt == 0 {
		h.RenewAt = mint.DefaultRenewAt
	}
	if h.Header == "" {
		h.Header = defaultTokenHeader
	}
	if h.Timeout == nil {
		h.Timeout = new(caddy.Duration(mint.DefaultTimeout))
	}
}

func (h *MintHandler) expand() error {
	repl := caddy.NewReplacer()
	if err := expandFields(repl,
		// No off: a token is minted with this key or not at all.
		field{name: "machine_secret_key", configured: h.MachineSecretKey, whenUnset: "{env.CLERK_MACHINE_SECRET_KEY}", dest: &h.machineSecretKey},
		apiURLField(h.APIURL, &h.apiURL),
	); err != nil {
		return err
	}
	h.claims = make(map[string]any, len(h.Claims))
	for name, value := range h.Claims {
		expanded, err := repl.ReplaceOrErr(value, false, true)
		if err != nil {
			return fmt.Errorf("claims: %s: %v", name, err)
		}
		h.claims[name] = expanded
	}
	return nil
}

// loadSource finds or makes the token source for these settings, shared
// across reloads (see tokenSourceSettings).
func (h *MintHandler) loadSource() error {
	apiURL, err := backend.ParseURL(h.apiURL)
	if err != nil {
		return fmt.Errorf("api_url: %v", err)
	}
	h.source, h.sourceLease, err = loadTokenSource(tokenSourceSettings{
		APIURL:           apiURL,
		MachineSecretKey: h.machineSecretKey,
		Token:            h.tokenOptions(),
		RenewAt:          h.RenewAt,
		Timeout:          time.Duration(*h.Timeout),
	}, !h.DisableMetrics, h.logger)
	return err
}

// tokenOptions is what Clerk is asked to mint: the token these settings
// describe (also for `caddy clerk-m2m mint`).
func (h *MintHandler) tokenOptions() backend.CreateM2MTokenOptions {
	token := backend.CreateM2MTokenOptions{
		Format:                 h.Format,
		SecondsUntilExpiration: int64(time.Duration(*h.TTL) / time.Second),
		MinRemainingTTLSeconds: int64(time.Duration(h.MinRemainingTTL) / time.Second),
	}
	if len(h.claims) > 0 {
		token.Claims = h.claims
	}
	return token
}

// Validate checks the configuration. It makes no network call.
func (h *MintHandler) Validate() error {
	switch {
	case h.machineSecretKey == "":
		return errors.New("minting tokens needs the machine's secret key: set machine_secret_key (or CLERK_MACHINE_SECRET_KEY)")
	case backend.CheckMachineSecretKey(h.machineSecretKey) != nil:
		return fmt.Errorf("%v: Clerk mints M2M tokens only for a machine", backend.CheckMachineSecretKey(h.machineSecretKey))
	case h.Format != "opaque" && h.Format != "jwt":
		return fmt.Errorf("format must be opaque or jwt, not %q", h.Format)
	case time.Duration(*h.TTL) < mint.MinLifetime:
		return fmt.Errorf("ttl must be at least %v, not %v: a token is no longer handed out in the last %v of its life, "+
			"and a shorter one would spend most of it there", mint.MinLifetime, time.Duration(*h.TTL), mint.DefaultMargin)
	case time.Duration(*h.TTL) > mint.MaxLifetime:
		return fmt.Errorf("ttl must be at most %v, not %v: a token that leaks works until it expires, and tokens are "+
			"renewed before they do", mint.MaxLifetime, time.Duration(*h.TTL))
	case h.MinRemainingTTL != 0 && (time.Duration(h.MinRemainingTTL) < time.Second || h.MinRemainingTTL >= *h.TTL):
		return fmt.Errorf("min_remaining_ttl must be at least 1s and less than ttl (%v), not %v",
			time.Duration(*h.TTL), time.Duration(h.MinRemainingTTL))
	case h.MinRemainingTTL != 0 && h.Format == "jwt":
		return errors.New("min_remaining_ttl applies to opaque tokens: Clerk stores no JWT to hand back; remove it, or use format opaque")
	case !isShare(h.RenewAt):
		return fmt.Errorf("renew_at must be a share of the lifetime, above 0 and at most 1 (or 100%%), not %v", h.RenewAt)
	case !httpguts.ValidHeaderFieldName(h.Header):
		return fmt.Errorf("header %q is not a valid header name", h.Header)
	case *h.Timeout < 0:
		return errors.New("timeout must not be negative")
	case *h.Timeout == 0:
		return fmt.Errorf("timeout 0 would give Clerk no time to mint: set a duration, or leave timeout out for %v", mint.DefaultTimeout)
	case time.Duration(*h.Timeout) > maxMintTimeout:
		return fmt.Errorf("timeout must be at most %v, not %v: a request would wait that long for a token",
			maxMintTimeout, time.Duration(*h.Timeout))
	}
	return nil
}

// ServeHTTP puts the machine's current token on the request, or refuses
// the request when none can be had.
func (h *MintHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	token, err := h.source.Token(r.Context())
	if clientGone(r, err) {
		return caddyhttp.Error(statusClientClosedRequest, err)
	}
	if err != nil {
		return h.refuse(w, r, err)
	}
	if strings.EqualFold(h.Header, defaultTokenHeader) {
		token = "Bearer " + token
	}
	r.Header.Set(h.Header, token)
	return next.ServeHTTP(w, r)
}

// Cleanup releases the shared token source.
func (h *MintHandler) Cleanup() error {
	if h.sourceLease != nil {
		h.sourceLease.release()
		h.sourceLease = nil
	}
	return nil
}

// isShare reports whether x is a share of a lifetime: above 0 and at most 1
// (NaN is not).
func isShare(x float64) bool { return x > 0 && x <= 1 }

// Interface guards
var (
	_ caddy.Provisioner           = (*MintHandler)(nil)
	_ caddy.Validator             = (*MintHandler)(nil)
	_ caddy.CleanerUpper          = (*MintHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*MintHandler)(nil)
)
