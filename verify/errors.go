package verify

import (
	"errors"
	"strings"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// Reason says why a credential was refused. The values are the ones a
// gateway exposes to its operators (and to handle_errors routes).
type Reason string

// The reasons for refusing a credential.
const (
	// ReasonMissing: the request carries no credential at all.
	ReasonMissing Reason = "token_missing"
	// ReasonInvalid: malformed, forged, unknown, revoked, of the wrong
	// category, or otherwise not valid.
	ReasonInvalid Reason = "token_invalid"
	// ReasonExpired: valid once, but past its expiry.
	ReasonExpired Reason = "token_expired"
	// ReasonTypeNotAccepted: a credential of a type (or format) this
	// verifier was not set up to accept.
	ReasonTypeNotAccepted Reason = "token_type_not_accepted"
	// ReasonSessionOutdated: a valid session token from a browser's
	// cookies that is not the browser's current session: its __client_uat
	// cookie (ClientUATCookie) is missing, says it signed out, or says it
	// changed session after the token was minted; or, on a development
	// instance, the browser's own cookie (DevBrowserCookie) is missing.
	ReasonSessionOutdated Reason = "session_outdated"
	// ReasonInsufficientScope: a valid credential that Options do not let
	// through (a required scope is missing, or the subject is not among the
	// allowed ones).
	ReasonInsufficientScope Reason = "insufficient_scope"
	// ReasonUnavailable: Clerk could not be asked, or its keys are not
	// available; the credential may be valid.
	ReasonUnavailable Reason = "clerk_unavailable"
	// ReasonRateLimited: Clerk asked us to slow down.
	ReasonRateLimited Reason = "clerk_rate_limited"
	// ReasonCallsLimited: verifying the credential needs a call to Clerk,
	// and as many as the Pool allows are in flight already; the credential
	// may be valid.
	ReasonCallsLimited Reason = "clerk_calls_limited"
	// ReasonMisconfigured: Clerk rejected the key this verifier is
	// configured with.
	ReasonMisconfigured Reason = "misconfigured"
)

// Error is a refused credential: every error of Verify and VerifyRequest is
// one. Its Description is a fixed, short sentence that is safe to show to
// the caller; Err carries details for operators. No part of an Error ever
// contains the credential itself.
type Error struct {
	Reason      Reason
	Description string
	// TokenType is the credential's type, when it could be told.
	TokenType TokenType
	// Format is how the credential is carried, as far as its shape tells
	// (opaque when a known prefix starts it, a JWT when it has the form of
	// one); "" when it is neither, or when there was none.
	Format Format
	// RetryAfter is how long to wait before trying again, for the Clerk
	// reasons; zero when unknown.
	RetryAfter time.Duration
	// Err is the underlying cause, if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(string(e.Reason))
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of err: its own when it is (or wraps) an
// *Error; for a failed call to Clerk's API (a *backend.Error), what that
// failure means for a credential; and ReasonInvalid otherwise, so that an
// unexpected error never counts as valid.
func ReasonOf(err error) Reason {
	if verr := asRefusal(err); verr != nil {
		return verr.Reason
	}
	return ReasonInvalid
}

// asRefusal returns err as an *Error: its own when it is (or wraps) one;
// for a failed call to Clerk's API, what that failure means for a
// credential; nil for anything else.
func asRefusal(err error) *Error {
	var verr *Error
	if errors.As(err, &verr) {
		return verr
	}
	var apiErr *backend.Error
	if errors.As(err, &apiErr) {
		return clerkFailure("", err)
	}
	return nil
}

// refusal returns err as the *Error a caller gets: any other error
// refuses the credential as invalid.
func refusal(err error) *Error {
	var verr *Error
	if !errors.As(err, &verr) {
		return &Error{Reason: ReasonInvalid, Err: err}
	}
	return verr
}

// stamped returns err carrying the credential's type and format, which
// the code that made it may not have known (a key source does not). An
// *Error may be shared (Clerk's refusals are cached), so it is copied
// rather than changed.
func stamped(err error, tokenType TokenType, format Format) error {
	if err == nil {
		return nil
	}
	verr := refusal(err)
	if verr.Format == format && verr.TokenType == tokenType {
		return err
	}
	copied := *verr
	copied.Format, copied.TokenType = format, tokenType
	return &copied
}

func invalid(tokenType TokenType, description string) *Error {
	return &Error{Reason: ReasonInvalid, TokenType: tokenType, Description: description}
}

func invalidBecause(tokenType TokenType, description string, cause error) *Error {
	return &Error{Reason: ReasonInvalid, TokenType: tokenType, Description: description, Err: cause}
}
