package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// Opaque credentials are minted afresh for each case, so that what each
// side asks Clerk about one is told apart from every other case.

// m2mTokenOptions describe a token of the caller granted to the gateway.
func (c *corpus) m2mTokenOptions() backendtest.TokenOptions {
	return backendtest.TokenOptions{Scopes: []string{c.in.gateway.ID}}
}

// m2mToken mints an opaque M2M token of the caller.
func (c *corpus) m2mToken(opts backendtest.TokenOptions) string {
	token, _ := c.in.clerk.CreateM2MToken(c.caller, opts)
	return token
}

func (c *corpus) apiKey(subject string, opts backendtest.APIKeyOptions) string {
	secret, _ := c.in.clerk.CreateAPIKey(subject, opts)
	return secret
}

func (c *corpus) oauthToken(opts backendtest.OAuthOptions) string {
	token, _ := c.in.clerk.CreateOAuthToken(userID, opts)
	return token
}

// presentOpaque sends an opaque credential as a bearer token to p.
func (c *corpus) presentOpaque(id, credential string, p *profile) *testCase {
	tc := c.add(id, p, authorization("Bearer "+credential))
	tc.credential = credential
	return tc
}

// opaque: the credentials Clerk knows, in every state, through each key.
func (c *corpus) opaque() {
	granted := c.m2mTokenOptions()
	for _, p := range []*profile{secretM2M, machineM2M, machineAny, pemM2M} {
		withClaims := granted
		withClaims.Claims = map[string]any{"tier": "gold", "limits": map[string]any{"rps": 10}}
		c.presentOpaque("opaque/m2m-with-claims", c.m2mToken(withClaims), p)
		stranger, _ := c.in.clerk.CreateM2MToken(c.stranger, backendtest.TokenOptions{Scopes: []string{c.caller.ID}})
		c.presentOpaque("opaque/m2m-not-granted-to-the-gateway", stranger, p)
		revoked, id := c.in.clerk.CreateM2MToken(c.caller, granted)
		c.in.clerk.RevokeM2MToken(id)
		c.presentOpaque("opaque/m2m-revoked", revoked, p)
		expired := granted
		expired.TTL = -time.Minute
		c.presentOpaque("opaque/m2m-expired", c.m2mToken(expired), p)
		forever := granted
		forever.NoExpiry = true
		c.presentOpaque("opaque/m2m-never-expires", c.m2mToken(forever), p)
		c.presentOpaque("opaque/m2m-unknown", fmt.Sprintf("mt_%032x", c.next()), p)
	}
	for _, p := range []*profile{secretAPIKey, machineAny, secretOpaque} {
		c.presentOpaque("opaque/api-key-of-a-user", c.apiKey(userID, backendtest.APIKeyOptions{Scopes: []string{"read:invoices"}}), p)
		c.presentOpaque("opaque/api-key-of-an-organization", c.apiKey(orgID, backendtest.APIKeyOptions{Name: "billing"}), p)
		c.presentOpaque("opaque/api-key-of-a-machine", c.apiKey(c.caller.ID, backendtest.APIKeyOptions{}), p)
		c.presentOpaque("opaque/api-key-with-claims", c.apiKey(userID, backendtest.APIKeyOptions{Claims: map[string]any{"plan": "pro"}}), p)
		c.presentOpaque("opaque/api-key-expiring", c.apiKey(userID, backendtest.APIKeyOptions{TTL: time.Hour}), p)
		c.presentOpaque("opaque/api-key-expired", c.apiKey(userID, backendtest.APIKeyOptions{TTL: -time.Minute}), p)
		revoked, id := c.in.clerk.CreateAPIKey(userID, backendtest.APIKeyOptions{})
		c.in.clerk.RevokeAPIKey(id)
		c.presentOpaque("opaque/api-key-revoked", revoked, p)
		c.presentOpaque("opaque/api-key-unknown", fmt.Sprintf("ak_%040x", c.next()), p)
	}
	for _, p := range []*profile{secretOAuth, machineAny, secretOpaque} {
		c.presentOpaque("opaque/oauth", c.oauthToken(backendtest.OAuthOptions{Scopes: []string{"profile", "email"}}), p)
		c.presentOpaque("opaque/oauth-other-client", c.oauthToken(backendtest.OAuthOptions{ClientID: "client_2vYVotherOTHERotherOTHERot"}), p)
		revoked, id := c.in.clerk.CreateOAuthToken(userID, backendtest.OAuthOptions{})
		c.in.clerk.RevokeOAuthToken(id)
		c.presentOpaque("opaque/oauth-revoked", revoked, p)
		c.presentOpaque("opaque/oauth-expired", c.oauthToken(backendtest.OAuthOptions{TTL: -time.Minute}), p)
		c.presentOpaque("opaque/oauth-unknown", fmt.Sprintf("oat_%032x", c.next()), p)
	}
	for name, token := range map[string]string{
		"m2m-prefix-alone": "mt_", "uppercase-prefix": fmt.Sprintf("MT_%032x", c.next()), "api-key-prefix-alone": "ak_",
		"oauth-prefix-alone": "oat_", "prefix-in-jwt-form": "mt_abc.def.ghi", "odd-character": fmt.Sprintf("mt_%032x!", c.next()),
	} {
		c.presentOpaque("opaque/"+name, token, machineAny)
	}
}

// opaqueAnswers: each kind of opaque credential meets each answer Clerk
// may give (or a broken one), and each side reads it.
func (c *corpus) opaqueAnswers() {
	answers := map[string]backendtest.Fault{
		"404": {Status: http.StatusNotFound}, "401": {Status: http.StatusUnauthorized},
		"403": {Status: http.StatusForbidden}, "422": {Status: http.StatusUnprocessableEntity},
		"429": {Status: http.StatusTooManyRequests, RetryAfter: "7"}, "500": {Status: http.StatusInternalServerError},
		"502": {Status: http.StatusBadGateway}, "503": {Status: http.StatusServiceUnavailable},
		"not-json": {Garbage: true}, "truncated": {Truncated: true},
		"text-plain": {ContentType: "text/plain; charset=utf-8"}, "json-with-charset": {ContentType: "application/json; charset=utf-8"},
		"empty-object": {Body: "{}"}, "null": {Body: "null"}, "array": {Body: "[]"},
		"inactive": {Body: `{"active":false}`}, "active-only": {Body: `{"active":true}`},
	}
	kinds := map[string]func() string{
		"m2m":     func() string { return c.m2mToken(c.m2mTokenOptions()) },
		"api-key": func() string { return c.apiKey(userID, backendtest.APIKeyOptions{}) },
		"oauth":   func() string { return c.oauthToken(backendtest.OAuthOptions{}) },
	}
	for kind, mint := range kinds {
		for name, answer := range answers {
			c.answered("answer/"+kind+"-"+name, mint(), answer, machineAny)
		}
		other := map[string]string{"m2m": "api-key", "api-key": "oauth", "oauth": "m2m"}[kind]
		c.answered("answer/"+kind+"-another-kind's-object", mint(), backendtest.Fault{Body: c.objectOf(kinds[other]())}, machineAny)
	}
}

// answered makes Clerk give credential its answer, and presents it to p.
func (c *corpus) answered(id, credential string, answer backendtest.Fault, p *profile) {
	answer.Credential = credential
	c.in.clerk.SetFault(answer)
	c.presentOpaque(id, credential, p).pausesClerk = answer.Status == http.StatusTooManyRequests
}

// amended is the answer Clerk gives about credential, with one field set
// to value.
func (c *corpus) amended(credential, field string, value any) backendtest.Fault {
	var answer map[string]any
	if err := json.Unmarshal([]byte(c.objectOf(credential)), &answer); err != nil {
		panic(err)
	}
	answer[field] = value
	body, err := json.Marshal(answer)
	if err != nil {
		panic(err)
	}
	return backendtest.Fault{Body: string(body)}
}

// objectOf is the answer Clerk gives about credential, as text.
func (c *corpus) objectOf(credential string) string {
	route, field := "/m2m_tokens/verify", "token"
	switch {
	case strings.HasPrefix(credential, "ak_"):
		route, field = "/api_keys/verify", "secret"
	case strings.HasPrefix(credential, "oat_"):
		route, field = "/oauth_applications/access_tokens/verify", "access_token"
	}
	body, _ := json.Marshal(map[string]string{field: credential})
	req, err := http.NewRequest(http.MethodPost, c.in.clerk.URL+route, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.in.clerk.SecretKey())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		panic(fmt.Sprintf("asking the fake about a credential: %d %v", resp.StatusCode, err))
	}
	return string(answer)
}
