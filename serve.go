package clerkm2m

import (
	"errors"
	"net/http"
	"net/netip"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-clerk/clerk-m2m/verify"
)

// ServeHTTP verifies the request's credential and either refuses the request
// or passes it on with the identity placeholders set; it answers a request
// for a protected resource's metadata itself.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.settings.resource.serves(r.URL.Path) { // public, as clients need it to get a credential
		return h.settings.resource.serve(w, r)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	identity, err := h.verifier.VerifyRequest(r)
	if err != nil {
		var verr *verify.Error
		if !errors.As(err, &verr) { // fail closed on what verify does not promise
			verr = &verify.Error{Reason: verify.ReasonInvalid, Err: err}
		}
		if h.Optional && verr.Reason == verify.ReasonMissing {
			h.observer.verification("", "", outcomeAnonymous)
			publishIdentity(r.Context(), repl, nil)
			return next.ServeHTTP(w, r)
		}
		if clientGone(r, err) {
			return caddyhttp.Error(statusClientClosedRequest, err)
		}
		h.observer.verification(verr.TokenType, verr.Format, string(verr.Reason))
		addAccessLogFields(r, refusalLogFields{verifyErrorLogField, verr})
		return h.refuse(w, repl, verr)
	}
	h.observer.verification(identity.TokenType, identity.Format, outcomeVerified)
	publishIdentity(r.Context(), repl, identity)
	addAccessLogFields(r, accessLogFields{identity})
	if h.StripAuthorization {
		verify.StripCredentials(r.Header)
	}
	if c := h.logger.Check(zap.DebugLevel, "credential verified"); c != nil {
		c.Write(zap.String("subject", identity.Subject), zap.String("token_type", string(identity.TokenType)),
			zap.String("token_format", string(identity.Format)), zap.String("token_id", identity.TokenID))
	}
	return next.ServeHTTP(w, r)
}

// clientOf names a request's client, for verify's fair shares of the
// calls to Clerk: Caddy's client IP, which honours trusted_proxies; an
// IPv6 client by its /64, the block a host is given, so that one host
// cannot take a share for each of its addresses.
func clientOf(r *http.Request) string {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Is6() || addr.Is4In6() {
		return ip
	}
	block, _ := addr.Prefix(64)
	return block.String()
}

// Cleanup releases the shared instance; the last configuration to release
// it stops its background work.
func (h *Handler) Cleanup() error {
	if h.instance != nil {
		h.instance.release()
		h.instance = nil
	}
	return nil
}
