package backendtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
)

// clerkError is one entry of a Clerk error body.
type clerkError struct {
	Message     string     `json:"message"`
	LongMessage string     `json:"long_message"`
	Code        string     `json:"code"`
	Meta        *paramMeta `json:"meta,omitempty"`
}

type paramMeta struct {
	ParamName string `json:"param_name"`
}

var (
	errUnauthorized = clerkError{
		Message:     "Unauthorized",
		LongMessage: "The request is missing a valid Authorization header.",
		Code:        "unauthorized",
	}
	errClerkKeyInvalid = clerkError{
		Message:     "The provided Clerk Secret Key is invalid. Make sure that your Clerk Secret Key is correct.",
		LongMessage: "The provided Clerk Secret Key is invalid. Make sure that your Clerk Secret Key is correct.",
		Code:        "clerk_key_invalid",
	}
	errMachineKeyInvalid = clerkError{
		Message:     "The provided Machine Secret Key is invalid. Make sure that your Machine Secret Key is correct.",
		LongMessage: "The provided Machine Secret Key is invalid. Make sure that your Machine Secret Key is correct.",
		Code:        "machine_secret_key_invalid",
	}
	errNotFound = clerkError{
		Message:     "Not found",
		LongMessage: "Resource not found",
		Code:        "resource_not_found",
	}
	errMethodNotAllowed = clerkError{
		Message:     "Method not allowed",
		LongMessage: "This endpoint does not support the request's HTTP method.",
		Code:        "method_not_allowed",
	}
	errNotJSONObject = clerkError{
		Message:     "Bad request",
		LongMessage: "The request body must be a JSON object.",
		Code:        "bad_request",
	}
)

// statusError is the error a Fault answers with: the status text in Clerk's
// snake_case code style, e.g. 503 → "service_unavailable".
func statusError(status int) clerkError {
	text := http.StatusText(status)
	if text == "" {
		text = fmt.Sprintf("Status %d", status)
	}
	return clerkError{
		Message:     text,
		LongMessage: text,
		Code:        strings.ToLower(strings.ReplaceAll(text, " ", "_")),
	}
}

func missingParam(name string) clerkError {
	return clerkError{
		Message:     "is missing",
		LongMessage: name + " must be included.",
		Code:        "form_param_missing",
		Meta:        &paramMeta{ParamName: name},
	}
}

func unknownParam(name string) clerkError {
	return clerkError{
		Message:     "is unknown",
		LongMessage: name + " is not a valid parameter for this request.",
		Code:        "form_param_unknown",
		Meta:        &paramMeta{ParamName: name},
	}
}

func invalidParam(name, want string) clerkError {
	return clerkError{
		Message:     "is invalid",
		LongMessage: name + " must be " + want + ".",
		Code:        "bad_request",
		Meta:        &paramMeta{ParamName: name},
	}
}

// fail answers status with a Clerk error body carrying the call's trace id.
func (c *call) fail(status int, e clerkError) reply {
	return jsonReply(status, struct {
		Errors  []clerkError `json:"errors"`
		TraceID string       `json:"clerk_trace_id"`
	}{[]clerkError{e}, c.traceID})
}

func jsonReply(status int, v any) reply {
	return reply{status, mustMarshal(v)}
}

// principal is who a request authenticates as.
type principal struct {
	kind      principalKind
	machineID string // for machineKey
}

type principalKind int

const (
	anonymous        principalKind = iota // no or malformed Authorization
	instanceKey                           // the instance secret key
	machineKey                            // a machine secret key
	unknownSecretKey                      // some other "sk_" key
	unknownKey                            // anything else
)

func (s *Server) identify(r *http.Request) principal {
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return principal{kind: anonymous}
	}
	if key == s.secretKey {
		return principal{kind: instanceKey}
	}
	s.mu.Lock()
	id, ok := s.machineKeys[key]
	s.mu.Unlock()
	switch {
	case ok:
		return principal{kind: machineKey, machineID: id}
	case strings.HasPrefix(key, "sk_"):
		return principal{kind: unknownSecretKey}
	}
	return principal{kind: unknownKey}
}

// verifyToken serves POST /m2m_tokens/verify {"token": "mt_…"}.
func (s *Server) verifyToken(c *call) reply {
	who := s.identify(c.r)
	switch who.kind {
	case anonymous:
		return c.fail(http.StatusUnauthorized, errUnauthorized)
	case unknownSecretKey:
		return c.fail(http.StatusUnauthorized, errClerkKeyInvalid)
	case unknownKey:
		return c.fail(http.StatusUnauthorized, errMachineKeyInvalid)
	}
	params, e := decodeParams(c.body, "token")
	if e != nil {
		return c.fail(http.StatusBadRequest, *e)
	}
	var token *string
	if e := params.decode("token", &token, "a string"); e != nil {
		return c.fail(http.StatusBadRequest, *e)
	}
	if token == nil || *token == "" {
		return c.fail(http.StatusBadRequest, missingParam("token"))
	}
	obj, ok := s.useToken(*token, who)
	if !ok {
		return c.fail(http.StatusNotFound, errNotFound)
	}
	return jsonReply(http.StatusOK, obj)
}

// createToken serves POST /m2m_tokens: a machine creates a token whose
// subject is itself and whose scopes are the machines it was granted.
func (s *Server) createToken(c *call) reply {
	who := s.identify(c.r)
	switch who.kind {
	case anonymous:
		return c.fail(http.StatusUnauthorized, errUnauthorized)
	case machineKey:
	default:
		return c.fail(http.StatusUnauthorized, errMachineKeyInvalid)
	}
	body := c.body
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}") // every parameter is optional
	}
	params, e := decodeParams(body, "token_format", "seconds_until_expiration", "claims", "min_remaining_ttl_seconds")
	if e != nil {
		return c.fail(http.StatusBadRequest, *e)
	}
	var (
		format  *string
		seconds *float64
		claims  map[string]any
		minTTL  *int64 // accepted for compatibility; the fake never reuses tokens
	)
	for _, e := range []*clerkError{
		params.decode("token_format", &format, `"opaque" or "jwt"`),
		params.decode("seconds_until_expiration", &seconds, "a positive number"),
		params.decode("claims", &claims, "an object"),
		params.decode("min_remaining_ttl_seconds", &minTTL, "a non-negative integer"),
	} {
		if e != nil {
			return c.fail(http.StatusBadRequest, *e)
		}
	}
	switch {
	case format != nil && *format != "opaque" && *format != "jwt":
		return c.fail(http.StatusBadRequest, invalidParam("token_format", `"opaque" or "jwt"`))
	case seconds != nil && *seconds <= 0:
		return c.fail(http.StatusBadRequest, invalidParam("seconds_until_expiration", "a positive number"))
	case minTTL != nil && *minTTL < 0:
		return c.fail(http.StatusBadRequest, invalidParam("min_remaining_ttl_seconds", "a non-negative integer"))
	}

	opts := TokenOptions{Scopes: s.grantedScopes(who.machineID), Claims: claims, NoExpiry: seconds == nil}
	if seconds != nil {
		opts.TTL = time.Duration(*seconds * float64(time.Second))
	}
	now := s.now()
	rec := newTokenRecord(who.machineID, opts, now)
	if format != nil && *format == "jwt" {
		// Clerk does not store JWTs, so this one can be neither verified by
		// the verify route nor revoked.
		obj := rec.object(now)
		obj.Token = s.mintJWT(who.machineID, rec.id, now, JWTOptions{TokenOptions: opts})
		return jsonReply(http.StatusCreated, obj)
	}
	return jsonReply(http.StatusCreated, s.storeOpaque(rec, now))
}

// privateJWKS serves GET /v1/jwks, for the instance secret key only.
func (s *Server) privateJWKS(c *call) reply {
	switch s.identify(c.r).kind {
	case anonymous:
		return c.fail(http.StatusUnauthorized, errUnauthorized)
	case instanceKey:
		return reply{http.StatusOK, s.jwks()}
	}
	return c.fail(http.StatusUnauthorized, errClerkKeyInvalid)
}

// publicJWKS serves GET /.well-known/jwks.json, the Frontend API's public
// JWKS, which needs no authentication.
func (s *Server) publicJWKS(*call) reply {
	return reply{http.StatusOK, s.jwks()}
}

// params are the top-level fields of a JSON request body.
type params map[string]json.RawMessage

// decodeParams parses body as a JSON object whose fields are all among
// allowed.
func decodeParams(body []byte, allowed ...string) (params, *clerkError) {
	var p params
	if err := json.Unmarshal(body, &p); err != nil || p == nil {
		e := errNotJSONObject
		return nil, &e
	}
	for _, name := range slices.Sorted(maps.Keys(p)) {
		if !slices.Contains(allowed, name) {
			e := unknownParam(name)
			return nil, &e
		}
	}
	return p, nil
}

// decode stores field name, if present, in dst (numbers as json.Number when
// dst holds an any); want describes the expected value for the error.
func (p params) decode(name string, dst any, want string) *clerkError {
	raw, ok := p[name]
	if !ok {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(dst); err != nil {
		e := invalidParam(name, want)
		return &e
	}
	return nil
}
