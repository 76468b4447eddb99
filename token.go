package clerkm2m

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	"github.com/caddy-clerk/clerk-m2m/verify"
)

func init() {
	caddy.RegisterModule(TokenHandler{})
}

// Defaults of clerk_m2m_token.
const (
	defaultTokenTTL     = time.Hour
	defaultRenewAt      = 0.5
	defaultTokenHeader  = "Authorization"
	tokenErrorPlacehold = "http.auth.clerk_m2m_token.error"
)

// TokenHandler gives the requests it handles an M2M token of the machine
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
// settings and kept across configuration reloads. Neither the token nor
// the key is ever logged.
type TokenHandler struct {
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

	// The tokens' lifetime (Clerk's `seconds_until_expiration`).
	// Default: 1h.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// Let Clerk hand back a token of this machine that is still live for
	// at least this long instead of minting a new one (Clerk's
	// `min_remaining_ttl_seconds`, in whole seconds): each mint is billed,
	// and a fleet of sidecars, or one restarting, then shares one token.
	// Opaque tokens only (Clerk stores no JWT); less than `ttl`.
	// Default: none, every mint is a new token.
	MinRemainingTTL caddy.Duration `json:"min_remaining_ttl,omitempty"`

	// Custom claims the tokens carry. Values may be placeholders, expanded
	// when the configuration loads.
	Claims map[string]string `json:"claims,omitempty"`

	// The share of a token's lifetime after which the next one is minted:
	// above 0 and at most 1 (in the Caddyfile, also a percentage such as
	// `50%`). Default: 0.5.
	RenewAt float64 `json:"renew_at,omitempty"`

	// The request header that carries the token: `Authorization` (as
	// `Bearer <token>`) or any other (the token as is).
	// Default: `Authorization`.
	Header string `json:"header,omitempty"`

	// The budget of one call to Clerk. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Leave this handler's mints out of the `caddy_clerk_m2m_*` metrics.
	DisableMetrics bool `json:"disable_metrics,omitempty"`

	machineSecretKey string
	apiURL           string
	claims           map[string]any
	source           *mint.Source
	sourceKey        string
	logger           *zap.Logger
	alerts           *alerter
}

// CaddyModule returns the Caddy module information.
func (TokenHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.clerk_m2m_token",
		New: func() caddy.Module { return new(TokenHandler) },
	}
}

// Provision expands placeholders, applies defaults and loads the shared
// token source. It mints nothing.
func (h *TokenHandler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.alerts = newAlerter(h.logger)
	if err := h.expand(); err != nil {
		return err
	}
	if h.Format == "" {
		h.Format = "opaque"
	}
	if h.TTL == 0 {
		h.TTL = caddy.Duration(defaultTokenTTL)
	}
	if h.RenewAt == 0 {
		h.RenewAt = defaultRenewAt
	}
	if h.Header == "" {
		h.Header = defaultTokenHeader
	}
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(defaultTimeout)
	}
	if !h.DisableMetrics {
		if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
			return fmt.Errorf("registering metrics: %v", err)
		}
	}
	return h.loadSource()
}

func (h *TokenHandler) expand() error {
	repl := caddy.NewReplacer()
	if err := expandFields(repl,
		machineSecretKeyField(h.MachineSecretKey, &h.machineSecretKey),
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

// loadSource finds or makes the token source for these settings: one per
// machine, format, lifetime and claims, shared across reloads.
func (h *TokenHandler) loadSource() error {
	apiURL, err := backend.ParseURL(h.apiURL)
	if err != nil {
		return fmt.Errorf("api_url: %v", err)
	}
	token := backend.CreateM2MTokenOptions{
		Format:                 h.Format,
		SecondsUntilExpiration: int64(time.Duration(h.TTL) / time.Second),
		MinRemainingTTLSeconds: int64(time.Duration(h.MinRemainingTTL) / time.Second),
	}
	if len(h.claims) > 0 {
		token.Claims = h.claims
	}
	settings, err := json.Marshal([]any{apiURL, h.machineSecretKey, token, h.RenewAt, h.Timeout, h.DisableMetrics})
	if err != nil {
		return err
	}
	sum := sha256.Sum256(settings)
	h.sourceKey = hex.EncodeToString(sum[:])
	clientOpts := backend.Options{URL: apiURL, MachineSecretKey: h.machineSecretKey, UserAgent: userAgent()}
	sourceOpts := mint.Options{Token: token, RenewAt: h.RenewAt, Timeout: time.Duration(h.Timeout)}
	if !h.DisableMetrics {
		format := h.Format // not h: the source outlives this handler
		clientOpts.Observe = observeClerkRequest
		sourceOpts.OnMint = func(err error) { observeMint(format, err) }
	}
	shared, _, err := tokenSources.LoadOrNew(h.sourceKey, func() (caddy.Destructor, error) {
		clientOpts.HTTPClient = backend.NewHTTPClient()
		client, err := backend.New(clientOpts)
		if err != nil {
			return nil, err
		}
		return &sharedSource{Source: mint.NewSource(client, sourceOpts), httpClient: clientOpts.HTTPClient}, nil
	})
	if err != nil {
		return err
	}
	h.source = shared.(*sharedSource).Source
	return nil
}

// tokenSources are the token sources in use, shared across reloads.
var tokenSources = caddy.NewUsagePool()

// sharedSource is a token source and the connections it mints over.
type sharedSource struct {
	*mint.Source
	httpClient *http.Client
}

// Destruct stops a mint under way when the last configuration using the
// source is unloaded.
func (s *sharedSource) Destruct() error {
	s.Close()
	s.httpClient.CloseIdleConnections()
	return nil
}

// Validate checks the configuration. It makes no network call.
func (h *TokenHandler) Validate() error {
	switch {
	case h.machineSecretKey == "":
		return errors.New("minting tokens needs the machine's secret key: set machine_secret_key (or CLERK_MACHINE_SECRET_KEY)")
	case strings.HasPrefix(h.machineSecretKey, "sk_"):
		return errors.New("machine_secret_key must be a machine secret key starting with ak_: Clerk mints M2M tokens " +
			"only for a machine, never with the instance secret key (sk_…)")
	case !strings.HasPrefix(h.machineSecretKey, "ak_"):
		return errors.New("machine_secret_key must be a machine secret key starting with ak_")
	case h.Format != "opaque" && h.Format != "jwt":
		return fmt.Errorf("format must be opaque or jwt, not %q", h.Format)
	case time.Duration(h.TTL) < time.Second:
		return errors.New("ttl must be at least 1s")
	case h.MinRemainingTTL != 0 && (time.Duration(h.MinRemainingTTL) < time.Second || h.MinRemainingTTL >= h.TTL):
		return fmt.Errorf("min_remaining_ttl must be at least 1s and less than ttl (%v), not %v",
			time.Duration(h.TTL), time.Duration(h.MinRemainingTTL))
	case h.MinRemainingTTL != 0 && h.Format == "jwt":
		return errors.New("min_remaining_ttl applies to opaque tokens: Clerk stores no JWT to hand back; remove it, or use format opaque")
	case !isShare(h.RenewAt):
		return fmt.Errorf("renew_at must be a share of the lifetime, above 0 and at most 1 (or 100%%), not %v", h.RenewAt)
	case !httpguts.ValidHeaderFieldName(h.Header):
		return fmt.Errorf("header %q is not a valid header name", h.Header)
	case h.Timeout <= 0:
		return errors.New("timeout must be positive")
	}
	return nil
}

// ServeHTTP puts the machine's current token on the request, or refuses
// the request when none can be had.
func (h *TokenHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
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

// refuse answers a request that could get no token: 500 when Clerk rejects
// the machine secret key, else 503 with Retry-After.
func (h *TokenHandler) refuse(w http.ResponseWriter, r *http.Request, err error) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if backend.KindOf(err) == backend.KindKeyRejected {
		repl.Set(tokenErrorPlacehold, string(verify.ReasonMisconfigured))
		h.alerts.misconfigured(err)
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	repl.Set(tokenErrorPlacehold, string(verify.ReasonUnavailable))
	w.Header().Set("Retry-After", retryAfterSeconds(h.source.RetryAfter()))
	h.alerts.clerkTrouble("Clerk cannot mint M2M tokens right now; refusing requests with 503", verify.ReasonUnavailable, err)
	return caddyhttp.Error(http.StatusServiceUnavailable, err)
}

// Cleanup releases the shared token source.
func (h *TokenHandler) Cleanup() error {
	if h.sourceKey != "" {
		_, _ = tokenSources.Delete(h.sourceKey)
		h.sourceKey = ""
	}
	return nil
}

// isShare reports whether x is a share of a lifetime: above 0 and at most 1
// (NaN is not).
func isShare(x float64) bool { return x > 0 && x <= 1 }

// Interface guards
var (
	_ caddy.Provisioner           = (*TokenHandler)(nil)
	_ caddy.Validator             = (*TokenHandler)(nil)
	_ caddy.CleanerUpper          = (*TokenHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*TokenHandler)(nil)
)
