package clerkm2m

import (
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-clerk/clerk-m2m/verify"
)

// addAccessLogFields puts fields in the request's access log entry: a
// verified credential's type and id (never the credential), next to the
// user_id Caddy takes from {http.auth.user.id}; or a refusal's reason.
// They go in one field, because every field added clears a map Caddy
// keeps for the request. A server that keeps no access log gets none at
// all (nor does a request that came to no server, as
// caddyhttp.PrepareRequest allows).
func addAccessLogFields(r *http.Request, fields zapcore.ObjectMarshaler) {
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && (srv == nil || srv.Logs == nil) {
		return
	}
	if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.Inline(fields))
	}
}

// accessLogFields are a verified credential's fields of an access log
// entry, at its top level.
type accessLogFields struct{ identity *verify.Identity }

// accessLogged are the identity's fields an access log entry gets, by
// their names.
var accessLogged = []string{"token_type", "token_id"}

func (f accessLogFields) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for _, name := range accessLogged {
		value, _ := f.identity.Field(name)
		enc.AddString(name, value)
	}
	return nil
}

// refusalLogFields are a refusal's fields of an access log entry, at its
// top level: the reason, under the name of the handler's placeholder with
// underscores (clerk_m2m_error, clerk_m2m_token_error), and the
// credential's type when it could be told.
type refusalLogFields struct {
	name string
	verr *verify.Error
}

func (f refusalLogFields) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString(f.name, string(f.verr.Reason))
	if f.verr.TokenType != "" {
		enc.AddString("token_type", string(f.verr.TokenType))
	}
	return nil
}
