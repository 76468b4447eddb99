package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Kind classifies a failed call by what the caller should do about it.
type Kind int

const (
	// KindUnavailable: Clerk could not be reached, timed out, failed (5xx),
	// or answered something that is not its API. Try again later.
	KindUnavailable Kind = iota

	// KindNotFound: Clerk does not know the credential, or does not let the
	// key that asked see it (404). The credential is not valid here.
	KindNotFound

	// KindBadRequest: Clerk refused the request's content (400, 422), which
	// for a verify call means the credential is not even well formed.
	KindBadRequest

	// KindKeyRejected: Clerk rejected the secret key this client sent
	// (401/403 about the key). The configuration is wrong.
	KindKeyRejected

	// KindRateLimited: Clerk asks us to slow down (429); see RetryAfter.
	KindRateLimited
)

func (k Kind) String() string {
	switch k {
	case KindNotFound:
		return "not_found"
	case KindBadRequest:
		return "bad_request"
	case KindKeyRejected:
		return "key_rejected"
	case KindRateLimited:
		return "rate_limited"
	default:
		return "unavailable"
	}
}

// keyErrorCodes are the error codes with which Clerk says the key sent in
// the Authorization header is wrong, as opposed to the credential being
// verified. A 401 or 403 without a code is also taken to be about the key.
var keyErrorCodes = map[string]bool{
	"clerk_key_invalid":          true,
	"machine_secret_key_invalid": true,
	"secret_key_invalid":         true,
	"unauthorized":               true,
	"authentication_invalid":     true,
}

// Error is a failed Backend API call. It never contains a secret key or the
// credential that was being verified.
type Error struct {
	Method string // HTTP method of the call
	Path   string // path of the call, such as "/m2m_tokens/verify"
	Status int    // HTTP status of Clerk's answer; 0 when there was none

	// From Clerk's error body, when it sent one.
	Code        string // first error's code, such as "resource_not_found"
	Message     string // first error's message
	LongMessage string // first error's long_message

	// TraceID identifies the call in Clerk's support requests: the body's
	// clerk_trace_id, else the Clerk-Trace-Id or CF-Ray response header.
	TraceID string

	// RetryAfter is how long Clerk asked us to wait (Retry-After), if it did.
	RetryAfter time.Duration

	// Err is the underlying transport or decoding error, if any.
	Err error
}

// Kind tells what sort of failure this is.
func (e *Error) Kind() Kind {
	switch {
	case e.Status == http.StatusNotFound:
		return KindNotFound
	case e.Status == http.StatusBadRequest || e.Status == http.StatusUnprocessableEntity:
		return KindBadRequest
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		if e.Code == "" || keyErrorCodes[e.Code] {
			return KindKeyRejected
		}
		return KindNotFound
	case e.Status == http.StatusTooManyRequests:
		return KindRateLimited
	default:
		return KindUnavailable
	}
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "clerk backend API %s %s", e.Method, e.Path)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": status %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ", code %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.TraceID != "" {
		fmt.Fprintf(&b, " (trace id %s)", e.TraceID)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// retryable reports whether another attempt might succeed: the request did
// not get through, or Clerk failed on its side. A context that is done is
// not worth retrying.
func (e *Error) retryable() bool {
	if errors.Is(e.Err, context.Canceled) || errors.Is(e.Err, context.DeadlineExceeded) {
		return false
	}
	if e.Status == 0 {
		return e.Err != nil
	}
	return e.Status >= 500 && e.Status != http.StatusNotImplemented
}

// KindOf returns the Kind of err when it is (or wraps) an *Error, and
// KindUnavailable for anything else.
func KindOf(err error) Kind {
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr.Kind()
	}
	return KindUnavailable
}

// errorBody is Clerk's error answer (ClerkErrors in the API spec).
type errorBody struct {
	Errors []struct {
		Code        string `json:"code"`
		Message     string `json:"message"`
		LongMessage string `json:"long_message"`
	} `json:"errors"`
	TraceID string `json:"clerk_trace_id"`
}

// parseError builds the Error for a non-2xx answer. A body that is not
// Clerk's error shape is not an error in itself: the status still tells.
func parseError(method, path string, resp *http.Response, data []byte) *Error {
	e := &Error{
		Method:     method,
		Path:       path,
		Status:     resp.StatusCode,
		RetryAfter: ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	var body errorBody
	if json.Unmarshal(data, &body) == nil {
		if len(body.Errors) > 0 {
			e.Code = printable(body.Errors[0].Code)
			e.Message = printable(body.Errors[0].Message)
			e.LongMessage = printable(body.Errors[0].LongMessage)
		}
		e.TraceID = printable(body.TraceID)
	}
	if e.TraceID == "" {
		e.TraceID = printable(resp.Header.Get("Clerk-Trace-Id"))
	}
	if e.TraceID == "" {
		e.TraceID = printable(resp.Header.Get("CF-Ray"))
	}
	return e
}

// maxRetryAfter caps what Clerk can ask of us, so a bogus header cannot turn
// into a day-long wait advertised to our own clients.
const maxRetryAfter = 10 * time.Minute

// ParseRetryAfter reads a Retry-After header value (delay in seconds, or an
// HTTP date) relative to now. It returns 0 when the value is absent or
// unusable, and at most ten minutes.
func ParseRetryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(value, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		d = time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
	} else if when, err := http.ParseTime(value); err == nil {
		d = when.Sub(now).Round(time.Second)
	}
	return max(0, min(d, maxRetryAfter))
}

// printable keeps a string from Clerk's answer safe to log and short: at most
// 200 bytes, printable ASCII only.
func printable(s string) string {
	const maxLen = 200
	if len(s) > maxLen {
		s = s[:maxLen]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
}
