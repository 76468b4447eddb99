package clerkm2m

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

// ok is the next handler: it answers 200 and reads one placeholder, as a
// header_up would.
var ok = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	_, _ = repl.GetString(identityPlaceholderPrefix + "id")
	w.WriteHeader(http.StatusOK)
	return nil
})

// serve runs one request through handler the way Caddy's server sets it up:
// a fresh replacer in the request's context.
func serve(b *testing.B, handler caddyhttp.MiddlewareHandler, authorization string) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	repl := caddy.NewReplacer()
	req = asCaddyWould(req, repl)
	w := httptest.NewRecorder()
	if err := handler.ServeHTTP(w, req, ok); err != nil || w.Code != http.StatusOK {
		b.Fatalf("status %d, error %v", w.Code, err)
	}
}

// passThrough is the baseline: a handler that does nothing but call next.
type passThrough struct{}

func (passThrough) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return next.ServeHTTP(w, r)
}

func BenchmarkHandlerBaseline(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		serve(b, passThrough{}, "Bearer mt_f7f0ba8c3b4843ce7d85fcdd5e71853e")
	}
}

func benchHandler(b *testing.B, h *Handler) *Handler {
	testenv.ClearClerk(b)
	if err := provision(b, h); err != nil {
		b.Fatal(err)
	}
	h.logger = zap.NewNop() // as at Caddy's default INFO level: no per-request lines
	return h
}

// BenchmarkHandlerJWT verifies the same M2M JWT on every request against
// the instance's JWKS (fetched once).
func BenchmarkHandlerJWT(b *testing.B) {
	clerk := backendtest.New()
	defer clerk.Close()
	h := benchHandler(b, &Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL})
	token := "Bearer " + clerk.MintM2MJWT(clerk.NewMachine("caller"), backendtest.JWTOptions{})
	serve(b, h, token)
	b.ReportAllocs()
	for b.Loop() {
		serve(b, h, token)
	}
}

// BenchmarkHandlerOpaqueCached presents the same opaque token on every
// request; Clerk is asked once.
func BenchmarkHandlerOpaqueCached(b *testing.B) {
	clerk := backendtest.New()
	defer clerk.Close()
	gateway := clerk.NewMachine("gateway")
	h := benchHandler(b, &Handler{MachineSecretKey: gateway.SecretKey, APIURL: clerk.URL})
	token, _ := clerk.CreateM2MToken(clerk.NewMachine("caller"), backendtest.TokenOptions{Scopes: []string{gateway.ID}, TTL: time.Hour})
	serve(b, h, "Bearer "+token)
	b.ReportAllocs()
	for b.Loop() {
		serve(b, h, "Bearer "+token)
	}
	if calls := clerk.Calls("/m2m_tokens/verify"); calls != 1 {
		b.Fatalf("%d calls to Clerk", calls)
	}
}

// The miss path of an opaque token: a gateway that has not seen the token
// asks Clerk (the fake, over loopback), or, with shared_cache, finds the
// verdict another gateway wrote in a file_system storage. Each iteration
// is a gateway that has not seen the token (a Verifier with a Pool of its
// own, made before the timer starts).

func BenchmarkOpaqueMissAsksClerk(b *testing.B) { benchOpaqueMiss(b, false) }

func BenchmarkOpaqueMissReadsSharedCache(b *testing.B) { benchOpaqueMiss(b, true) }

func benchOpaqueMiss(b *testing.B, shared bool) {
	clerk := backendtest.New()
	b.Cleanup(clerk.Close)
	token, _ := clerk.CreateM2MToken(clerk.NewMachine("caller"), backendtest.TokenOptions{})
	storage := &certmagic.FileStorage{Path: b.TempDir()}
	gateway := func() *verify.Verifier {
		pool, err := verify.NewPool(verify.PoolOptions{})
		if err != nil {
			b.Fatal(err)
		}
		opts := verify.Options{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, CacheTTL: new(time.Hour), Pool: pool,
			OnStoreError: func(op string, err error) { b.Errorf("%s: %v", op, err) }}
		if shared {
			opts.Store = newClusterStore(storage)
		}
		v, err := verify.New(opts)
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	verifyOnce := func(v *verify.Verifier) {
		if _, err := v.Verify(context.Background(), token); err != nil {
			b.Fatal(err)
		}
	}
	verifyOnce(gateway()) // the first gateway asks Clerk, and shares the verdict
	if shared {
		waitForSharedVerdict(b, storage)
	}
	gateways := make([]*verify.Verifier, b.N)
	for i := range gateways {
		gateways[i] = gateway()
	}
	clerk.ResetCalls()
	b.ReportAllocs()
	b.ResetTimer()
	for _, v := range gateways {
		verifyOnce(v)
	}
	b.StopTimer()
	b.ReportMetric(float64(clerk.Calls("/m2m_tokens/verify"))/float64(b.N), "clerk-calls/op")
}

// waitForSharedVerdict waits until the storage holds a verdict: they are
// written in the background.
func waitForSharedVerdict(b *testing.B, storage certmagic.Storage) {
	for deadline := time.Now().Add(hung); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		keys, _ := storage.List(context.Background(), verdictsFolder, true)
		for _, key := range keys {
			// /<minute>/<scope>/<MAC>: an entry, written (not the scope's
			// folder, nor the storage's temporary file beside the entry)
			if strings.Count(strings.TrimPrefix(key, verdictsFolder), "/") == 3 && len(path.Base(key)) == 64 {
				return
			}
		}
	}
	b.Fatal("no verdict was shared")
}

// BenchmarkHandlerProtectedResource verifies the same OAuth JWT, issued for
// an MCP server, on a route that is its protected_resource and, as the
// baseline, on one that only requires its URI as audience: the same
// verification, with and without the look for a request of the metadata.
func BenchmarkHandlerProtectedResource(b *testing.B) {
	clerk := backendtest.New()
	defer clerk.Close()
	const resource = "https://mcp.example.com/"
	token := "Bearer " + clerk.MintOAuthJWT("user_bench", backendtest.OAuthJWTOptions{OAuthOptions: backendtest.OAuthOptions{
		Audience: []string{resource}}})
	for name, h := range map[string]*Handler{
		"audience": {Audience: []string{resource}},
		"protected_resource": {ProtectedResource: &ProtectedResource{Resource: resource},
			PublishableKey: "pk_live_" + base64.StdEncoding.EncodeToString([]byte("clerk.example.com$"))},
	} {
		b.Run(name, func(b *testing.B) {
			h.SecretKey, h.APIURL, h.JWTKey, h.Accept = clerk.SecretKey(), clerk.URL, clerk.PublicKeyPEM(), []string{"oauth_token"}
			h = benchHandler(b, h)
			serve(b, h, token)
			b.ReportAllocs()
			for b.Loop() {
				serve(b, h, token)
			}
		})
	}
}
