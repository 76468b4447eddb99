package conformance

import (
	"crypto/sha1" // names cookies as Clerk's frontend does
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// keySet says which of Clerk's keys a profile is given: the instance's JWT
// public key (networkless JWTs), its secret key (JWKS from the fake, opaque
// credentials), the gateway machine's secret key (opaque M2M tokens).
type keySet struct {
	jwtKey, secretKey, machineKey bool
}

var (
	networkless = keySet{jwtKey: true, secretKey: true}
	viaJWKS     = keySet{secretKey: true}
	machineOnly = keySet{machineKey: true}
	machineJWT  = keySet{machineKey: true, jwtKey: true}
	allKeys     = keySet{secretKey: true, machineKey: true}
)

// profile is one configuration, given alike to both sides: a clerk_m2m
// block (and its route) on the module's side, createClerkClient keys and
// authenticateRequest options on the SDK's.
type profile struct {
	name   string
	keys   keySet
	accept []string // as the Caddyfile says it: token types, or "any"
	// development gives both sides the publishable key of a development
	// instance (pk_test_) rather than a production one.
	development bool
	// array hands the SDK accept as an array even when it names one type:
	// the SDK takes another path for arrays than for a single type.
	array    bool
	skew     *time.Duration
	parties  []string
	audience []string
	issuer   []string
}

// The profiles of the corpus, by name.
var profiles = map[string]*profile{}

func define(p profile) *profile {
	if _, dup := profiles[p.name]; dup {
		panic("profile defined twice: " + p.name)
	}
	profiles[p.name] = &p
	return &p
}

func skewOf(d time.Duration) *time.Duration { return &d }

// appOrigin is the origin session tokens are issued to, and the authorized
// party of the profiles that check one.
const appOrigin = "https://app.example.test"

// The audiences of the profiles that check one, and an issuer besides the
// fake's.
const (
	apiAudience   = "https://api.example.test"
	otherAudience = "https://other.example.test"
	otherIssuer   = "https://clerk.other.example.test"
)

var (
	pemM2M          = define(profile{name: "pem-m2m", keys: machineJWT, accept: []string{"m2m_token"}})
	pemOAuth        = define(profile{name: "pem-oauth", keys: networkless, accept: []string{"oauth_token"}})
	pemSession      = define(profile{name: "pem-session", keys: networkless, accept: []string{"session_token"}})
	pemAPIKey       = define(profile{name: "pem-api-key", keys: networkless, accept: []string{"api_key"}})
	pemAny          = define(profile{name: "pem-any", keys: networkless, accept: []string{"any"}})
	pemSessionArray = define(profile{name: "pem-array-session", keys: networkless, accept: []string{"session_token"}, array: true})
	pemMachineArray = define(profile{name: "pem-array-m2m-oauth", keys: networkless, accept: []string{"m2m_token", "oauth_token"}})
	pemMixedArray   = define(profile{name: "pem-array-session-m2m", keys: networkless, accept: []string{"session_token", "m2m_token"}})
	pemSkew0        = define(profile{name: "pem-any-skew0", keys: networkless, accept: []string{"any"}, skew: skewOf(0)})
	pemSkewMost     = define(profile{name: "pem-any-skew5m", keys: networkless, accept: []string{"any"}, skew: skewOf(5 * time.Minute)}) // the most clock_skew takes
	pemParties      = define(profile{name: "pem-session-azp", keys: networkless, accept: []string{"session_token"}, parties: []string{appOrigin}})
	pemAnyParties   = define(profile{name: "pem-any-azp", keys: networkless, accept: []string{"any"}, parties: []string{appOrigin}})
	pemAnyIssuer    = define(profile{name: "pem-any-iss", keys: networkless, accept: []string{"any"}, issuer: []string{backendtest.Issuer, otherIssuer}})
	pemAnyAudience  = define(profile{name: "pem-any-aud", keys: networkless, accept: []string{"any"}, audience: []string{apiAudience, otherAudience}})
	pemSessionDev   = define(profile{name: "pem-session-dev", keys: networkless, accept: []string{"session_token"}, development: true})

	jwksM2M     = define(profile{name: "jwks-m2m", keys: viaJWKS, accept: []string{"m2m_token"}})
	jwksOAuth   = define(profile{name: "jwks-oauth", keys: viaJWKS, accept: []string{"oauth_token"}})
	jwksSession = define(profile{name: "jwks-session", keys: viaJWKS, accept: []string{"session_token"}})
	jwksAny     = define(profile{name: "jwks-any", keys: viaJWKS, accept: []string{"any"}})

	secretM2M    = define(profile{name: "secret-m2m", keys: viaJWKS, accept: []string{"m2m_token"}})
	secretAPIKey = define(profile{name: "secret-api-key", keys: viaJWKS, accept: []string{"api_key"}})
	secretOAuth  = define(profile{name: "secret-oauth", keys: viaJWKS, accept: []string{"oauth_token"}})
	secretOpaque = define(profile{name: "secret-array-key-oauth", keys: viaJWKS, accept: []string{"api_key", "oauth_token"}})
	machineM2M   = define(profile{name: "machine-m2m", keys: machineOnly, accept: []string{"m2m_token"}})
	machineAny   = define(profile{name: "machine-secret-any", keys: allKeys, accept: []string{"any"}})
	audienceAny  = define(profile{name: "machine-secret-any-aud", keys: allKeys, accept: []string{"any"}, audience: []string{apiAudience}})
)

// instance is what both sides are configured against: the fake Clerk and
// its keys.
type instance struct {
	clerk   *backendtest.Server
	gateway *backendtest.Machine // the machine the gateway stands for
}

// publishableKey is the publishable key of the fake's instance for p,
// whose Frontend API host is the one in the fake's "iss": both sides then
// read the fake's sessions from the plain __session and __client_uat
// cookies, and another instance's from the suffixed ones.
func (p *profile) publishableKey() string { return backendtest.PublishableKey(p.development) }

// readsCookies reports whether p takes sessions, which both sides may read
// from a browser's cookies, named after the publishable key.
func (p *profile) readsCookies() bool {
	return slices.Contains(p.accept, "session_token") || slices.Contains(p.accept, "any")
}

// cookieSuffix is what Clerk's frontend appends to the names of the
// cookies of p's app: the first 8 characters of the base64url SHA-1 of
// the publishable key. Each side computes its own; a case that relies on
// this one says so (testCase.sdkMustAccept), so that a wrong suffix here
// fails the suite rather than turning those cases into refusals on both
// sides.
func (p *profile) cookieSuffix() string {
	sum := sha1.Sum([]byte(p.publishableKey()))
	return base64.URLEncoding.EncodeToString(sum[:])[:8]
}

// sdkKeys are createClerkClient's options for p (the fake's URL is added
// by the SDK driver). Clerk's SDK asks for a secret key, even with a JWT
// key, for anything but M2M tokens, and always for a publishable key
// outside machine-only routes; both are given whenever it needs them.
func (in *instance) sdkKeys(p *profile) map[string]any {
	keys := map[string]any{"publishableKey": p.publishableKey()}
	if p.keys.secretKey {
		keys["secretKey"] = in.clerk.SecretKey()
	}
	if p.keys.machineKey {
		keys["machineSecretKey"] = in.gateway.SecretKey
	}
	if p.keys.jwtKey {
		keys["jwtKey"] = in.clerk.PublicKeyPEM()
	}
	return keys
}

// sdkOptions are authenticateRequest's options for p.
func sdkOptions(p *profile) map[string]any {
	opts := map[string]any{}
	switch {
	case p.accept[0] == "any":
		opts["acceptsToken"] = "any"
	case len(p.accept) == 1 && !p.array:
		opts["acceptsToken"] = p.accept[0]
	default:
		opts["acceptsToken"] = p.accept
	}
	if p.skew != nil {
		opts["clockSkewInMs"] = p.skew.Milliseconds()
	}
	if len(p.parties) > 0 {
		opts["authorizedParties"] = p.parties
	}
	if len(p.audience) > 0 {
		opts["audience"] = p.audience
	}
	if len(p.issuer) > 0 {
		opts["issuer"] = p.issuer
	}
	return opts
}

// Environment variables that hand the keys to Caddy, so that none is
// written in the Caddyfile.
const (
	envSecretKey  = "CONFORMANCE_SECRET_KEY"
	envMachineKey = "CONFORMANCE_MACHINE_KEY"
	envJWTKey     = "CONFORMANCE_JWT_KEY"
	envAPIURL     = "CONFORMANCE_API_URL"
)

// caddyEnv hands the keys to Caddy (caddyproc empties the CLERK_*
// variables the module would read by default).
func (in *instance) caddyEnv() []string {
	return []string{
		envSecretKey + "=" + in.clerk.SecretKey(),
		envMachineKey + "=" + in.gateway.SecretKey,
		envJWTKey + "=" + in.clerk.PublicKeyPEM(),
		envAPIURL + "=" + in.clerk.URL,
	}
}

// identityTemplate answers a verified request with its identity as a JSON
// object, read from the {http.auth.user.*} placeholders; templates render
// each value as a JSON string (claims are a JSON object already).
var identityTemplate = func() string {
	var fields []string
	for _, name := range identityFields {
		fields = append(fields, fmt.Sprintf(`%q:{{placeholder "http.auth.user.%s" | toJson}}`, name, name))
	}
	fields = append(fields, `"claims":{{placeholder "http.auth.user.claims"}}`)
	return "{" + strings.Join(fields, ",") + "}"
}()

// caddyfile is the module's side of every profile: one route each, at
// /<profile name>, answering a verified request with its identity; and of
// every mint, at /mint/<id>.
func caddyfile(adminPort, httpPort int, used []*profile, mints []*mintCase) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin 127.0.0.1:%d\n\thttp_port %d\n\tlog {\n\t\tlevel ERROR\n\t\texclude http.log.error\n\t}\n}\n", adminPort, httpPort)
	fmt.Fprintf(&b, "http://127.0.0.1:%d {\n", httpPort)
	for _, p := range used {
		fmt.Fprintf(&b, "\thandle /%s {\n\t\tclerk_m2m {\n", p.name)
		for _, line := range p.subdirectives() {
			fmt.Fprintf(&b, "\t\t\t%s\n", line)
		}
		fmt.Fprintf(&b, "\t\t}\n\t\ttemplates\n\t\trespond `%s` 200\n\t}\n", identityTemplate)
	}
	for _, m := range mints {
		b.WriteString(m.route())
	}
	b.WriteString("\thandle {\n\t\trespond \"no such profile\" 404\n\t}\n}\n")
	return b.String()
}

func (p *profile) subdirectives() []string {
	lines := []string{"api_url {env." + envAPIURL + "}", "accept " + strings.Join(p.accept, " "),
		"max_clerk_rate 10000"} // the corpus asks Clerk as fast as it runs: the bound is verify's to test
	if p.keys.secretKey {
		lines = append(lines, "secret_key {env."+envSecretKey+"}")
	}
	if p.keys.machineKey {
		lines = append(lines, "machine_secret_key {env."+envMachineKey+"}")
	}
	if p.keys.jwtKey {
		lines = append(lines, "jwt_key {env."+envJWTKey+"}")
	}
	if p.skew != nil {
		lines = append(lines, "clock_skew "+p.skew.String())
	}
	if len(p.parties) > 0 {
		lines = append(lines, "authorized_parties "+strings.Join(p.parties, " "))
	}
	if len(p.audience) > 0 {
		lines = append(lines, "audience "+strings.Join(p.audience, " "))
	}
	if len(p.issuer) > 0 {
		lines = append(lines, "issuer "+strings.Join(p.issuer, " "))
	}
	if p.readsCookies() {
		lines = append(lines, "publishable_key "+p.publishableKey())
	}
	return lines
}
