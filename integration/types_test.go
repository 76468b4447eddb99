package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

var typesCaddyfile = globals("") + `
(identity) {
	header_up X-Clerk-Subject {http.auth.user.id}
	header_up X-Clerk-Token-Type {http.auth.user.token_type}
	header_up X-Clerk-Token-Format {http.auth.user.token_format}
	header_up X-Clerk-Token-Id {http.auth.user.token_id}
	header_up X-Clerk-Scopes {http.auth.user.scopes}
	header_up X-Clerk-Client-Id {http.auth.user.client_id}
	header_up X-Clerk-Session-Id {http.auth.user.session_id}
	header_up X-Clerk-Org-Id {http.auth.user.org_id}
	header_up X-Clerk-Name {http.auth.user.name}
}

(clerk) {
	secret_key {{SECRET}}
	machine_secret_key {{GATEWAY_KEY}}
	api_url {{CLERK}}
}

http://{{GATEWAY}} {
	handle /machines/* {
		clerk_m2m {
			import clerk
		}
		reverse_proxy {{UPSTREAM}} {
			import identity
		}
	}
	handle /partners/* {
		clerk_m2m {
			import clerk
			accept api_key oauth_token
		}
		reverse_proxy {{UPSTREAM}} {
			import identity
		}
	}
	handle /app/* {
		clerk_m2m {
			import clerk
			accept session_token
			authorized_parties https://app.example.com
		}
		reverse_proxy {{UPSTREAM}} {
			import identity
		}
	}
	handle /any/* {
		clerk_m2m {
			import clerk
			accept any
		}
		reverse_proxy {{UPSTREAM}} {
			import identity
		}
	}
	handle /scoped/* {
		clerk_m2m {
			import clerk
			accept any
			require_scopes read:invoices
		}
		reverse_proxy {{UPSTREAM}} {
			import identity
		}
	}
	handle /subjects/* {
		clerk_m2m {
			import clerk
			accept api_key
			allowed_subjects org_acme
		}
		reverse_proxy {{UPSTREAM}} {
			import identity
		}
	}
	handle /optional/* {
		clerk_m2m {
			import clerk
			accept any
			optional
		}
		reverse_proxy {{UPSTREAM}} {
			import identity
		}
	}
	handle_errors {
		header X-Clerk-Error {http.auth.clerk_m2m.error}
		respond "refused" {http.error.status_code}
	}
}
`

// testUser is a user of the fake Clerk instance.
const testUser = "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr"

// cookie sends a GET to path with a __session cookie, and the __client_uat
// cookie of a browser signed in long before the token was minted.
func (e *env) cookie(path, token string) (*http.Response, map[string]string) {
	e.t.Helper()
	e.secrets = append(e.secrets, token)
	return e.send(path, func(req *http.Request) {
		req.AddCookie(&http.Cookie{Name: "__session", Value: token})
		req.AddCookie(&http.Cookie{Name: "__client_uat", Value: "1700000000"})
	})
}

func TestEveryCredentialType(t *testing.T) {
	e := start(t, typesCaddyfile)
	clerk := e.clerk
	hour := time.Hour

	apiKey, apiKeyID := clerk.CreateAPIKey(testUser, backendtest.APIKeyOptions{Name: "ci-deploys", Scopes: []string{"read:invoices"}})
	orgKey, _ := clerk.CreateAPIKey("org_acme", backendtest.APIKeyOptions{Name: "acme-sync"})
	oauthToken, oauthID := clerk.CreateOAuthToken(testUser, backendtest.OAuthOptions{Scopes: []string{"read:invoices"}, TTL: hour})
	oauthJWT := clerk.MintOAuthJWT(testUser, backendtest.OAuthJWTOptions{OAuthOptions: backendtest.OAuthOptions{Scopes: []string{"profile", "email"}}})
	session := clerk.MintSessionJWT(testUser, backendtest.SessionOptions{SessionID: "sess_abc", OrgID: "org_acme", AuthorizedParty: "https://app.example.com"})
	m2mOpaque, m2mID := clerk.CreateM2MToken(e.caller, backendtest.TokenOptions{Scopes: []string{e.gateway.ID}, TTL: hour})
	m2mJWT := clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{Scopes: []string{e.gateway.ID}}})

	t.Run("valid credentials reach the upstream with their identity", func(t *testing.T) {
		for _, tc := range []struct {
			name, path, token string
			want              map[string]string
		}{
			{"API key", "/partners/x", apiKey, map[string]string{"X-Clerk-Subject": testUser, "X-Clerk-Token-Type": "api_key",
				"X-Clerk-Token-Format": "opaque", "X-Clerk-Token-Id": apiKeyID, "X-Clerk-Name": "ci-deploys", "X-Clerk-Scopes": "read:invoices"}},
			{"organization's API key", "/partners/x", orgKey, map[string]string{"X-Clerk-Subject": "org_acme", "X-Clerk-Org-Id": "org_acme",
				"X-Clerk-Token-Type": "api_key"}},
			{"opaque OAuth token", "/partners/x", oauthToken, map[string]string{"X-Clerk-Subject": testUser, "X-Clerk-Token-Type": "oauth_token",
				"X-Clerk-Token-Format": "opaque", "X-Clerk-Token-Id": oauthID, "X-Clerk-Client-Id": clerk.OAuthClientID()}},
			{"OAuth JWT", "/partners/x", oauthJWT, map[string]string{"X-Clerk-Subject": testUser, "X-Clerk-Token-Type": "oauth_token",
				"X-Clerk-Token-Format": "jwt", "X-Clerk-Client-Id": clerk.OAuthClientID(), "X-Clerk-Scopes": "profile email"}},
			{"session token", "/app/x", session, map[string]string{"X-Clerk-Subject": testUser, "X-Clerk-Token-Type": "session_token",
				"X-Clerk-Token-Format": "jwt", "X-Clerk-Session-Id": "sess_abc", "X-Clerk-Org-Id": "org_acme"}},
			{"opaque M2M token", "/machines/x", m2mOpaque, map[string]string{"X-Clerk-Subject": e.caller.ID, "X-Clerk-Token-Type": "m2m_token",
				"X-Clerk-Token-Id": m2mID}},
			{"M2M JWT", "/machines/x", m2mJWT, map[string]string{"X-Clerk-Subject": e.caller.ID, "X-Clerk-Token-Type": "m2m_token",
				"X-Clerk-Token-Format": "jwt"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, seen := e.bearer(tc.path, tc.token)
				require.Equal(t, http.StatusOK, resp.StatusCode)
				for header, value := range tc.want {
					assert.Equal(t, value, seen[header], header)
				}
			})
		}
		resp, seen := e.cookie("/app/x", session)
		require.Equal(t, http.StatusOK, resp.StatusCode, "the session from the __session cookie")
		assert.Equal(t, "sess_abc", seen["X-Clerk-Session-Id"])
	})

	t.Run("API keys and OAuth tokens are verified with the instance key, never the machine key", func(t *testing.T) {
		for _, path := range []string{"/api_keys/verify", "/oauth_applications/access_tokens/verify"} {
			assert.Equal(t, "Bearer "+clerk.SecretKey(), lastRequest(t, clerk, path).Header.Get("Authorization"), path)
		}
		assert.Equal(t, "Bearer "+e.gateway.SecretKey, lastRequest(t, clerk, "/m2m_tokens/verify").Header.Get("Authorization"))
	})

	t.Run("invalid credentials", func(t *testing.T) {
		revokedKey, revokedKeyID := clerk.CreateAPIKey(testUser, backendtest.APIKeyOptions{})
		clerk.RevokeAPIKey(revokedKeyID)
		expiredOAuth, _ := clerk.CreateOAuthToken(testUser, backendtest.OAuthOptions{TTL: -time.Minute})
		for name, tc := range map[string]struct{ path, token, reason string }{
			"unknown API key":           {"/partners/x", "ak_" + strings.Repeat("x", 40), "token_invalid"},
			"revoked API key":           {"/partners/x", revokedKey, "token_invalid"},
			"unknown OAuth token":       {"/partners/x", "oat_0123456789abcdef0123456789abcdef", "token_invalid"},
			"inactive OAuth token":      {"/partners/x", expiredOAuth, "token_invalid"},
			"OAuth JWT, expired":        {"/partners/x", clerk.MintOAuthJWT(testUser, backendtest.OAuthJWTOptions{OAuthOptions: backendtest.OAuthOptions{TTL: -time.Minute}}), "token_expired"},
			"session, expired":          {"/app/x", clerk.MintSessionJWT(testUser, backendtest.SessionOptions{TTL: -time.Minute, AuthorizedParty: "https://app.example.com"}), "token_expired"},
			"session, other party":      {"/app/x", clerk.MintSessionJWT(testUser, backendtest.SessionOptions{AuthorizedParty: "https://evil.example"}), "token_invalid"},
			"session, no party":         {"/app/x", clerk.MintSessionJWT(testUser, backendtest.SessionOptions{}), "token_invalid"},
			"session, pending":          {"/app/x", clerk.MintSessionJWT(testUser, backendtest.SessionOptions{Status: "pending", AuthorizedParty: "https://app.example.com"}), "token_invalid"},
			"JWT-template token":        {"/app/x", clerk.MintTemplateJWT(testUser, map[string]any{"azp": "https://app.example.com"}), "token_invalid"},
			"template without category": {"/app/x", clerk.MintSessionJWT(testUser, backendtest.SessionOptions{OmitCategory: true, AuthorizedParty: "https://app.example.com", Payload: map[string]any{"sid": nil}}), "token_invalid"},
		} {
			t.Run(name, func(t *testing.T) {
				resp, _ := e.bearer(tc.path, tc.token)
				requireRefused(t, resp, http.StatusUnauthorized, tc.reason)
			})
		}
	})

	t.Run("a type the route does not accept", func(t *testing.T) { // with no call to Clerk: verify's TestWhatIsNotAcceptedMakesNoCall
		for path, token := range map[string]string{"/machines/x": apiKey, "/app/x": oauthJWT, "/partners/x": m2mOpaque} {
			resp, _ := e.bearer(path, token)
			requireRefused(t, resp, http.StatusUnauthorized, "token_type_not_accepted")
		}
		resp, _ := e.cookie("/app/x", m2mJWT)
		requireRefused(t, resp, http.StatusUnauthorized, "token_type_not_accepted")
	})

	t.Run("accept any takes every type", func(t *testing.T) {
		for name, token := range map[string]string{
			"mt_": m2mOpaque, "ak_": apiKey, "oat_": oauthToken, "M2M JWT": m2mJWT, "OAuth JWT": oauthJWT,
			"session JWT": clerk.MintSessionJWT(testUser, backendtest.SessionOptions{}),
		} {
			resp, _ := e.bearer("/any/x", token)
			assert.Equal(t, http.StatusOK, resp.StatusCode, name)
		}
	})

	t.Run("scopes and subjects", func(t *testing.T) {
		resp, _ := e.bearer("/scoped/x", apiKey) // carries read:invoices
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		resp, _ = e.bearer("/scoped/x", orgKey) // carries no scope
		requireRefused(t, resp, http.StatusForbidden, "insufficient_scope")
		assert.Equal(t, `Bearer realm="clerk", error="insufficient_scope", error_description="the token lacks a required scope", scope="read:invoices"`,
			resp.Header.Get("WWW-Authenticate"))
		resp, _ = e.bearer("/scoped/x", m2mJWT) // scopes are machine ids
		requireRefused(t, resp, http.StatusForbidden, "insufficient_scope")

		resp, _ = e.bearer("/subjects/x", orgKey) // org_acme
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		resp, _ = e.bearer("/subjects/x", apiKey) // a user's
		requireRefused(t, resp, http.StatusForbidden, "insufficient_scope")
	})

	t.Run("optional", func(t *testing.T) {
		resp, seen := e.request("/optional/x")
		require.Equal(t, http.StatusOK, resp.StatusCode, "no credential: through, anonymous")
		for header, value := range seen {
			assert.Empty(t, value, "%s must be empty for an anonymous request", header)
		}
		resp, _ = e.bearer("/optional/x", "mt_0123456789abcdef0123456789abcdef")
		requireRefused(t, resp, http.StatusUnauthorized, "token_invalid")
		resp, _ = e.request("/optional/x", "Basic dXNlcjpwYXNz")
		requireRefused(t, resp, http.StatusUnauthorized, "token_invalid")
		resp, seen = e.bearer("/optional/x", apiKey)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, testUser, seen["X-Clerk-Subject"])
	})
}

func TestStripAuthorizationRemovesEveryClerkCredential(t *testing.T) {
	e := start(t, strings.ReplaceAll(typesCaddyfile, "\t\t\timport clerk\n", "\t\t\timport clerk\n\t\t\tstrip_authorization\n"))
	session := e.clerk.MintSessionJWT(testUser, backendtest.SessionOptions{AuthorizedParty: "https://app.example.com"})
	withCookies := func(req *http.Request) {
		req.Header.Set("Cookie", "theme=dark; __session="+session+"; __session_Ab12Cd34="+session+"; __client_uat=1700000000")
	}

	t.Run("the session cookie that was verified", func(t *testing.T) {
		resp, seen := e.send("/app/x", withCookies)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, testUser, seen["X-Clerk-Subject"])
		assert.Equal(t, "theme=dark; __client_uat=1700000000", seen["Cookie"], "the other cookies as sent")
	})

	t.Run("a session cookie beside the machine token that was verified", func(t *testing.T) {
		jwt := e.clerk.MintM2MJWT(e.caller, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{Scopes: []string{e.gateway.ID}}})
		resp, seen := e.send("/any/x", func(req *http.Request) {
			req.Header.Set("Authorization", "Bearer "+jwt)
			withCookies(req)
		})
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, e.caller.ID, seen["X-Clerk-Subject"], "the machine was verified")
		assert.NotContains(t, seen, "Authorization")
		assert.Equal(t, "theme=dark; __client_uat=1700000000", seen["Cookie"], "no session cookie reaches the upstream")
	})
}
