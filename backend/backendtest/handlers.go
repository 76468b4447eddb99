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
	return reply{status: status, body: mustMarshal(v)}
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

// A gate says who may call a route: the error that each kind of caller
// gets, nil for those let in.
type gate map[principalKind]*clerkError

var (
	// verifyGate lets the instance secret key and machine secret keys in.
	verifyGate = gate{
		anonymous:        &errUnauthorized,
		unknownSecretKey: &errClerkKeyInvalid,
		unknownKey:       &errMachineKeyInvalid,
	}
	// machineGate lets machine secret keys in.
	machineGate = gate{
		anonymous:        &errUnauthorized,
		instanceKey:      &errMachineKeyInvalid,
		unknownSecretKey: &errMachineKeyInvalid,
		unknownKey:       &errMachineKeyInvalid,
	}
	// instanceGate lets the instance secret key in.
	instanceGate = gate{
		anonymous:        &errUnauthorized,
		machineKey:       &errClerkKeyInvalid,
		unknownSecretKey: &errClerkKeyInvalid,
		unknownKey:       &errClerkKeyInvalid,
	}
)

// authorize identifies the caller and checks it against g. The error is a
// copy, for the caller to answer with.
func (s *Server) authorize(c *call, g gate) (principal, *clerkError) {
	who := s.identify(c.r)
	if e := g[who.kind]; e != nil {
		cp := *e
		return who, &cp
	}
	return who, nil
}

// verifier describes a route that verifies a stored credential.
type verifier struct {
	kind   credentialKind
	gate   gate
	fields []string                          // the body field of the secret, then its deprecated names
	show   func(*tokenRecord, time.Time) any // the answer for a credential found
}

var (
	// m2mVerifier serves POST /m2m_tokens/verify {"token": "mt_…"}.
	m2mVerifier = verifier{m2mKind, verifyGate, []string{"token"}, (*tokenRecord).m2mAnswer}
	// apiKeyVerifier serves POST /api_keys/verify {"secret": "ak_…"}.
	apiKeyVerifier = verifier{apiKeyKind, instanceGate, []string{"secret"}, (*tokenRecord).apiKeyAnswer}
	// oauthVerifier serves POST /oauth_applications/access_tokens/verify
	// {"access_token": "oat_…"}, or with the deprecated field name "secret".
	oauthVerifier = verifier{oauthKind, instanceGate, []string{"access_token", "secret"}, (*tokenRecord).oauthAnswer}
)

// verifyRoute returns the handler of the verify route that v describes.
func (s *Server) verifyRoute(v verifier) func(*call) reply {
	return func(c *call) reply {
		who, e := s.authorize(c, v.gate)
		if e != nil {
			return c.fail(http.StatusUnauthorized, *e)
		}
		secret, e := secretParam(c.body, v.fields...)
		if e != nil {
			return c.fail(http.StatusBadRequest, *e)
		}
		rec, now, ok := s.use(v.kind, secret, who)
		if !ok {
			return c.fail(http.StatusNotFound, errNotFound)
		}
		return jsonReply(http.StatusOK, v.show(rec, now))
	}
}

// secretParam reads the body of a verify route: a JSON object with one
// field, a non-empty string. fields are the field's name and then its
// deprecated names, of which at most one may be given.
func secretParam(body []byte, fields ...string) (string, *clerkError) {
	params, e := decodeParams(body, fields...)
	if e != nil {
		return "", e
	}
	name := fields[0]
	for _, alias := range fields[1:] {
		if _, ok := params[alias]; !ok {
			continue
		}
		if _, ok := params[name]; ok {
			e := invalidParam(alias, "left out when "+name+" is given")
			return "", &e
		}
		name = alias
	}
	var secret *string
	if e := params.decode(name, &secret, "a string"); e != nil {
		return "", e
	}
	if secret == nil || *secret == "" {
		e := missingParam(name)
		return "", &e
	}
	return *secret, nil
}

// credentialOf returns the credential a verify request names, whatever
// the route, so that a fault can be narrowed to it; "" when there is none.
func credentialOf(body []byte) string {
	var p params
	if json.Unmarshal(body, &p) != nil {
		return ""
	}
	for _, v := range []verifier{m2mVerifier, apiKeyVerifier, oauthVerifier} {
		for _, name := range v.fields {
			var secret string
			if json.Unmarshal(p[name], &secret) == nil && secret != "" {
				return secret
			}
		}
	}
	return ""
}

// createToken serves POST /m2m_tokens: a machine creates a token whose
// subject is itself and whose scopes are the machines it was granted. With
// min_remaining_ttl_seconds, an opaque token of the machine's that is still
// live for at least that long, with the same claims, is handed back instead
// of a new one, as Clerk does.
func (s *Server) createToken(c *call) reply {
	who, e := s.authorize(c, machineGate)
	if e != nil {
		return c.fail(http.StatusUnauthorized, *e)
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
		minTTL  *int64
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
	jwt := format != nil && *format == "jwt"
	if minTTL != nil && !jwt {
		if live, ok := s.liveOpaque(rec, now, time.Duration(*minTTL)*time.Second); ok {
			return jsonReply(http.StatusCreated, live)
		}
	}
	if jwt {
		// Clerk does not store JWTs, so this one can be neither verified by
		// the verify route nor revoked.
		obj := rec.asM2MToken(now)
		obj.Token = s.mintJWT(who.machineID, rec.id, now, JWTOptions{TokenOptions: opts})
		return jsonReply(http.StatusCreated, obj)
	}
	return jsonReply(http.StatusCreated, s.storeOpaque(rec, now))
}

// privateJWKS serves GET /v1/jwks, for the instance secret key only.
func (s *Server) privateJWKS(c *call) reply {
	if _, e := s.authorize(c, instanceGate); e != nil {
		return c.fail(http.StatusUnauthorized, *e)
	}
	return reply{status: http.StatusOK, body: s.jwks()}
}

// publicJWKS serves GET /.well-known/jwks.json, the Frontend API's public
// JWKS, which needs no authentication.
func (s *Server) publicJWKS(*call) reply {
	return reply{status: http.StatusOK, body: s.jwks()}
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
