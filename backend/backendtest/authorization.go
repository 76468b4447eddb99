package backendtest

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// codeTTL is how long an authorization code may be exchanged.
const codeTTL = time.Minute

// AuthorizationOptions say how the fake, as the instance's authorization
// server, approves the authorizations its clients ask for.
type AuthorizationOptions struct {
	// UserID is the user who signs in and approves every authorization:
	// the subject of the access tokens issued. "" means the fake's one
	// user, Server.OAuthUserID.
	UserID string
	// Scopes, when not nil, are the scopes granted, whatever the client
	// asked for (a user who declined some); nil grants those asked for.
	Scopes []string
	// JWT issues access tokens in JWT form (RFC 9068) instead of opaque
	// ones.
	JWT bool
}

// OAuthUserID returns the id of the fake's one user ("user_" and 27
// alphanumerics), who approves authorizations unless
// AuthorizationOptions.UserID says otherwise.
func (s *Server) OAuthUserID() string { return s.userID }

// SetAuthorization sets how authorizations are approved from now on.
func (s *Server) SetAuthorization(opts AuthorizationOptions) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authorization = opts
}

// PublishableKey returns a publishable key ("pk_test_…") whose Frontend API
// is the fake itself: it serves the public JWKS and the authorization
// server's routes there, as Clerk's Frontend API does.
func (s *Server) PublishableKey() string {
	return "pk_test_" + base64.StdEncoding.EncodeToString([]byte(strings.TrimPrefix(s.URL, "http://")+"$"))
}

// oauthClient is a client registered with POST /oauth/register.
type oauthClient struct {
	ID                      string   `json:"client_id"`
	Secret                  string   `json:"client_secret,omitempty"`
	IssuedAt                int64    `json:"client_id_issued_at"`
	SecretExpiresAt         *int64   `json:"client_secret_expires_at,omitempty"`
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	ClientName              string   `json:"client_name,omitempty"`
	Scope                   string   `json:"scope,omitempty"`
}

// authorizationCode is a code the authorization endpoint handed out.
type authorizationCode struct {
	clientID, redirectURI, challenge, resource string
	scopes                                     []string
	userID                                     string
	jwt                                        bool
	expires                                    time.Time
}

// The client authentication methods at the token endpoint (RFC 7591).
var tokenEndpointAuthMethods = []string{"client_secret_basic", "client_secret_post", "none"}

// authorizationServerMetadata serves GET
// /.well-known/oauth-authorization-server (RFC 8414), as Clerk's Frontend
// API does: the issuer is the fake's URL, the endpoints are under it.
func (s *Server) authorizationServerMetadata(*call) reply {
	return jsonReply(http.StatusOK, map[string]any{
		"issuer":                                s.URL,
		"authorization_endpoint":                s.URL + "/oauth/authorize",
		"token_endpoint":                        s.URL + "/oauth/token",
		"registration_endpoint":                 s.URL + "/oauth/register",
		"jwks_uri":                              s.URL + "/.well-known/jwks.json",
		"response_types_supported":              []string{"code"},
		"grant_types_supported":                 []string{"authorization_code"},
		"code_challenge_methods_supported":      []string{"S256"},
		"token_endpoint_auth_methods_supported": tokenEndpointAuthMethods,
	})
}

// registerClient serves POST /oauth/register, dynamic client registration
// (RFC 7591): any client with at least one absolute redirect URI is
// registered, public ("none") or with a secret.
func (s *Server) registerClient(c *call) reply {
	var client oauthClient // the metadata asked for; what the server decides is set below
	if err := json.Unmarshal(c.body, &client); err != nil {
		return oauthError(http.StatusBadRequest, "invalid_client_metadata", "the body is not a JSON object of client metadata")
	}
	if len(client.RedirectURIs) == 0 || slices.ContainsFunc(client.RedirectURIs, notAbsolute) {
		return oauthError(http.StatusBadRequest, "invalid_redirect_uri", "redirect_uris must be absolute URLs, at least one")
	}
	client.ID, client.Secret, client.SecretExpiresAt = "client_"+randomString(alphanumerics, 27), "", nil
	client.IssuedAt = s.now().Unix()
	client.GrantTypes, client.ResponseTypes = []string{"authorization_code"}, []string{"code"}
	if client.TokenEndpointAuthMethod == "" {
		client.TokenEndpointAuthMethod = "client_secret_basic" // RFC 7591's default
	}
	if !slices.Contains(tokenEndpointAuthMethods, client.TokenEndpointAuthMethod) {
		return oauthError(http.StatusBadRequest, "invalid_client_metadata", "token_endpoint_auth_method must be one of "+strings.Join(tokenEndpointAuthMethods, ", "))
	}
	if client.TokenEndpointAuthMethod != "none" {
		client.Secret, client.SecretExpiresAt = randomString(alphanumerics, 40), new(int64)
	}
	s.mu.Lock()
	s.oauthClients[client.ID] = &client
	s.mu.Unlock()
	return jsonReply(http.StatusCreated, client)
}

func notAbsolute(raw string) bool {
	u, err := url.Parse(raw)
	return err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != ""
}

// approve serves GET /oauth/authorize: the user approves at once, and
// is sent back to the client's redirect URI with a code. It takes only the
// authorization code flow with PKCE (S256), as OAuth 2.1 requires, and an
// RFC 8707 resource indicator, which becomes the audience of the token.
// An unknown client or redirect URI is answered 400 (never redirected to);
// any other fault is sent to the redirect URI as an error.
func (s *Server) approve(c *call) reply {
	q := c.r.URL.Query()
	s.mu.Lock()
	client := s.oauthClients[q.Get("client_id")]
	approval := s.authorization
	s.mu.Unlock()
	redirect := q.Get("redirect_uri")
	if client == nil || !slices.Contains(client.RedirectURIs, redirect) {
		return oauthError(http.StatusBadRequest, "invalid_request", "unknown client_id, or a redirect_uri it did not register")
	}
	back := func(params url.Values) reply {
		if state := q.Get("state"); state != "" {
			params.Set("state", state)
		}
		return redirectTo(redirect, params)
	}
	resource := q.Get("resource")
	switch {
	case q.Get("response_type") != "code":
		return back(url.Values{"error": {"unsupported_response_type"}})
	case q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256":
		return back(url.Values{"error": {"invalid_request"}, "error_description": {"PKCE with S256 is required"}})
	case len(q["resource"]) > 1 || resource != "" && notAbsolute(resource):
		return back(url.Values{"error": {"invalid_target"}})
	}
	scopes := approval.Scopes
	if scopes == nil {
		scopes = strings.Fields(q.Get("scope"))
	}
	code := "code_" + randomString(alphanumerics, 32)
	issued := &authorizationCode{clientID: client.ID, redirectURI: redirect, challenge: q.Get("code_challenge"),
		resource: resource, scopes: scopes, userID: cmp.Or(approval.UserID, s.userID), jwt: approval.JWT, expires: s.now().Add(codeTTL)}
	s.mu.Lock()
	s.codes[code] = issued
	s.mu.Unlock()
	return back(url.Values{"code": {code}})
}

// exchangeCode serves POST /oauth/token: an authorization code, with its PKCE
// verifier and the client's authentication, for an access token whose
// "aud" is the resource the authorization named (a resource given here
// must be that one). No refresh token is issued.
func (s *Server) exchangeCode(c *call) reply {
	form, err := url.ParseQuery(string(c.body))
	if err != nil {
		return oauthError(http.StatusBadRequest, "invalid_request", "the body is not a form")
	}
	if form.Get("grant_type") != "authorization_code" {
		return oauthError(http.StatusBadRequest, "unsupported_grant_type", "only authorization_code is supported")
	}
	s.mu.Lock()
	code, ok := s.codes[form.Get("code")]
	delete(s.codes, form.Get("code")) // used once, whatever comes of it
	s.mu.Unlock()
	if !ok || s.now().After(code.expires) {
		return oauthError(http.StatusBadRequest, "invalid_grant", "unknown, used or expired code")
	}
	if !s.clientAuthenticated(c.r, form, code.clientID) {
		return oauthError(http.StatusUnauthorized, "invalid_client", "client authentication failed")
	}
	switch {
	case form.Get("redirect_uri") != code.redirectURI:
		return oauthError(http.StatusBadRequest, "invalid_grant", "redirect_uri differs from the authorization's")
	case !pkceMatches(form.Get("code_verifier"), code.challenge):
		return oauthError(http.StatusBadRequest, "invalid_grant", "the code_verifier does not match the code_challenge")
	case form.Has("resource") && form.Get("resource") != code.resource:
		return oauthError(http.StatusBadRequest, "invalid_target", "the resource differs from the authorization's")
	}
	return jsonReply(http.StatusOK, s.issue(code))
}

// issue makes the access token an approved code stands for.
func (s *Server) issue(code *authorizationCode) map[string]any {
	opts := OAuthOptions{ClientID: code.clientID, Scopes: code.scopes}
	if code.resource != "" {
		opts.Audience = []string{code.resource}
	}
	var token string
	if code.jwt {
		token = s.MintOAuthJWT(code.userID, OAuthJWTOptions{OAuthOptions: opts})
	} else {
		token, _ = s.CreateOAuthToken(code.userID, opts)
	}
	answer := map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": int(defaultTTL.Seconds())}
	if len(code.scopes) > 0 {
		answer["scope"] = strings.Join(code.scopes, " ")
	}
	return answer
}

// clientAuthenticated checks the client's authentication at the token
// endpoint by the method it registered.
func (s *Server) clientAuthenticated(r *http.Request, form url.Values, clientID string) bool {
	s.mu.Lock()
	client := s.oauthClients[clientID]
	s.mu.Unlock()
	id, secret := form.Get("client_id"), form.Get("client_secret")
	switch client.TokenEndpointAuthMethod {
	case "client_secret_basic":
		var ok bool
		if id, secret, ok = r.BasicAuth(); !ok {
			return false
		}
	case "none":
		return id == client.ID && !form.Has("client_secret")
	}
	return id == client.ID && subtle.ConstantTimeCompare([]byte(secret), []byte(client.Secret)) == 1
}

// pkceMatches checks an S256 code verifier against its challenge.
func pkceMatches(verifier, challenge string) bool {
	sum := sha256.Sum256([]byte(verifier))
	return verifier != "" && base64.RawURLEncoding.EncodeToString(sum[:]) == challenge
}

// oauthError is an OAuth error answer (RFC 6749 §5.2).
func oauthError(status int, code, description string) reply {
	return jsonReply(status, map[string]string{"error": code, "error_description": description})
}

// redirectTo answers 302 to target with params added to its query.
func redirectTo(target string, params url.Values) reply {
	u, _ := url.Parse(target) // registered, so parsed before
	q := u.Query()
	for name, values := range params {
		q[name] = values
	}
	u.RawQuery = q.Encode()
	return reply{status: http.StatusFound, header: http.Header{"Location": {u.String()}}}
}
