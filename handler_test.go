package clerkm2m

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	logobserver "go.uber.org/zap/zaptest/observer"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

// asCaddyWould gives req the context Caddy's server gives every request:
// its replacer, its variables (with the two Caddy always sets), room for
// extra access log fields, and the server (here one without access log).
func asCaddyWould(req *http.Request, repl *caddy.Replacer) *http.Request {
	ctx := context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{
		caddyhttp.TrustedProxyVarKey: false, caddyhttp.ClientIPVarKey: "192.0.2.1"})
	ctx = context.WithValue(ctx, caddyhttp.ExtraLogFieldsCtxKey, new(caddyhttp.ExtraLogFields))
	ctx = context.WithValue(ctx, caddyhttp.ServerCtxKey, new(caddyhttp.Server))
	return req.WithContext(ctx)
}

// through runs one request through h with an earlier handler's identity
// already in the replacer, and returns what the next handler could read.
func through(t *testing.T, h *Handler, authorization string) (map[string]string, error) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	repl := caddy.NewReplacer()
	repl.Set(identityPlaceholderPrefix+"id", "user_from_an_earlier_handler")
	repl.Set(identityPlaceholderPrefix+"role", "admin")
	req = asCaddyWould(req, repl)
	var seen map[string]string
	err := h.ServeHTTP(httptest.NewRecorder(), req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		seen = map[string]string{}
		for _, name := range []string{"id", "role", "token_type", "claims", "claims.job"} {
			seen[name], _ = repl.GetString(identityPlaceholderPrefix + name)
		}
		for _, name := range []string{"id", "token_type", "claims"} {
			_, known := repl.GetString(identityPlaceholderPrefix + name)
			require.True(t, known, "{%s%s} must be known, even when empty", identityPlaceholderPrefix, name)
		}
		return nil
	}))
	return seen, err
}

func TestIdentityReplacesWhateverWasThere(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	gateway := clerk.NewMachine("gateway")
	h := &Handler{MachineSecretKey: gateway.SecretKey, APIURL: clerk.URL, Optional: true}
	require.NoError(t, provision(t, h))

	seen, err := through(t, h, "")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"id": "", "role": "", "token_type": "", "claims": "", "claims.job": ""}, seen,
		"anonymous: no identity, not even an earlier one")

	token, _ := clerk.CreateM2MToken(clerk.NewMachine("caller"), backendtest.TokenOptions{
		Scopes: []string{gateway.ID}, Claims: map[string]any{"job": "sync"}})
	seen, err = through(t, h, "Bearer "+token)
	require.NoError(t, err)
	assert.Equal(t, "m2m_token", seen["token_type"])
	assert.NotEqual(t, "user_from_an_earlier_handler", seen["id"])
	assert.Equal(t, "sync", seen["claims.job"])
	assert.Empty(t, seen["role"], "no placeholder of an earlier identity survives")

	_, err = through(t, h, "Bearer mt_0123456789abcdef0123456789abcdef")
	var handlerErr caddyhttp.HandlerError
	require.ErrorAs(t, err, &handlerErr)
	assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
}

// TestALaterHandlersIdentityIsSeen: with two clerk_m2m handlers on one
// request, the placeholders answer with the identity of the one that ran
// last, also when the first let the request through anonymously.
func TestALaterHandlersIdentityIsSeen(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	machines := &Handler{MachineSecretKey: clerk.NewMachine("gateway").SecretKey, APIURL: clerk.URL, Optional: true}
	require.NoError(t, provision(t, machines))
	users := &Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, Accept: []string{"session_token"},
		AuthorizedParties: []string{"https://app.example.com"}}
	require.NoError(t, provision(t, users))

	const user = "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr"
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.AddCookie(&http.Cookie{Name: "__session", Value: clerk.MintSessionJWT(user, backendtest.SessionOptions{AuthorizedParty: "https://app.example.com"})})
	req.AddCookie(&http.Cookie{Name: "__client_uat", Value: "1700000000"})
	repl := caddy.NewReplacer()
	req = asCaddyWould(req, repl)
	var seen []string
	read := func() {
		id, _ := repl.GetString(identityPlaceholderPrefix + "id")
		tokenType, _ := repl.GetString(identityPlaceholderPrefix + "token_type")
		seen = append(seen, id+" "+tokenType)
	}
	err := machines.ServeHTTP(httptest.NewRecorder(), req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		read()
		return users.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
			read()
			return nil
		}))
	}))
	require.NoError(t, err)
	assert.Equal(t, []string{" ", user + " session_token"}, seen)
	assert.Empty(t, repl.ReplaceAll("{http.vars."+identityHolderVar+"}", ""), "the holder never renders")
}

// TestCookieSessionsNeedASignedInBrowser: a session token from the
// __session cookie counts only with the __client_uat cookie of a browser
// signed in no later than the token was minted; one from the header needs
// none.
func TestCookieSessionsNeedASignedInBrowser(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	h := &Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, Accept: []string{"session_token"}}
	require.NoError(t, provision(t, h))
	session := clerk.MintSessionJWT("user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", backendtest.SessionOptions{})
	issued := time.Now().Unix() // at most the token's iat
	for name, tc := range map[string]struct {
		header, cookie string
		reason         string // "" for let through
	}{
		"signed in before the token": {"", fmt.Sprintf("__session=%s; __client_uat=%d", session, issued-60), ""},
		"no __client_uat":            {"", "__session=" + session, "session_outdated"},
		"signed out":                 {"", "__session=" + session + "; __client_uat=0", "session_outdated"},
		"changed after the token":    {"", fmt.Sprintf("__session=%s; __client_uat=%d", session, issued+3600), "session_outdated"},
		"from the header":            {"Bearer " + session, "__client_uat=0", ""},
	} {
		t.Run(name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			req.Header.Set("Cookie", tc.cookie)
			repl := caddy.NewReplacer()
			recorder := httptest.NewRecorder()
			err := h.ServeHTTP(recorder, asCaddyWould(req, repl), caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil }))
			if tc.reason == "" {
				require.NoError(t, err)
				return
			}
			var handlerErr caddyhttp.HandlerError
			require.ErrorAs(t, err, &handlerErr)
			assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
			reason, _ := repl.GetString(verifyErrorPlaceholder)
			assert.Equal(t, tc.reason, reason)
			assert.Contains(t, recorder.Header().Get("WWW-Authenticate"), `error="invalid_token"`)
		})
	}
}

// TestAClientThatLeftIsNoClerkOutage: when the client goes away while Clerk
// is being asked, the request ends with 499, and neither handler reports
// Clerk as failing.
func TestAClientThatLeftIsNoClerkOutage(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	gateway := clerk.NewMachine("gateway")
	token, _ := clerk.CreateM2MToken(clerk.NewMachine("caller"), backendtest.TokenOptions{Scopes: []string{gateway.ID}})
	clerk.SetFault(backendtest.Fault{Hang: true})
	verifier := &Handler{MachineSecretKey: gateway.SecretKey, APIURL: clerk.URL}
	require.NoError(t, provision(t, verifier))
	minter := &MintHandler{MachineSecretKey: clerk.NewMachine("minter").SecretKey, APIURL: clerk.URL}
	require.NoError(t, provision(t, minter))
	core, warnings := logobserver.New(zap.WarnLevel)
	verifier.alerts, minter.alerts = newAlerter(zap.New(core)), newAlerter(zap.New(core))
	unavailable := func() float64 {
		return testutil.ToFloat64(metrics.verifications.WithLabelValues("m2m_token", "opaque", string(verify.ReasonUnavailable)))
	}
	before := unavailable()

	for name, handler := range map[string]caddyhttp.MiddlewareHandler{"clerk_m2m": verifier, "clerk_m2m_token": minter} {
		ctx, leave := context.WithCancel(context.Background())
		req := asCaddyWould(httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil), caddy.NewReplacer())
		req.Header.Set("Authorization", "Bearer "+token)
		time.AfterFunc(50*time.Millisecond, leave)
		err := handler.ServeHTTP(httptest.NewRecorder(), req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
			t.Errorf("%s passed the request on", name)
			return nil
		}))
		var handlerErr caddyhttp.HandlerError
		require.ErrorAs(t, err, &handlerErr, name)
		assert.Equal(t, 499, handlerErr.StatusCode, name)
	}
	assert.Zero(t, warnings.Len(), "no alert about Clerk")
	assert.Equal(t, before, unavailable(), "no clerk_unavailable counted")
}

func TestStripCookiesLeavesTheOtherPairsAsSent(t *testing.T) {
	for name, tc := range map[string]struct{ sent, want []string }{
		"alone":             {[]string{"__session=eyJ"}, nil},
		"first":             {[]string{"__session=eyJ; theme=dark"}, []string{"theme=dark"}},
		"middle":            {[]string{"a=1; __session=eyJ; b=2"}, []string{"a=1; b=2"}},
		"twice":             {[]string{"__session=x;a=1;__session=y"}, []string{"a=1"}},
		"unparseable kept":  {[]string{`bad name=1; __session=eyJ; q="a"b"`}, []string{`bad name=1; q="a"b"`}},
		"headers kept":      {[]string{"a=1", "__session=eyJ", "b=2; __session=eyJ"}, []string{"a=1", "b=2"}},
		"suffixed ones too": {[]string{"__session_x=1; __session_Ab12Cd34=2; a=3"}, []string{"a=3"}},
		"a lookalike kept":  {[]string{"__sessions=1; x__session=2; __session-x=3"}, []string{"__sessions=1; x__session=2; __session-x=3"}},
		"no cookie at all":  {nil, nil},
		"spaces around it":  {[]string{"a=1 ;  __session =eyJ ; b=2"}, []string{"a=1 ; b=2"}},
		"value holds names": {[]string{"a=__session=1"}, []string{"a=__session=1"}},
		"client_uat kept":   {[]string{"__session=eyJ; __client_uat=1700000000"}, []string{"__client_uat=1700000000"}},
	} {
		t.Run(name, func(t *testing.T) {
			header := http.Header{"Cookie": tc.sent}
			stripCookies(header, isSessionCookie)
			assert.Equal(t, tc.want, header["Cookie"])
		})
	}
}

func TestActorPlaceholder(t *testing.T) {
	value, known := identityPlaceholder(&verify.Identity{Actor: "user_admin"}, "actor")
	assert.True(t, known)
	assert.Equal(t, "user_admin", value)
	value, known = identityPlaceholder(&verify.Identity{}, "actor")
	assert.True(t, known, "known, and empty, for a token that names no actor")
	assert.Equal(t, "", value)
}

// A request prepared by caddyhttp.PrepareRequest without a server (as
// `caddy clerk-m2m inspect` prepares one) carries a nil *Server: no access
// log, and no panic.
func TestAccessLogFieldsWithoutAServer(t *testing.T) {
	req := asCaddyWould(httptest.NewRequest(http.MethodGet, "/", nil), caddy.NewReplacer())
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.ServerCtxKey, (*caddyhttp.Server)(nil)))
	assert.NotPanics(t, func() { addAccessLogFields(req, &verify.Identity{Subject: "mch_x"}) })
}
