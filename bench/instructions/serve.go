package main

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	clerkm2m "github.com/caddy-clerk/clerk-m2m"
	loadfloor "github.com/caddy-clerk/clerk-m2m/bench/loadtest/floor"
)

// opaqueToken is the opaque M2M token of the opaque scenario, which a fake
// Clerk accepts.
const opaqueToken = "mt_f7f0ba8c3b4843ce7d85fcdd5e71853e"

// serve provisions the scenario's handler and serves it requests requests.
func serve(scenario, materialPath string, requests int) error {
	data, err := os.ReadFile(materialPath)
	if err != nil {
		return err
	}
	var m material
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	ctx, cancel, err := caddyContext()
	if err != nil {
		return err
	}
	defer cancel()
	clerk := httptest.NewServer(fakeClerk(m.JWKS))
	defer clerk.Close()
	// As in the load run: the signing keys fetched with the secret key, the
	// opaque token verified with the machine's; a verification remembered
	// for longer than callgrind takes, so that Clerk is asked once.
	ttl := caddy.Duration(time.Hour)
	h := &clerkm2m.Handler{SecretKey: "sk_test_bench", MachineSecretKey: "ak_bench", APIURL: clerk.URL, CacheTTL: &ttl}
	if err := provision(ctx, h); err != nil {
		return err
	}
	defer h.Cleanup()
	var handler caddyhttp.MiddlewareHandler = h
	tokens := func(int) string { return m.Repeated }
	switch scenario {
	case "pass-through":
		handler = passThrough{}
	case "jwt":
	case "distinct":
		if requests > len(m.Distinct) {
			return fmt.Errorf("%d requests, %d distinct tokens", requests, len(m.Distinct))
		}
		tokens = func(i int) string { return m.Distinct[i] }
	case "opaque":
		tokens = func(int) string { return opaqueToken }
	case "sha256-floor":
		handler = floor{func(string) error { _ = sha256.Sum256([]byte(m.Repeated)); return nil }}
	case "rsa-floor":
		key, err := publicKey(m.JWKS)
		if err != nil {
			return err
		}
		handler = floor{func(token string) error { return loadfloor.CheckSignature(key, token) }}
		tokens = func(i int) string { return m.Distinct[i] }
	default:
		return fmt.Errorf("no scenario %q", scenario)
	}
	for i := range requests {
		if err := request(handler, "Bearer "+tokens(i)); err != nil {
			return fmt.Errorf("request %d: %v", i, err)
		}
	}
	return nil
}

func caddyContext() (caddy.Context, context.CancelFunc, error) {
	base, err := caddy.ProvisionContext(&caddy.Config{Admin: &caddy.AdminConfig{Disabled: true}})
	if err != nil {
		return caddy.Context{}, nil, err
	}
	ctx, cancel := caddy.NewContext(base)
	return ctx, cancel, nil
}

func provision(ctx caddy.Context, h *clerkm2m.Handler) error {
	for _, name := range []string{"CLERK_SECRET_KEY", "CLERK_MACHINE_SECRET_KEY", "CLERK_JWT_KEY", "CLERK_API_URL", "CLERK_PUBLISHABLE_KEY"} {
		os.Unsetenv(name)
	}
	if err := h.Provision(ctx); err != nil {
		return err
	}
	return h.Validate()
}

// request serves one request through handler, with the context Caddy's
// server prepares (a replacer, the variables, room for extra access log
// fields, the server, which here keeps no access log, as in the load run),
// to a next handler that reads one placeholder, as header_up would, and
// answers.
func request(handler caddyhttp.MiddlewareHandler, authorization string) error {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", authorization)
	repl := caddy.NewReplacer()
	ctx := context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{
		caddyhttp.TrustedProxyVarKey: false, caddyhttp.ClientIPVarKey: "192.0.2.1"})
	ctx = context.WithValue(ctx, caddyhttp.ExtraLogFieldsCtxKey, new(caddyhttp.ExtraLogFields))
	ctx = context.WithValue(ctx, caddyhttp.ServerCtxKey, server)
	req = req.WithContext(ctx)
	w := httptest.NewRecorder()
	if err := handler.ServeHTTP(w, req, next); err != nil {
		return err
	}
	if w.Code != http.StatusOK {
		return fmt.Errorf("status %d", w.Code)
	}
	return nil
}

var server = new(caddyhttp.Server)

var next = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	_, _ = repl.GetString("http.auth.user.id")
	w.WriteHeader(http.StatusOK)
	return nil
})

// floor does what a handler cannot do without, on the request's token, then
// calls the next handler.
type floor struct{ work func(token string) error }

func (f floor) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if err := f.work(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")); err != nil {
		return err
	}
	return next.ServeHTTP(w, r)
}

// publicKey reads the one key of the material's JWKS.
func publicKey(jwks json.RawMessage) (*rsa.PublicKey, error) {
	var set struct {
		Keys []struct{ N, E string } `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil || len(set.Keys) != 1 {
		return nil, fmt.Errorf("the JWKS: %v", err)
	}
	n, err := base64.RawURLEncoding.DecodeString(set.Keys[0].N)
	if err != nil {
		return nil, err
	}
	e, err := base64.RawURLEncoding.DecodeString(set.Keys[0].E)
	if err != nil {
		return nil, err
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
}

// passThrough is the floor: a handler that only calls the next one.
type passThrough struct{}

func (passThrough) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return next.ServeHTTP(w, r)
}

// fakeClerk serves the signing keys, and accepts opaqueToken, valid for an
// hour, as Clerk's M2M verify endpoint would.
func fakeClerk(jwks json.RawMessage) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/jwks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks)
	})
	mux.HandleFunc("POST /m2m_tokens/verify", verifyOpaque)
	return mux
}

func verifyOpaque(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"object": "machine_to_machine_token", "id": "mt_id_bench", "subject": "mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk",
		"scopes": []string{}, "claims": nil, "revoked": false, "revocation_reason": nil, "expired": false,
		"expiration": now.Add(time.Hour).UnixMilli(), "last_used_at": nil,
		"created_at": now.UnixMilli(), "updated_at": now.UnixMilli(),
	})
}
