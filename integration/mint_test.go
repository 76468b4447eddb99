package integration

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/mint"
)

// Service A calls service B. A's sidecar (the /a* routes) adds A's token to
// A's outgoing calls; B's gateway (the /b route) verifies them.
var mintCaddyfile = globals("") + `
http://{{GATEWAY}} {
	handle /a/* {
		clerk_m2m_token {
			machine_secret_key {{A_KEY}}
			api_url {{CLERK}}
		}
		reverse_proxy {{UPSTREAM}}
	}
	handle /a-burst/* {
		clerk_m2m_token {
			machine_secret_key {{A_KEY}}
			api_url {{CLERK}}
			claims {
				purpose burst
			}
		}
		reverse_proxy {{UPSTREAM}}
	}
	handle_path /a-to-b/* {
		clerk_m2m_token {
			machine_secret_key {{A_KEY}}
			api_url {{CLERK}}
			format jwt
			ttl 10m
		}
		rewrite * /b{uri}
		reverse_proxy {{GATEWAY}}
	}
	handle /b/* {
		clerk_m2m {
			secret_key {{SECRET}}
			machine_secret_key {{GATEWAY_KEY}}
			api_url {{CLERK}}
			require_scopes {{GATEWAY_ID}}
		}
		reverse_proxy {{UPSTREAM}} {
			header_up X-Clerk-Subject {http.auth.user.id}
			header_up X-Clerk-Token-Format {http.auth.user.token_format}
		}
	}
	handle /pk/* {
		clerk_m2m {
			publishable_key {{PUBLISHABLE_KEY}}
		}
		reverse_proxy {{UPSTREAM}} {
			header_up X-Clerk-Subject {http.auth.user.id}
		}
	}
}
`

func TestBothEndsOfM2M(t *testing.T) {
	e := newEnv(t)
	clerk := e.clerk
	a, b := clerk.NewMachine("service-a"), clerk.NewMachine("service-b")
	e.gateway, e.caller = b, a
	clerk.GrantScopes(a, b.ID)
	host := strings.TrimPrefix(clerk.URL, "http://") // the fake's Frontend API, on loopback
	publishable := "pk_test_" + base64.RawStdEncoding.EncodeToString([]byte(host+"$"))
	e.load(strings.NewReplacer("{{A_KEY}}", a.SecretKey, "{{PUBLISHABLE_KEY}}", publishable).Replace(mintCaddyfile))
	const create = "/m2m_tokens"

	t.Run("20 sequential requests carry one minted token", func(t *testing.T) {
		var tokens []string
		for range 20 {
			resp, seen := e.send("/a/x", func(req *http.Request) { req.Header.Set("Authorization", "Bearer client-sent") })
			require.Equal(t, http.StatusOK, resp.StatusCode)
			tokens = append(tokens, seen["Authorization"])
		}
		assert.True(t, strings.HasPrefix(tokens[0], "Bearer mt_"), "the client's Authorization is replaced: %q", tokens[0])
		for _, token := range tokens {
			assert.Equal(t, tokens[0], token)
		}
		assert.Equal(t, 1, clerk.Calls(create))
		assert.Equal(t, "Bearer "+a.SecretKey, lastRequest(t, clerk, create).Header.Get("Authorization"))
	})

	t.Run("a burst of first requests mints once", func(t *testing.T) {
		before := clerk.Calls(create)
		clerk.SetFault(backendtest.Fault{Path: create, Delay: 200 * time.Millisecond})
		defer clerk.ClearFaults()
		statuses := e.burst("/a-burst/x", func(int) string { return "ignored" }, 50)
		assert.Equal(t, map[int]int{http.StatusOK: 50}, statuses)
		assert.Equal(t, 1, clerk.Calls(create)-before, "50 concurrent first requests, one mint")
	})

	t.Run("a JWT minted on one end is accepted by clerk_m2m on the other", func(t *testing.T) {
		before := clerk.Calls("/m2m_tokens/verify")
		for range 3 {
			resp, seen := e.request("/a-to-b/invoices")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, a.ID, seen["X-Clerk-Subject"], "B sees A as the caller")
			assert.Equal(t, "jwt", seen["X-Clerk-Token-Format"])
			assert.Equal(t, 2, strings.Count(seen["Authorization"], "."), "a JWT went over: Bearer h.p.s")
		}
		assert.Equal(t, before, clerk.Calls("/m2m_tokens/verify"), "B verified it without asking Clerk")
	})

	t.Run("publishable_key alone verifies M2M JWTs", func(t *testing.T) {
		public := lastRequest(t, clerk, "/.well-known/jwks.json") // fetched when the configuration started
		assert.Empty(t, public.Header.Get("Authorization"), "the public JWKS is fetched with no secret")
		clerk.ResetCalls()
		jwt := clerk.MintM2MJWT(a, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{Scopes: []string{b.ID}}})
		resp, seen := e.bearer("/pk/x", jwt)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, a.ID, seen["X-Clerk-Subject"])
		resp, _ = e.bearer("/pk/x", "mt_0123456789abcdef0123456789abcdef")
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "no secret: opaque tokens cannot be verified")
		assert.Empty(t, clerk.Requests(), "and verifying asks nothing of Clerk")
	})
}

func TestNoTokenCanBeHad(t *testing.T) {
	e := newEnv(t)
	clerk := e.clerk
	e.caller = clerk.NewMachine("service-a")
	e.load(globals("") + `
http://{{GATEWAY}} {
	handle /down/* {
		clerk_m2m_token {
			machine_secret_key ` + e.caller.SecretKey + `
			api_url {{CLERK}}
		}
		reverse_proxy {{UPSTREAM}}
	}
	handle /wrong-key/* {
		clerk_m2m_token {
			machine_secret_key ak_00000000000000000000000000000000
			api_url {{CLERK}}
		}
		reverse_proxy {{UPSTREAM}}
	}
	handle_errors {
		header X-Clerk-Error {http.auth.clerk_m2m_token.error}
		respond "refused" {http.error.status_code}
	}
	log {
		output file {{LOG}}
	}
}
`)

	clerk.SetFault(backendtest.Fault{Path: "/m2m_tokens", Status: http.StatusServiceUnavailable})
	resp, _ := e.request("/down/x")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "clerk_unavailable", resp.Header.Get("X-Clerk-Error"))
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	clerk.ClearFaults()

	resp, _ = e.request("/wrong-key/x")
	assert.Equal(t, http.StatusInternalServerError, resp.StatusCode, "Clerk rejects the machine key")
	assert.Equal(t, "misconfigured", resp.Header.Get("X-Clerk-Error"))
	assert.Equal(t, "misconfigured", accessLogEntry(t, e.logFile, "/wrong-key/x")["clerk_m2m_token_error"],
		"the access log says why")
}

// TestMintedTokenInTheLogs: with the token in Authorization, Caddy's DEBUG
// log of a proxied request holds no piece of it; in a header of its own,
// reverse_proxy's DEBUG log shows it in clear (Caddy redacts Authorization
// and cookies only), and the handler says so when it loads. Tokens that
// Clerk hands back with less life than asked are logged too.
func TestMintedTokenInTheLogs(t *testing.T) {
	e := newEnv(t)
	load := func(extra string) {
		e.load(globals(debugLog) + `
http://{{GATEWAY}} {
	clerk_m2m_token {
		machine_secret_key ` + e.caller.SecretKey + `
		api_url {{CLERK}}
		` + extra + `
	}
	reverse_proxy {{UPSTREAM}}
}
`)
	}
	const warning = "the minted M2M token goes in a header that Caddy does not redact"

	t.Run("in Authorization", func(t *testing.T) {
		load("")
		resp, seen := e.request("/x")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		token, found := strings.CutPrefix(seen["Authorization"], "Bearer ")
		require.True(t, found, "the upstream got a token: %q", seen["Authorization"])
		logs := readLog(t, e.logFile)
		require.True(t, strings.Contains(logs, `"msg":"upstream roundtrip"`), "the DEBUG log of the proxied request was captured")
		assert.False(t, strings.Contains(logs, warning), "no warning for Authorization")
		for _, fragment := range secretFragments(token, 8) {
			if strings.Contains(logs, fragment) {
				t.Fatalf("a piece of the minted token is in the log: %q", fragment)
			}
		}
	})

	t.Run("in a header of its own", func(t *testing.T) {
		load("header X-M2M-Token")
		assert.True(t, strings.Contains(readLog(t, e.logFile), warning), "the handler warns when it loads")
		resp, _ := e.request("/x")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.True(t, strings.Contains(readLog(t, e.logFile), `"`+http.CanonicalHeaderKey("X-M2M-Token")+`":["mt_`),
			"as the warning says, reverse_proxy's DEBUG log shows the token")
	})

	// Clerk's clock runs behind the gateway's by all but 8 seconds of the
	// life asked for, so every token comes back already inside the 10s
	// margin: requests keep the current token while it lives, and a new
	// one is minted at most once per interval, not once per request (see
	// mint's TestTokensBornNearExpiryAreMintedOncePerInterval).
	t.Run("tokens born near expiry are not minted per request, and are logged", func(t *testing.T) {
		e.clerk.SetClock(func() time.Time { return time.Now().Add(8*time.Second - 2*time.Hour) })
		defer e.clerk.SetClock(nil)
		load("ttl 2h") // not the default hour: a token source of its own
		e.clerk.ResetCalls()
		started := time.Now()
		for range 50 {
			resp, seen := e.request("/x")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.True(t, strings.HasPrefix(seen["Authorization"], "Bearer mt_"))
		}
		elapsed := time.Since(started)
		assert.LessOrEqual(t, e.clerk.Calls("/m2m_tokens"), 1+int(elapsed/mint.DefaultMintInterval),
			"50 requests in %v: at most one mint per %v", elapsed, mint.DefaultMintInterval)
		assert.True(t, strings.Contains(readLog(t, e.logFile), "M2M tokens come back with less life than asked"),
			"the short life is logged")
	})
}
