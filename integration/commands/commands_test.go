// Package commands tests `caddy clerk-m2m inspect` and `caddy clerk-m2m
// mint` end to end: the Caddy that ./cmd/caddy builds, run as a process of
// its own with a credential on its standard input, against the fake Clerk,
// with every Clerk variable of the developer's environment cleared.
package commands

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
)

// fixture is a fake Clerk with the machine a gateway stands for and a
// machine calling it, and every secret the test hands out, which no
// output may show.
type fixture struct {
	t       *testing.T
	clerk   *backendtest.Server
	gateway *backendtest.Machine
	caller  *backendtest.Machine
	secrets []string
}

func newFixture(t *testing.T) *fixture {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	f := &fixture{t: t, clerk: clerk, gateway: clerk.NewMachine("invoices-api"), caller: clerk.NewMachine("billing-job")}
	clerk.GrantScopes(f.caller, f.gateway.ID)
	f.secrets = []string{clerk.SecretKey(), f.gateway.SecretKey, f.caller.SecretKey}
	return f
}

// secret records a credential the test made, and returns it.
func (f *fixture) secret(credential string) string {
	f.secrets = append(f.secrets, credential)
	return credential
}

// gatewayEnv is the environment of a gateway in front of the gateway
// machine: its machine secret key, the instance secret key, the fake.
func (f *fixture) gatewayEnv() []string {
	return []string{"CLERK_API_URL=" + f.clerk.URL, "CLERK_SECRET_KEY=" + f.clerk.SecretKey(),
		"CLERK_MACHINE_SECRET_KEY=" + f.gateway.SecretKey, "CLERK_PUBLISHABLE_KEY=" + backendtest.PublishableKey(false)}
}

// result is how a command ended.
type result struct {
	stdout, stderr string
	status         int
}

// run runs `caddy clerk-m2m args…` with stdin and env, and checks that
// nothing it printed holds a piece of a secret.
func (f *fixture) run(stdin string, env []string, args ...string) result {
	f.t.Helper()
	home := f.t.TempDir()
	cmd := exec.CommandContext(f.t.Context(), caddyproc.Binary(f.t), append([]string{"clerk-m2m"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_DATA_HOME="+home)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		f.t.Fatalf("running caddy clerk-m2m %s: %v", strings.Join(args, " "), err)
	}
	r := result{stdout: stdout.String(), stderr: stderr.String(), status: cmd.ProcessState.ExitCode()}
	f.assertNoLeak(r.stdout+r.stderr, args)
	return r
}

// assertNoLeak fails when out holds a piece of 8 characters of a secret
// the test handed out. Pieces that span "_" or "." are left out: they
// reach into a prefix (mt_, sk_test_) or a JWT's header, which credentials
// of a kind share.
func (f *fixture) assertNoLeak(out string, args []string) {
	f.t.Helper()
	for _, secret := range f.secrets {
		for i := 0; i+8 <= len(secret); i++ {
			piece := secret[i : i+8]
			if !strings.ContainsAny(piece, "_.") && strings.Contains(out, piece) {
				f.t.Errorf("caddy clerk-m2m %s printed a piece of a credential or key: %q", strings.Join(args, " "), piece)
				return
			}
		}
	}
}

// report is inspect's --json output.
type report struct {
	Fingerprint         string            `json:"fingerprint"`
	TokenType           string            `json:"token_type"`
	TokenFormat         string            `json:"token_format"`
	NotAClerkCredential string            `json:"not_a_clerk_credential"`
	Header              map[string]string `json:"header"`
	Claims              map[string]any    `json:"claims"`
	Times               map[string]struct {
		Unix     int64  `json:"unix"`
		UTC      string `json:"utc"`
		Relative string `json:"relative"`
	} `json:"times"`
	Verdict            string `json:"verdict"`
	NotVerifiedBecause string `json:"not_verified_because"`
	CheckedWith        struct {
		Accept                   []string `json:"accept"`
		OpaqueTokensVerifiedWith string   `json:"opaque_tokens_verified_with"`
		JWTsVerifiedWith         string   `json:"jwts_verified_with"`
		APIURL                   string   `json:"api_url"`
		CredentialIn             string   `json:"credential_in"`
	} `json:"checked_with"`
	Reason          string            `json:"reason"`
	Description     string            `json:"description"`
	Cause           string            `json:"cause"`
	Status          int               `json:"status"`
	WWWAuthenticate string            `json:"www_authenticate"`
	RetryAfter      string            `json:"retry_after"`
	Hint            string            `json:"hint"`
	Placeholders    map[string]string `json:"placeholders"`
	ExitStatus      int               `json:"exit_status"`
}

// inspect runs inspect --json on credential and returns its report, which
// must be one JSON object (and nothing else) whose exit_status is the
// process's.
func (f *fixture) inspect(credential string, env []string, args ...string) (report, result) {
	f.t.Helper()
	r := f.run(credential+"\n", env, append([]string{"inspect", "--json"}, args...)...)
	var rep report
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	require.NoError(f.t, dec.Decode(&rep), "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	require.False(f.t, dec.More(), "one JSON object: %s", r.stdout)
	require.Equal(f.t, r.status, rep.ExitStatus, "stderr: %s", r.stderr)
	return rep, r
}

func TestInspectRefusesForEachReason(t *testing.T) {
	f := newFixture(t)
	other := f.clerk.NewMachine("reports-api")
	scoped := []string{"--require_scopes", f.gateway.ID}
	sessions := []string{"--accept", "session_token"}
	session := f.secret(f.clerk.MintSessionJWT("user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", backendtest.SessionOptions{}))
	opaque, _ := f.clerk.CreateM2MToken(f.caller, backendtest.TokenOptions{Scopes: []string{f.gateway.ID}})
	f.secret(opaque)
	for _, tc := range []struct {
		name       string
		credential string
		args       []string
		env        []string // instead of the gateway's
		fault      *backendtest.Fault
		reason     string
		status     int
		exit       int
		challenge  string // in WWW-Authenticate
		retryAfter string
		noClerk    bool   // decided without a call to Clerk
		hint       string // in the hint
	}{
		{name: "token_missing: the cookie, on a route without sessions", credential: session, args: []string{"--cookie"},
			reason: "token_missing", status: 401, exit: 4, challenge: `Bearer realm="clerk"`, noClerk: true},
		{name: "token_invalid: unknown to Clerk", credential: f.secret("mt_0123456789abcdef0123456789abcdef"),
			reason: "token_invalid", status: 401, exit: 4, challenge: `error="invalid_token"`,
			hint: "with machine_secret_key, Clerk knows only the M2M tokens granted to that machine"},
		{name: "token_invalid: not a Clerk credential", credential: f.secret("x9Kq2vT7pLm4wZ8rB3nY"),
			reason: "token_invalid", status: 401, exit: 4, challenge: `error="invalid_token"`, noClerk: true},
		{name: "token_expired", credential: f.secret(f.clerk.MintM2MJWT(f.caller, backendtest.JWTOptions{
			TokenOptions: backendtest.TokenOptions{Scopes: []string{f.gateway.ID}, TTL: -3 * time.Minute}})), args: scoped,
			reason: "token_expired", status: 401, exit: 4, challenge: `error_description="the token has expired"`},
		{name: "token_type_not_accepted: a session token on an M2M route", credential: session, args: scoped,
			reason: "token_type_not_accepted", status: 401, exit: 4, challenge: `error="invalid_token"`, noClerk: true},
		{name: "insufficient_scope", credential: f.secret(f.clerk.MintM2MJWT(f.caller, backendtest.JWTOptions{
			TokenOptions: backendtest.TokenOptions{Scopes: []string{other.ID}}})), args: scoped,
			reason: "insufficient_scope", status: 403, exit: 4, challenge: `error="insufficient_scope"`},
		{name: "session_outdated: no __client_uat", credential: session, args: append([]string{"--cookie"}, sessions...),
			reason: "session_outdated", status: 401, exit: 4, challenge: `error="invalid_token"`},
		{name: "session_outdated: signed out since", credential: session,
			args:   append([]string{"--cookie", "--client_uat", "0"}, sessions...),
			reason: "session_outdated", status: 401, exit: 4, challenge: `error="invalid_token"`},
		{name: "clerk_unavailable", credential: opaque, fault: &backendtest.Fault{Path: "/m2m_tokens/verify", Status: 503},
			reason: "clerk_unavailable", status: 503, exit: 5, retryAfter: "5"},
		{name: "clerk_rate_limited", credential: opaque,
			fault:  &backendtest.Fault{Path: "/m2m_tokens/verify", Status: 429, RetryAfter: "7"},
			reason: "clerk_rate_limited", status: 503, exit: 5, retryAfter: "7"},
		{name: "misconfigured: a machine secret key Clerk does not know", credential: opaque,
			env:    []string{"CLERK_API_URL=" + f.clerk.URL, "CLERK_MACHINE_SECRET_KEY=" + f.secret("ak_00000000000000000000000000000000")},
			reason: "misconfigured", status: 500, exit: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.t = t
			f.clerk.ClearFaults()
			f.clerk.ResetCalls()
			if tc.fault != nil {
				f.clerk.SetFault(*tc.fault)
			}
			env := tc.env
			if env == nil {
				env = f.gatewayEnv()
			}
			rep, r := f.inspect(tc.credential, env, tc.args...)
			assert.Equal(t, tc.exit, r.status)
			assert.Equal(t, "refused", rep.Verdict)
			assert.Equal(t, tc.reason, rep.Reason)
			assert.Equal(t, tc.status, rep.Status)
			assert.NotEmpty(t, rep.Description)
			if tc.challenge != "" {
				assert.Contains(t, rep.WWWAuthenticate, tc.challenge)
			}
			assert.Equal(t, tc.retryAfter, rep.RetryAfter)
			if tc.hint == "" {
				assert.Empty(t, rep.Hint)
			} else {
				assert.Contains(t, rep.Hint, tc.hint)
			}
			assert.Empty(t, rep.Placeholders, "no identity for a refused credential")
			if tc.noClerk {
				assert.Empty(t, f.clerk.Requests(), "decided without calling Clerk")
			}

			f.clerk.ResetCalls()
			text := f.run(tc.credential, env, append([]string{"inspect"}, tc.args...)...)
			assert.Equal(t, tc.exit, text.status, "the same verdict in words")
			assert.Contains(t, text.stdout, "refused: "+tc.reason+" (")
			assert.Contains(t, text.stdout, fmt.Sprintf("answer       %d %s", tc.status, http.StatusText(tc.status)))
		})
	}
}

func TestInspectAcceptsAndNamesThePlaceholders(t *testing.T) {
	f := newFixture(t)
	opaque, opaqueID := f.clerk.CreateM2MToken(f.caller, backendtest.TokenOptions{
		Scopes: []string{f.gateway.ID}, Claims: map[string]any{"job": "nightly-sync", "batch": map[string]any{"size": 500}}})
	f.secret(opaque)
	jwt := f.secret(f.clerk.MintM2MJWT(f.caller, backendtest.JWTOptions{
		TokenOptions: backendtest.TokenOptions{Scopes: []string{f.gateway.ID}, Claims: map[string]any{"job": "nightly-sync"}}}))

	rep, r := f.inspect(opaque, f.gatewayEnv(), "--require_scopes", f.gateway.ID)
	require.Equal(t, 0, r.status, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	assert.Equal(t, "accepted", rep.Verdict)
	assert.Equal(t, "m2m_token", rep.TokenType)
	assert.Equal(t, "opaque", rep.TokenFormat)
	assert.Nil(t, rep.Header, "an opaque token has no header to show")
	assert.Equal(t, "machine_secret_key", rep.CheckedWith.OpaqueTokensVerifiedWith)
	assert.Equal(t, f.clerk.URL, rep.CheckedWith.APIURL)
	assert.Equal(t, 1, f.clerk.Calls("/m2m_tokens/verify"), "one call to Clerk, as the handler makes")
	p := rep.Placeholders
	assert.Equal(t, f.caller.ID, p["http.auth.user.id"])
	assert.Equal(t, "m2m_token", p["http.auth.user.token_type"])
	assert.Equal(t, "opaque", p["http.auth.user.token_format"])
	assert.Equal(t, opaqueID, p["http.auth.user.token_id"])
	assert.Equal(t, f.gateway.ID, p["http.auth.user.scopes"])
	assert.JSONEq(t, `{"job":"nightly-sync","batch":{"size":500}}`, p["http.auth.user.claims"])
	assert.Equal(t, "nightly-sync", p["http.auth.user.claims.job"])
	assert.Equal(t, `{"size":500}`, p["http.auth.user.claims.batch"])
	assert.Equal(t, "500", p["http.auth.user.claims.batch.size"])
	assert.NotEmpty(t, p["http.auth.user.expires_at"])
	for _, name := range []string{"client_id", "session_id", "org_id", "name", "actor"} {
		value, set := p["http.auth.user."+name]
		assert.True(t, set && value == "", "{http.auth.user.%s} is set, and empty, for an M2M token", name)
	}

	f.clerk.ResetCalls()
	rep, r = f.inspect(jwt, f.gatewayEnv(), "--require_scopes", f.gateway.ID)
	require.Equal(t, 0, r.status, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	assert.Equal(t, "jwt", rep.TokenFormat)
	assert.Equal(t, map[string]string{"alg": "RS256", "typ": "JWT", "kid": f.clerk.KeyID(), "cat": backendtest.M2MCategory,
		"category": "M2M"}, rep.Header)
	assert.Equal(t, f.caller.ID, rep.Claims["sub"])
	assert.Regexp(t, `^valid for (59|60) more minutes$`, rep.Times["exp"].Relative)
	assert.Regexp(t, `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$`, rep.Times["exp"].UTC)
	assert.Equal(t, "jwt", rep.Placeholders["http.auth.user.token_format"])
	assert.Equal(t, rep.Claims["jti"], rep.Placeholders["http.auth.user.token_id"])
	assert.Equal(t, "nightly-sync", rep.Placeholders["http.auth.user.claims.job"])
	assert.Equal(t, 1, f.clerk.Calls("/v1/jwks"), "the signing keys fetched once, for this JWT")
	assert.Len(t, f.clerk.Requests(), 1, "and nothing else asked of Clerk")

	text := f.run(jwt, f.gatewayEnv(), "inspect")
	assert.Equal(t, 0, text.status)
	assert.Contains(t, text.stdout, "cat "+backendtest.M2MCategory+" (M2M)")
	assert.Regexp(t, `\{http\.auth\.user\.id\} +`+f.caller.ID, text.stdout)
	assert.Contains(t, text.stdout, "verdict      accepted")
}

func TestInspectAcceptsASessionFromTheCookie(t *testing.T) {
	f := newFixture(t)
	session := f.secret(f.clerk.MintSessionJWT("user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", backendtest.SessionOptions{
		SessionID: "sess_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", OrgID: "org_2GIpXOEpVyJw51rkZn9Kmnc6Sxr"}))
	signedIn := fmt.Sprint(time.Now().Add(-time.Hour).Unix())
	rep, r := f.inspect(session, f.gatewayEnv(), "--accept", "session_token", "--cookie", "--client-uat", signedIn)
	require.Equal(t, 0, r.status, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	assert.Equal(t, "session_cookie", rep.CheckedWith.CredentialIn)
	assert.Equal(t, "session", rep.Header["category"])
	assert.Equal(t, "sess_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", rep.Placeholders["http.auth.user.session_id"])
	assert.Equal(t, "org_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", rep.Placeholders["http.auth.user.org_id"])

	// As a browser of two apps on one domain sends it, of a development
	// instance (whose browser has its own cookie, which inspect sends).
	development := append(f.gatewayEnv(), "CLERK_PUBLISHABLE_KEY="+backendtest.PublishableKey(true))
	rep, r = f.inspect(session, development, "--accept", "session_token", "--cookie", "--suffixed", "--client_uat", signedIn)
	require.Equal(t, 0, r.status, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	assert.Equal(t, "suffixed_session_cookie", rep.CheckedWith.CredentialIn)
	assert.Equal(t, "sess_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", rep.Placeholders["http.auth.user.session_id"])

	// Without a publishable key, no cookie is read, and no suffix is known.
	withoutKey := append(f.gatewayEnv(), "CLERK_PUBLISHABLE_KEY=")
	rep, _ = f.inspect(session, withoutKey, "--accept", "session_token", "--cookie", "--client_uat", signedIn)
	assert.Equal(t, "token_missing", string(rep.Reason))
	assert.Contains(t, rep.Description, "publishable key")
	rep, _ = f.inspect(session, withoutKey, "--accept", "session_token", "--cookie", "--suffixed", "--client_uat", signedIn)
	assert.Contains(t, rep.NotVerifiedBecause, "publishable_key")
}

// TestInspectWithoutKeysDescribesOnly: with no key, nothing is verified;
// what the credential says is printed all the same, and the exit status
// is no verdict's.
func TestInspectWithoutKeysDescribesOnly(t *testing.T) {
	f := newFixture(t)
	expired := f.secret(f.clerk.MintM2MJWT(f.caller, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{TTL: -3 * time.Minute}}))
	rep, r := f.inspect(expired, []string{"CLERK_API_URL=" + f.clerk.URL})
	assert.Equal(t, 1, r.status)
	assert.Equal(t, "not_verified", rep.Verdict)
	assert.Contains(t, rep.NotVerifiedBecause, "accepting m2m_token needs machine_secret_key (or CLERK_MACHINE_SECRET_KEY)")
	assert.Equal(t, "m2m_token", rep.TokenType)
	assert.Equal(t, "expired 3 minutes ago", rep.Times["exp"].Relative)
	assert.Empty(t, rep.Reason)
	assert.Empty(t, f.clerk.Requests())

	text := f.run(expired, nil, "inspect")
	assert.Equal(t, 1, text.status)
	assert.Contains(t, text.stdout, "expired 3 minutes ago")
	assert.Contains(t, text.stdout, "verdict      not verified: ")
}

// TestInspectFlagsAreTheSubdirectives: flags set what the subdirectives
// set, spelled either way, over the environment.
func TestInspectFlagsAreTheSubdirectives(t *testing.T) {
	f := newFixture(t)
	apiKey, _ := f.clerk.CreateAPIKey("user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", backendtest.APIKeyOptions{})
	f.secret(apiKey)
	env := []string{"CLERK_API_URL=" + f.clerk.URL}
	rep, r := f.inspect(apiKey, env, "--accept", "api_key,m2m_token", "--secret-key", "{env.MY_CLERK_KEY}",
		"--allowed_subjects", "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", "--timeout", "2s", "--clock_skew", "0")
	require.Equal(t, 1, r.status, "MY_CLERK_KEY is not set: the configuration is refused")
	assert.Contains(t, rep.NotVerifiedBecause, "secret_key is set to \"{env.MY_CLERK_KEY}\", which is empty")

	rep, r = f.inspect(apiKey, append(env, "MY_CLERK_KEY="+f.clerk.SecretKey()), "--accept", "api_key,m2m_token",
		"--secret-key", "{env.MY_CLERK_KEY}", "--allowed_subjects", "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr")
	require.Equal(t, 0, r.status, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	assert.Equal(t, []string{"m2m_token", "api_key"}, rep.CheckedWith.Accept)
	assert.Equal(t, "api_key", rep.Placeholders["http.auth.user.token_type"])
	assert.NotContains(t, r.stderr, "warning", "a placeholder keeps the key off the command line")

	rep, r = f.inspect(apiKey, env, "--accept", "api_key", "--secret_key", f.clerk.SecretKey(),
		"--allowed_subjects", "user_somebody_else")
	assert.Equal(t, 4, r.status)
	assert.Equal(t, "insufficient_scope", rep.Reason)
	assert.Contains(t, r.stderr, "warning: --secret-key on the command line is kept in shell history")

	r = f.run(apiKey, env, "inspect", "--accept", "api_key", "--timeout", "soon")
	assert.Equal(t, 1, r.status)
	assert.Contains(t, r.stderr, `--timeout: time: invalid duration "soon"`)
}

func TestInspectReadsOneCredentialFromStandardInput(t *testing.T) {
	f := newFixture(t)
	opaque, _ := f.clerk.CreateM2MToken(f.caller, backendtest.TokenOptions{Scopes: []string{f.gateway.ID}})
	f.secret(opaque)
	for _, tc := range []struct {
		name, stdin, complaint string
		args                   []string
	}{
		{"empty", "", "no credential on standard input", nil},
		{"blank", " \n\t\n", "no credential on standard input", nil},
		{"two credentials", opaque + "\n" + opaque + "\n", "more than one word", nil},
		{"with its scheme", "Bearer " + opaque, `without "Bearer"`, nil},
		{"on the command line", "", "read from standard input, not from the command line", []string{opaque}},
		{"--token-from-arg without it", "", "takes the credential as the one argument", []string{"--token-from-arg"}},
		{"a flag it does not have", opaque, "unknown flag: --token", []string{"--token=" + opaque}},
		{"--client-uat without --cookie", opaque, "--client-uat goes with --cookie", []string{"--client_uat", "1"}},
		{"--suffixed without --cookie", opaque, "--suffixed goes with --cookie", []string{"--suffixed"}},
		{"too long", strings.Repeat("a", 65<<10), "more than 64 KiB", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.t = t
			r := f.run(tc.stdin, f.gatewayEnv(), append([]string{"inspect"}, tc.args...)...)
			assert.Equal(t, 1, r.status, "a usage error: Caddy's status for a command that failed")
			assert.Empty(t, r.stdout)
			assert.Contains(t, r.stderr, tc.complaint)
		})
	}

	t.Run("--token_from_arg", func(t *testing.T) {
		f.t = t
		r := f.run("", f.gatewayEnv(), "inspect", "--token_from_arg", opaque)
		assert.Equal(t, 0, r.status, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
		assert.Contains(t, r.stderr, "warning: a credential on the command line is kept in shell history")
	})
	t.Run("blanks around it", func(t *testing.T) {
		f.t = t
		r := f.run("\n  "+opaque+" \r\n", f.gatewayEnv(), "inspect")
		assert.Equal(t, 0, r.status, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	})
}

func TestMintPrintsTheTokenAlone(t *testing.T) {
	f := newFixture(t)
	env := []string{"CLERK_API_URL=" + f.clerk.URL, "CLERK_MACHINE_SECRET_KEY=" + f.caller.SecretKey}
	for _, format := range []string{"opaque", "jwt"} {
		t.Run(format, func(t *testing.T) {
			f.t = t
			r := f.run("", env, "mint", "--format", format, "--ttl", "10m", "--claims", `{"job":"nightly-sync","attempt":2}`)
			require.Equal(t, 0, r.status, "stderr: %s", r.stderr)
			token, found := strings.CutSuffix(r.stdout, "\n")
			require.True(t, found, "the token ends with a newline")
			require.NotContains(t, token, "\n", "standard output holds the token alone")
			f.secret(token)
			assert.NotContains(t, r.stderr, token)
			assert.Contains(t, r.stderr, "as machine "+f.caller.ID+" (the machine of CLERK_MACHINE_SECRET_KEY)")
			assert.Contains(t, r.stderr, "valid for 9 more minutes")

			sent := lastRequest(t, f.clerk, "/m2m_tokens")
			var body map[string]any
			require.NoError(t, json.Unmarshal(sent.Body, &body))
			assert.Equal(t, map[string]any{"token_format": format, "seconds_until_expiration": 600.0,
				"claims": map[string]any{"job": "nightly-sync", "attempt": 2.0}}, body)

			rep, inspected := f.inspect(token, f.gatewayEnv(), "--require_scopes", f.gateway.ID)
			require.Equal(t, 0, inspected.status, "minted, then accepted: %s", inspected.stdout)
			assert.Equal(t, format, rep.Placeholders["http.auth.user.token_format"])
			assert.Equal(t, "2", rep.Placeholders["http.auth.user.claims.attempt"])
		})
	}
}

// TestMintThenInspect is the README's pipe: mint's standard output goes
// into inspect's standard input as it is.
func TestMintThenInspect(t *testing.T) {
	f := newFixture(t)
	minted := f.run("", []string{"CLERK_API_URL=" + f.clerk.URL, "CLERK_MACHINE_SECRET_KEY=" + f.caller.SecretKey}, "mint")
	require.Equal(t, 0, minted.status, minted.stderr)
	f.secret(strings.TrimSpace(minted.stdout))
	inspected := f.run(minted.stdout, f.gatewayEnv(), "inspect", "--require_scopes", f.gateway.ID)
	assert.Equal(t, 0, inspected.status, inspected.stdout)
	assert.Contains(t, inspected.stdout, "verdict      accepted")

	// On the gateway's host, CLERK_MACHINE_SECRET_KEY is the gateway's:
	// mint says it minted as the gateway, and inspect why Clerk does not
	// know that token.
	minted = f.run("", f.gatewayEnv(), "mint")
	require.Equal(t, 0, minted.status, minted.stderr)
	f.secret(strings.TrimSpace(minted.stdout))
	assert.Contains(t, minted.stderr, "as machine "+f.gateway.ID+" (the machine of CLERK_MACHINE_SECRET_KEY)")
	inspected = f.run(minted.stdout, f.gatewayEnv(), "inspect")
	assert.Equal(t, 4, inspected.status, inspected.stdout)
	assert.Contains(t, inspected.stdout, "hint         with machine_secret_key, Clerk knows only the M2M tokens granted to that machine")
}

func TestMintExitStatus(t *testing.T) {
	f := newFixture(t)
	api := []string{"CLERK_API_URL=" + f.clerk.URL}
	callerKey := append([]string{"CLERK_MACHINE_SECRET_KEY=" + f.caller.SecretKey}, api...)
	for _, tc := range []struct {
		name      string
		env, args []string
		fault     *backendtest.Fault
		status    int
		complaint string
	}{
		{name: "no key", env: api, status: 1, complaint: "needs the machine's secret key: set machine_secret_key (or CLERK_MACHINE_SECRET_KEY)"},
		{name: "the instance secret key", env: append([]string{"CLERK_MACHINE_SECRET_KEY=" + f.clerk.SecretKey()}, api...),
			status: 1, complaint: "Clerk mints M2M tokens only for a machine"},
		{name: "a key Clerk rejects", env: append([]string{"CLERK_MACHINE_SECRET_KEY=" + f.secret("ak_00000000000000000000000000000000")}, api...),
			status: 5, complaint: "misconfigured: Clerk rejected the machine secret key"},
		{name: "claims that are not an object", env: callerKey, args: []string{"--claims", `["job"]`}, status: 1,
			complaint: "--claims must be one JSON object"},
		{name: "a format Clerk has not", env: callerKey, args: []string{"--format", "paseto"}, status: 1,
			complaint: `format must be opaque or jwt, not "paseto"`},
		{name: "min_remaining_ttl with a JWT", env: callerKey, args: []string{"--format", "jwt", "--min_remaining_ttl", "5m"},
			status: 1, complaint: "min_remaining_ttl applies to opaque tokens"},
		{name: "a ttl of ten years", env: callerKey, args: []string{"--ttl", "87600h"}, status: 1,
			complaint: "ttl must be at most 24h0m0s"},
		{name: "a ttl of 0", env: callerKey, args: []string{"--ttl", "0"}, status: 1, complaint: "ttl must be at least 30s, not 0s"},
		{name: "an argument", env: callerKey, args: []string{f.caller.SecretKey}, status: 1, complaint: "mint takes no arguments"},
		{name: "Clerk failing", env: callerKey, fault: &backendtest.Fault{Path: "/m2m_tokens", Status: 503}, status: 5,
			complaint: "clerk_unavailable: Clerk could not mint"},
		{name: "Clerk rate-limiting", env: callerKey, fault: &backendtest.Fault{Path: "/m2m_tokens", Status: 429, RetryAfter: "9"},
			status: 5, complaint: "clerk_rate_limited: Clerk is rate-limiting; try again in 9s"},
		{name: "Clerk answering with no token", env: callerKey, fault: &backendtest.Fault{Path: "/m2m_tokens",
			Body: `{"object":"machine_to_machine_token","subject":"mch_1","token":"\u001b[2Jnot a token"}`},
			status: 5, complaint: "clerk_unavailable: Clerk answered with something that is no M2M token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.t = t
			f.clerk.ClearFaults()
			if tc.fault != nil {
				f.clerk.SetFault(*tc.fault)
			}
			r := f.run("", tc.env, append([]string{"mint"}, tc.args...)...)
			assert.Equal(t, tc.status, r.status)
			assert.Empty(t, r.stdout, "nothing on standard output but a token")
			assert.Contains(t, r.stderr, tc.complaint)
		})
	}

	t.Run("the key as a flag", func(t *testing.T) {
		f.t = t
		f.clerk.ClearFaults()
		r := f.run("", api, "mint", "--machine-secret-key", f.caller.SecretKey)
		assert.Equal(t, 0, r.status, r.stderr)
		f.secret(strings.TrimSpace(r.stdout))
		assert.Contains(t, r.stderr, "warning: --machine-secret-key on the command line is kept in shell history")
		assert.Contains(t, r.stderr, "as machine "+f.caller.ID+" (the machine of --machine-secret-key)", "says which machine it minted as")
	})
}

// TestCommandsAreCaddys: the commands behave as Caddy's: an unknown
// subcommand is an error (status 1) that suggests the one meant, their
// help points at their own documentation, not Caddy's, which does not
// document them, and their flags are spelled with dashes, the
// subdirectives' underscores taken too.
func TestCommandsAreCaddys(t *testing.T) {
	f := newFixture(t)
	r := f.run("", nil, "inpsect")
	assert.Equal(t, 1, r.status)
	assert.Contains(t, r.stderr, `unknown command "inpsect": did you mean inspect?`)
	r = f.run("", nil)
	assert.Equal(t, 0, r.status, "without a subcommand: the help")
	assert.Contains(t, r.stdout, "caddy clerk-m2m inspect")
	for _, command := range [][]string{{"--help"}, {"inspect", "--help"}, {"mint", "--help"}} {
		r := f.run("", nil, command...)
		assert.Equal(t, 0, r.status)
		assert.Contains(t, r.stdout, "https://github.com/caddy-clerk/clerk-m2m#commands", command)
		assert.NotContains(t, r.stdout, "caddyserver.com/docs/command-line", command)
		assert.NotRegexp(t, `--[a-z]+_[a-z]`, r.stdout, "flags spelled with dashes")
	}
}

// TestMintDeclinesATokenThatOutlivesTTL: with --min_remaining_ttl, a live
// token of the machine that never expires is not printed: mint says so,
// and prints a new token of --ttl.
func TestMintDeclinesATokenThatOutlivesTTL(t *testing.T) {
	f := newFixture(t)
	foreign, _ := f.clerk.CreateM2MToken(f.caller, backendtest.TokenOptions{NoExpiry: true})
	f.secret(foreign)
	env := []string{"CLERK_API_URL=" + f.clerk.URL, "CLERK_MACHINE_SECRET_KEY=" + f.caller.SecretKey}
	r := f.run("", env, "mint", "--ttl", "10m", "--min_remaining_ttl", "5m")
	require.Equal(t, 0, r.status, r.stderr)
	f.secret(strings.TrimSpace(r.stdout))
	assert.NotEqual(t, foreign, strings.TrimSpace(r.stdout))
	assert.Contains(t, r.stderr, "Clerk handed back a live token that expires later than --ttl from now: minting a new one")
	assert.Contains(t, r.stderr, "valid for 9 more minutes")
	assert.Equal(t, 2, f.clerk.Calls("/m2m_tokens"))
}

// TestCommandsPrintNoSecretAFlagHolds: every flag of both commands that
// takes a value, given a placeholder of a key the command holds (from the
// environment, or from a file), prints no piece of the key, whatever path
// it could take (the settings checked with, the WWW-Authenticate
// challenge, errors, logs): the keys' flags read it as a key, which
// nothing prints, and the others refuse a placeholder without echoing it.
// An api_url with credentials is refused without showing them either.
func TestCommandsPrintNoSecretAFlagHolds(t *testing.T) {
	f := newFixture(t)
	keyFile := filepath.Join(t.TempDir(), "machine_secret_key")
	require.NoError(t, os.WriteFile(keyFile, []byte(f.caller.SecretKey), 0o600))
	credential := f.secret(f.clerk.MintM2MJWT(f.caller, backendtest.JWTOptions{
		TokenOptions: backendtest.TokenOptions{Scopes: []string{f.gateway.ID}}}))
	takesAValue := regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([\w-]+) (?:string|strings)\b`)
	for _, command := range []string{"inspect", "mint"} {
		f.t = t
		help := f.run("", nil, command, "--help")
		flags := takesAValue.FindAllStringSubmatch(help.stdout, -1)
		require.GreaterOrEqual(t, len(flags), 7, "the flags of %s, from its help: %s", command, help.stdout)
		for _, flag := range flags {
			for from, placeholder := range map[string]string{"env": "{env.CLERK_SECRET_KEY}", "file": "{file." + keyFile + "}"} {
				t.Run(command+" --"+flag[1]+" from a "+from, func(t *testing.T) {
					f.t = t
					f.run(credential, f.gatewayEnv(), command, "--"+flag[1], placeholder) // run checks every output
				})
			}
		}
	}

	f.t = t
	r := f.run(credential, f.gatewayEnv(), "inspect", "--require_scopes", "{env.CLERK_SECRET_KEY}")
	assert.Equal(t, 1, r.status)
	assert.Contains(t, r.stderr, "--require-scopes: placeholders ({env.NAME}, {file.path}) are expanded only in the keys' flags")
	password := f.secret("pw0rdSECRETpw0rd")
	for _, command := range []string{"inspect", "mint"} {
		r := f.run(credential, f.gatewayEnv(), command, "--api_url", "https://clerkuser:"+password+"@api.clerk.com")
		assert.Equal(t, 1, r.status)
		assert.Contains(t, r.stdout+r.stderr, "api_url: invalid Backend API URL", command)
	}
}

// lastRequest is the last request the fake got on route.
func lastRequest(t *testing.T, clerk *backendtest.Server, route string) backendtest.Request {
	t.Helper()
	requests := clerk.Requests()
	for i := len(requests) - 1; i >= 0; i-- {
		if requests[i].Path == route {
			return requests[i]
		}
	}
	t.Fatalf("no request to %s", route)
	return backendtest.Request{}
}

// TestCaddyValidateWarnsAboutLayouts: `caddy validate`, which starts
// nothing, says what the configuration's start would: a clerk_m2m that
// cannot gate what it seems to, and a sidecar others can reach.
func TestCaddyValidateWarnsAboutLayouts(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "Caddyfile")
	require.NoError(t, os.WriteFile(config, []byte("{\n\tadmin off\n}\n\n"+
		"http://127.0.0.1:8080 {\n\tclerk_m2m /api/*\n\treverse_proxy 127.0.0.1:9000\n}\n\n"+
		"http://127.0.0.1:8081 {\n\tclerk_m2m_token\n\treverse_proxy 127.0.0.1:9001\n}\n"), 0o600))
	cmd := exec.CommandContext(t.Context(), caddyproc.Binary(t), "validate", "--config", config, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir,
		"CLERK_SECRET_KEY=sk_test_validate", "CLERK_MACHINE_SECRET_KEY=ak_validate")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "warnings, not errors: %s", out)
	assert.Contains(t, string(out), "clerk_m2m verifies only the requests its matcher matches")
	assert.Contains(t, string(out), "clerk_m2m_token attaches the machine's M2M token")
	assert.Contains(t, string(out), "Valid configuration")
}
