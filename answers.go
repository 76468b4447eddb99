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

	"github.com/caddy-clerk/clerk-m2m/verify"
)

// The placeholders that hold the reason of a refusal, for handle_errors
// routes, and the access log's fields that do: of clerk_m2m, and of
// clerk_m2m_token.
const (
	verifyErrorPlaceholder = "http.auth.clerk_m2m.error"
	mintErrorPlaceholder   = "http.auth.clerk_m2m_token.error"
	verifyErrorLogField    = "clerk_m2m_error"
	mintErrorLogField      = "clerk_m2m_token_error"
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

// statusOf is the HTTP status both handlers answer a refusal with, by its
// reason; Clerk's trouble, and a key it rejects, say nothing of the
// request, and are alerted on (alert says what to do then).
func statusOf(reason verify.Reason) int {
	switch reason {
	case verify.ReasonInsufficientScope:
		return http.StatusForbidden
	case verify.ReasonUnavailable, verify.ReasonRateLimited, verify.ReasonCallsLimited:
		return http.StatusServiceUnavailable
	case verify.ReasonMisconfigured:
		return http.StatusInternalServerError
	}
	return http.StatusUnauthorized
}

// answer sets the reason placeholder of a refusal and the headers its
// status calls for, alerts on trouble that is no fault of the request's,
// and returns the HTTP error for Caddy's error handling; it writes no
// body. what says what is refused, for the alert.
func answer(w http.ResponseWriter, repl *caddy.Replacer, placeholder string, verr *verify.Error, alerts *alerter, what string) error {
	repl.Set(placeholder, string(verr.Reason))
	status := statusOf(verr.Reason)
	switch {
	case status == http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", retryAfterSeconds(verr.RetryAfter))
		if verr.Reason == verify.ReasonCallsLimited {
			alerts.callsLimited()
		} else {
			alerts.clerkTrouble("Clerk cannot "+what+" right now; refusing requests with 503", string(verr.Reason), verr.Err)
		}
	case status == http.StatusInternalServerError:
		alerts.misconfigured(verr.Err)
	}
	return caddyhttp.Error(status, verr)
}

// refuse answers a request whose credential was not verified, with the
// RFC 6750 challenge of a 401 or 403, which names a protected resource's
// metadata (RFC 9728 §5.1).
func (h *Handler) refuse(w http.ResponseWriter, repl *caddy.Replacer, verr *verify.Error) error {
	switch statusOf(verr.Reason) {
	case http.StatusUnauthorized:
		challenge := `Bearer realm="clerk"`
		if verr.Reason != verify.ReasonMissing {
			challenge += `, error="invalid_token", error_description="` + quotable(verr.Description) + `"`
		}
		w.Header().Set("WWW-Authenticate", challenge+h.settings.resource.challengeParam())
	case http.StatusForbidden:
		w.Header().Set("WWW-Authenticate", h.insufficientScopeChallenge(verr)+h.settings.resource.challengeParam())
	}
	if c := h.logger.Check(zap.DebugLevel, "credential refused"); c != nil {
		c.Write(zap.String("reason", string(verr.Reason)), zap.String("token_type", string(verr.TokenType)), zap.Error(verr))
	}
	return answer(w, repl, verifyErrorPlaceholder, verr, h.alerts, "verify credentials")
}

// insufficientScopeChallenge is the RFC 6750 challenge of a 403: the
// scopes the route requires, when that is what failed.
func (h *Handler) insufficientScopeChallenge(verr *verify.Error) string {
	challenge := `Bearer realm="clerk", error="insufficient_scope", error_description="` + quotable(verr.Description) + `"`
	if scopes := h.settings.verify.RequireScopes; len(scopes) > 0 {
		challenge += `, scope="` + quotable(strings.Join(scopes, " ")) + `"`
	}
	return challenge
}

// refuse answers a request that could get no token: what Clerk's failure
// means, by verify's reading of it (500 when Clerk rejects the machine
// secret key, else 503 with Retry-After).
func (h *MintHandler) refuse(w http.ResponseWriter, r *http.Request, err error) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	verr := &verify.Error{Reason: verify.ReasonOf(err), RetryAfter: h.source.RetryAfter(), Err: err}
	if verr.Reason != verify.ReasonMisconfigured {
		verr.Reason = verify.ReasonUnavailable // no refusal of Clerk's is the request's fault
	}
	addAccessLogFields(r, refusalLogFields{mintErrorLogField, verr})
	return answer(w, repl, mintErrorPlaceholder, verr, h.alerts, "mint M2M tokens")
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
