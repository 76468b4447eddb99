package clerkm2m

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

// The placeholders that hold the reason of a refusal, for handle_errors
// routes: of clerk_m2m, and of clerk_m2m_token.
const (
	verifyErrorPlaceholder = "http.auth.clerk_m2m.error"
	mintErrorPlaceholder   = "http.auth.clerk_m2m_token.error"
)

// defaultRetryAfter is advertised on a 503 when Clerk did not say how long
// to wait.
const defaultRetryAfter = 5 * time.Second

// statusClientClosedRequest is what a request ends with when its client
// went away before the answer: nginx's 499, which Caddy's reverse_proxy
// uses too.
const statusClientClosedRequest = 499

// clientGone reports whether err says no more than that the request's
// client went away while Clerk was being asked: no fault of Clerk's, and
// nothing to answer, count or alert on.
func clientGone(r *http.Request, err error) bool {
	return r.Context().Err() != nil && errors.Is(err, context.Canceled)
}

// refuse answers a request whose credential was not verified: it sets the
// reason placeholder and the challenge or Retry-After header, and returns
// the HTTP error for Caddy's error handling. It writes no body.
func (h *Handler) refuse(w http.ResponseWriter, repl *caddy.Replacer, verr *verify.Error) error {
	repl.Set(verifyErrorPlaceholder, string(verr.Reason))
	status := http.StatusUnauthorized
	switch verr.Reason {
	case verify.ReasonMissing:
		w.Header().Set("WWW-Authenticate", `Bearer realm="clerk"`)
	case verify.ReasonUnavailable, verify.ReasonRateLimited:
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", retryAfterSeconds(verr.RetryAfter))
		h.alerts.clerkTrouble("Clerk cannot verify credentials right now; refusing them with 503", verr.Reason, verr.Err)
	case verify.ReasonCallsLimited:
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", retryAfterSeconds(verr.RetryAfter))
		h.alerts.callsLimited(h.MaxClerkCalls)
	case verify.ReasonMisconfigured:
		status = http.StatusInternalServerError
		h.alerts.misconfigured(verr.Err)
	case verify.ReasonInsufficientScope:
		status = http.StatusForbidden
		w.Header().Set("WWW-Authenticate", h.insufficientScopeChallenge(verr))
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="clerk", error="invalid_token", error_description="`+
			quotable(verr.Description)+`"`)
	}
	if c := h.logger.Check(zap.DebugLevel, "credential refused"); c != nil {
		c.Write(zap.String("reason", string(verr.Reason)), zap.String("token_type", string(verr.TokenType)), zap.Error(verr))
	}
	return caddyhttp.Error(status, verr)
}

// insufficientScopeChallenge is the RFC 6750 challenge of a 403: the
// scopes the route requires, when that is what failed.
func (h *Handler) insufficientScopeChallenge(verr *verify.Error) string {
	challenge := `Bearer realm="clerk", error="insufficient_scope", error_description="` + quotable(verr.Description) + `"`
	if len(h.requireScopes) > 0 {
		challenge += `, scope="` + quotable(strings.Join(h.requireScopes, " ")) + `"`
	}
	return challenge
}

// refuse answers a request that could get no token: 500 when Clerk rejects
// the machine secret key, else 503 with Retry-After.
func (h *MintHandler) refuse(w http.ResponseWriter, r *http.Request, err error) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if backend.KindOf(err) == backend.KindKeyRejected {
		repl.Set(mintErrorPlaceholder, string(verify.ReasonMisconfigured))
		h.alerts.misconfigured(err)
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	repl.Set(mintErrorPlaceholder, string(verify.ReasonUnavailable))
	w.Header().Set("Retry-After", retryAfterSeconds(h.source.RetryAfter()))
	h.alerts.clerkTrouble("Clerk cannot mint M2M tokens right now; refusing requests with 503", verify.ReasonUnavailable, err)
	return caddyhttp.Error(http.StatusServiceUnavailable, err)
}

// retryAfterSeconds renders a Retry-After delay in whole seconds, rounded up.
func retryAfterSeconds(d time.Duration) string {
	if d <= 0 {
		d = defaultRetryAfter
	}
	return strconv.Itoa(int(math.Ceil(d.Seconds())))
}

// quotable keeps only the characters RFC 6750 allows in error_description
// (printable ASCII without '"' and '\').
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}

// alertInterval is how often the same kind of trouble is logged: once per
// burst, not once per request.
const alertInterval = time.Minute

// alerter logs trouble with Clerk or with the configuration at most once
// per alertInterval for each kind, so that an outage under load does not
// flood the logs.
type alerter struct {
	logger    *zap.Logger
	trouble   rate.Sometimes
	busy      rate.Sometimes
	misconfig rate.Sometimes
	shared    rate.Sometimes
}

func newAlerter(logger *zap.Logger) *alerter {
	return &alerter{
		logger:    logger,
		trouble:   rate.Sometimes{First: 1, Interval: alertInterval},
		busy:      rate.Sometimes{First: 1, Interval: alertInterval},
		misconfig: rate.Sometimes{First: 1, Interval: alertInterval},
		shared:    rate.Sometimes{First: 1, Interval: alertInterval},
	}
}

func (a *alerter) sharedCacheTrouble(op string, err error) {
	a.shared.Do(func() {
		a.logger.Warn("trouble with the shared cache of verdicts in the storage; credentials are verified with Clerk "+
			"meanwhile (logged once a minute while it lasts)", zap.String("op", op), zap.Error(err))
	})
}

func (a *alerter) callsLimited(maxCalls int) {
	a.busy.Do(func() {
		a.logger.Warn("as many calls to Clerk are in flight as max_clerk_calls allows; refusing credentials that need "+
			"one more with 503 (logged once a minute while it lasts)", zap.Int("max_clerk_calls", maxCalls),
			zap.String("reason", string(verify.ReasonCallsLimited)))
	})
}

func (a *alerter) clerkTrouble(what string, reason verify.Reason, err error) {
	a.trouble.Do(func() {
		a.logger.Warn(what+" (logged once a minute while it lasts)", zap.String("reason", string(reason)), zap.Error(err))
	})
}

func (a *alerter) misconfigured(err error) {
	a.misconfig.Do(func() {
		a.logger.Error("Clerk rejected the configured secret key; check secret_key and machine_secret_key "+
			"(logged once a minute while it lasts)", zap.Error(err))
	})
}
