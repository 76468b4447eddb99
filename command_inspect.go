package clerkm2m

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

// inspectSettings are the subdirectives of clerk_m2m that inspect takes as
// flags of the same names. The others change nothing in the verdict on
// one credential (optional, strip_authorization, disable_metrics,
// jwks_max_stale), or are set for it (cache_ttl 0: every verification
// asks Clerk, as a first request does).
var inspectSettings = []inspectSetting{
	{name: "secret_key", key: true, secretEnv: "CLERK_SECRET_KEY", usage: "the instance secret key, sk_… (default {env.CLERK_SECRET_KEY})"},
	{name: "machine_secret_key", key: true, secretEnv: "CLERK_MACHINE_SECRET_KEY",
		usage: "the gateway machine's secret key, ak_… (default {env.CLERK_MACHINE_SECRET_KEY})"},
	{name: "jwt_key", key: true, usage: "the instance's JWT public key: PEM text or file (default {env.CLERK_JWT_KEY})"},
	{name: "api_url", usage: "Clerk's Backend API (default {env.CLERK_API_URL}, else https://api.clerk.com)"},
	{name: "publishable_key", key: true, usage: "the instance's publishable key, pk_… (default {env.CLERK_PUBLISHABLE_KEY})"},
	{name: "accept", kind: listSetting, usage: "credential types to accept: " + typeNames() + ", any (default m2m_token)"},
	{name: "require_scopes", kind: listSetting, usage: "scopes a valid credential must all carry"},
	{name: "allowed_subjects", kind: listSetting, usage: "subjects let through (default any)"},
	{name: "authorized_parties", kind: listSetting, usage: "origins a session token may have been issued to (azp)"},
	{name: "audience", kind: listSetting, usage: "audiences a token may have been issued for (aud)"},
	{name: "issuer", kind: listSetting, usage: "issuers a session token may come from (iss)"},
	{name: "protected_resource", kind: resourceSetting,
		usage: "the URI of the protected resource the route is (an MCP server's URL): OAuth tokens must be issued for it (aud)"},
	{name: "timeout", kind: durationSetting, usage: "budget of one call to Clerk (default 5s)"},
	{name: "clock_skew", kind: durationSetting, usage: "leeway on exp, nbf and iat (default 5s)"},
}

// typeNames lists the credential types verify knows, separated by commas.
func typeNames() string {
	all, _ := verify.ParseTokenTypes([]string{"any"})
	names := make([]string, len(all))
	for i, t := range all {
		names[i] = string(t)
	}
	return strings.Join(names, ", ")
}

// inspectSetting is a subdirective taken as a flag: its name, what it
// holds, whether it is a key (which may be a placeholder, since no output
// shows it), and, for a secret key, the variable that keeps it off the
// command line.
type inspectSetting struct {
	name, usage string
	kind        settingKind
	key         bool
	secretEnv   string
}

type settingKind int

const (
	textSetting settingKind = iota
	listSetting
	durationSetting
	resourceSetting // protected_resource's URI, without its block
)

// maxInput bounds what is read from standard input: well above the
// longest credential the handler looks at (16 KiB), which it refuses.
const maxInput = 64 << 10

func inspectCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect [--accept <type>…] [--require-scopes <scope>…] [--cookie [--client-uat <seconds>] [--suffixed]] [--json] < token",
		Short: "Says why clerk_m2m accepts or refuses a credential, and what it hands on",
		Long: `
Reads one credential (an M2M token, API key, OAuth token or session token)
from standard input and prints what clerk_m2m sees: its type and format, for
a JWT its header and claims with their times, and, with keys, the verdict of
a clerk_m2m handler configured by the flags: accepted with every
{http.auth.user.*} placeholder it sets, or refused with the reason
({http.auth.clerk_m2m.error}), the status and the headers it answers with.

The verdict is the handler's own: a clerk_m2m handler is provisioned from
the flags, which are named after its subdirectives and default to the same
CLERK_* environment variables, and serves one request carrying the
credential in "Authorization: Bearer" (with --cookie, in the __session
cookie, as a browser signed in to the app of publishable_key sends it;
with --suffixed, in the cookie Clerk's frontend names for that app),
making the same calls to Clerk with its cache off.

The credential is never printed, only its id or the first 8 hex digits of
its SHA-256; keys are never printed.

  printf '%s' "$TOKEN" | caddy clerk-m2m inspect --require-scopes mch_123

Exit status: 0 accepted; 1 no verdict could be had: a usage error, no key
to verify with (what the credential says is printed all the same), or a
configuration the handler refuses; 4 refused for what the credential is
(401, 403); 5 no verdict because of Clerk or the gateway's keys
(clerk_unavailable, clerk_rate_limited, misconfigured: 503, 500).
`,
		DisableFlagsInUseLine: true,
		Args:                  cobra.ArbitraryArgs, // refused by readCredential, which does not echo them
		RunE:                  func(cmd *cobra.Command, args []string) error { return exitWith(cmd, runInspect(cmd, args)) },
	}
	flags := cmd.Flags()
	flags.SetNormalizeFunc(flagSpelling)
	for _, s := range inspectSettings {
		if s.kind == listSetting {
			flags.StringSlice(flagName(s.name), nil, s.usage)
		} else {
			flags.String(flagName(s.name), "", s.usage)
		}
	}
	flags.Bool("cookie", false, "send the credential in the __session cookie, as a browser does, instead of the Authorization header")
	flags.String("client-uat", "", "with --cookie: the __client_uat cookie of the browser, in Unix seconds (none when not given)")
	flags.Bool("suffixed", false, "with --cookie: the cookies named for the app of publishable_key (__session_<suffix>), "+
		"as Clerk's frontend names them beside another app's on one domain")
	flags.Bool("json", false, "print one JSON object")
	flags.Bool("token-from-arg", false, "take the credential from the one argument (kept in shell history and shown by ps)")
	return cmd
}

func runInspect(cmd *cobra.Command, args []string) int {
	flags := cmd.Flags()
	for _, s := range inspectSettings {
		if s.secretEnv != "" {
			warnIfSecretInArgs(cmd, s.name, s.secretEnv)
		}
	}
	credential, err := readCredential(cmd, args)
	if err != nil {
		return usageError(cmd, "%v", err)
	}
	var mayBeShown []string // every setting but the keys
	for _, s := range inspectSettings {
		if !s.key {
			mayBeShown = append(mayBeShown, s.name)
		}
	}
	if err := refusePlaceholders(cmd, mayBeShown...); err != nil {
		return usageError(cmd, "%v", err)
	}
	config, err := inspectConfig(cmd)
	if err != nil {
		return usageError(cmd, "%v", err)
	}
	var carrier credentialCarrier
	carrier.cookie, _ = flags.GetBool("cookie")
	carrier.suffixed, _ = flags.GetBool("suffixed")
	if flags.Changed("client-uat") {
		if !carrier.cookie {
			return usageError(cmd, "--client-uat goes with --cookie")
		}
		uat, _ := flags.GetString("client-uat")
		carrier.clientUAT = &uat
	}
	if carrier.suffixed && !carrier.cookie {
		return usageError(cmd, "--suffixed goes with --cookie")
	}
	report := inspectCredential(credential, config, carrier, time.Now())
	if asJSON, _ := flags.GetBool("json"); asJSON {
		report.writeJSON(cmd.OutOrStdout())
	} else {
		report.writeText(cmd.OutOrStdout())
	}
	return report.ExitStatus
}

// readCredential reads the one credential: from standard input (without
// echo from a terminal), or from the argument with --token-from-arg.
// Errors never quote what was read.
func readCredential(cmd *cobra.Command, args []string) (string, error) {
	fromArg, _ := cmd.Flags().GetBool("token-from-arg")
	switch {
	case fromArg && len(args) == 1:
		printf(cmd.ErrOrStderr(), "%s: warning: a credential on the command line is kept in shell history and shown by ps; "+
			"pipe it to standard input instead\n", cmd.CommandPath())
		return oneCredential([]byte(args[0]))
	case fromArg:
		return "", errors.New("--token-from-arg takes the credential as the one argument")
	case len(args) > 0:
		return "", errors.New("the credential is read from standard input, not from the command line, where shell history " +
			`and ps keep it: printf '%s' "$TOKEN" | caddy clerk-m2m inspect (--token-from-arg allows an argument)`)
	}
	in := cmd.InOrStdin()
	if file, ok := in.(*os.File); ok && term.IsTerminal(int(file.Fd())) {
		printf(cmd.ErrOrStderr(), "Credential (not shown as you paste it, then Enter): ")
		line, err := term.ReadPassword(int(file.Fd()))
		printf(cmd.ErrOrStderr(), "\n")
		if err != nil {
			return "", fmt.Errorf("reading the terminal: %v", err)
		}
		return oneCredential(line)
	}
	data, err := io.ReadAll(io.LimitReader(in, maxInput+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("reading standard input: %v", err)
	case len(data) > maxInput:
		return "", fmt.Errorf("standard input holds more than %d KiB: no Clerk credential is that long", maxInput>>10)
	}
	return oneCredential(data)
}

// oneCredential is input without the blanks around it, which must be one
// word: one credential.
func oneCredential(input []byte) (string, error) {
	credential := string(bytes.TrimSpace(input))
	switch fields := strings.Fields(credential); {
	case len(fields) == 0:
		return "", errors.New(`no credential on standard input: printf '%s' "$TOKEN" | caddy clerk-m2m inspect`)
	case len(fields) == 2 && strings.EqualFold(fields[0], "Bearer"):
		return "", errors.New(`give the credential alone, without "Bearer"`)
	case len(fields) > 1:
		return "", errors.New("the input holds more than one word: give one credential")
	}
	return credential, nil
}

// inspectConfig is the clerk_m2m configuration the flags describe, in its
// JSON form, with the cache off.
func inspectConfig(cmd *cobra.Command) (json.RawMessage, error) {
	flags := cmd.Flags()
	config := map[string]any{"cache_ttl": 0}
	for _, s := range inspectSettings {
		if !flags.Changed(s.name) {
			continue
		}
		switch s.kind {
		case listSetting:
			config[s.name], _ = flags.GetStringSlice(s.name)
		case durationSetting:
			d, _, err := durationFlag(flags, s.name)
			if err != nil {
				return nil, err
			}
			config[s.name] = d
		case resourceSetting:
			uri, _ := flags.GetString(s.name)
			config[s.name] = ProtectedResource{Resource: uri}
		default:
			config[s.name], _ = flags.GetString(s.name)
		}
	}
	return json.Marshal(config)
}

// credentialCarrier is how the request carries the credential: in the
// Authorization header, or in the session cookie of a browser signed in to
// the app, suffixed for it or not, with, when clientUAT is set, a
// __client_uat cookie of the same name.
type credentialCarrier struct {
	cookie, suffixed bool
	clientUAT        *string
}

// request is a request to the gateway carrying credential, in the cookies
// the handler reads (setup.SessionCookies: plain, then suffixed; none
// without a publishable key, when the plain names are sent, and not read).
func (c credentialCarrier) request(credential string, setup verify.Setup) (*http.Request, error) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	if !c.cookie {
		req.Header.Set("Authorization", "Bearer "+credential)
		return req, nil
	}
	names := verify.CookieNames{Session: verify.SessionCookie, ClientUAT: verify.ClientUATCookie}
	switch {
	case c.suffixed && len(setup.SessionCookies) == 0:
		return nil, errors.New("--suffixed names the cookies after publishable_key, which is not set")
	case c.suffixed:
		names = setup.SessionCookies[1]
	case len(setup.SessionCookies) > 0:
		names = setup.SessionCookies[0]
	}
	cookies := names.Session + "=" + credential
	if c.clientUAT != nil {
		cookies += "; " + names.ClientUAT + "=" + *c.clientUAT
	}
	if names.DevBrowser != "" {
		cookies += "; " + names.DevBrowser + "=inspect" // a development instance's browser always has one
	}
	req.Header.Set("Cookie", cookies)
	return req, nil
}

// inspectCredential describes credential and has the clerk_m2m handler of
// config judge it, at now.
func inspectCredential(credential string, config json.RawMessage, carrier credentialCarrier, now time.Time) *inspectReport {
	sum := sha256.Sum256([]byte(credential))
	report := &inspectReport{Fingerprint: "sha256:" + hex.EncodeToString(sum[:4])}
	report.describe(credential, now)
	report.judge(credential, config, carrier)
	return report
}

// describe says what the credential's shape says, as the verifier reads it.
func (r *inspectReport) describe(credential string, now time.Time) {
	inspection, err := verify.Inspect(credential)
	var verr *verify.Error
	switch {
	case errors.As(err, &verr):
		r.TokenFormat, r.NotAClerkCredential = verr.Format, verr.Description
		return
	case err != nil:
		r.NotAClerkCredential = err.Error()
		return
	}
	r.TokenType, r.TokenFormat = inspection.TokenType, inspection.Format
	if h := inspection.Header; h != nil {
		r.Header = &headerReport{Alg: h.Alg, Kid: h.Kid, Typ: h.Typ, Cat: h.Cat, Category: h.Category()}
		r.Claims = inspection.Claims
		r.Times = claimTimes(inspection.Claims, now)
	}
}

// judge provisions a clerk_m2m handler with config and has it serve one
// request carrying credential.
func (r *inspectReport) judge(credential string, config json.RawMessage, carrier credentialCarrier) {
	h, release, err := provisionForInspection(config)
	if err != nil {
		r.Verdict, r.NotVerifiedBecause, r.ExitStatus = verdictNotVerified, err.Error(), exitFailed
		return
	}
	defer release()
	setup := h.verifier.Setup()
	r.CheckedWith = &checkedWith{
		Accept:                   setup.Accept,
		OpaqueTokensVerifiedWith: setup.OpaqueWith,
		JWTsVerifiedWith:         setup.JWTsWith,
		APIURL:                   setup.APIURL,
		CredentialIn:             "authorization_header",
	}
	switch {
	case carrier.suffixed:
		r.CheckedWith.CredentialIn = "suffixed_session_cookie"
	case carrier.cookie:
		r.CheckedWith.CredentialIn = "session_cookie"
	}
	sent, err := carrier.request(credential, setup)
	if err != nil {
		r.Verdict, r.NotVerifiedBecause, r.ExitStatus = verdictNotVerified, err.Error(), exitFailed
		return
	}

	repl := caddy.NewReplacer()
	answer := httptest.NewRecorder()
	// Every request Caddy serves comes to a server: this one keeps no
	// access log and trusts no proxy.
	req := caddyhttp.PrepareRequest(sent, repl, answer, new(caddyhttp.Server))
	accepted := false
	err = h.ServeHTTP(answer, req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		accepted = true
		return nil
	}))
	if accepted && err == nil {
		r.Verdict, r.ExitStatus = verdictAccepted, exitOK
		r.readPlaceholders(repl)
		return
	}
	r.readRefusal(err, repl, answer.Header())
}

// unknownToTheMachine is the hint of an opaque M2M token Clerk does not
// know when asked with a machine's key: it knows only the tokens granted
// to that machine, and a token of the machine itself is none of them.
const unknownToTheMachine = "with machine_secret_key, Clerk knows only the M2M tokens granted to that machine (its id " +
	"among their scopes), not the machine's own: a token minted with the same key, as caddy clerk-m2m mint does with " +
	"this host's CLERK_MACHINE_SECRET_KEY, is refused. Mint as the calling machine (--machine-secret-key), and grant " +
	"it this machine in Clerk's dashboard"

// refusalHint says what a refusal may mean that its reason does not.
func (r *inspectReport) refusalHint(verr *verify.Error) string {
	if verr.TokenType == verify.M2MToken && backend.KindOf(verr.Err) == backend.KindNotFound &&
		r.CheckedWith.OpaqueTokensVerifiedWith == "machine_secret_key" {
		return unknownToTheMachine
	}
	return ""
}

// provisionForInspection loads a clerk_m2m handler from config as Caddy
// loads one from a configuration: provisioned in a Caddy context that
// logs warnings and errors to standard error, and validated. Its
// configuration is never started, so no signing keys are fetched in the
// background: it calls Clerk only for the credential it verifies. release
// cleans it up (its shared connections and key set included).
func provisionForInspection(config json.RawMessage) (*Handler, func(), error) {
	base, err := caddy.ProvisionContext(&caddy.Config{
		Admin:   &caddy.AdminConfig{Disabled: true},
		Logging: &caddy.Logging{Logs: map[string]*caddy.CustomLog{caddy.DefaultLoggerName: {BaseLog: caddy.BaseLog{Level: "WARN"}}}},
	})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := caddy.NewContext(base)
	module, err := ctx.LoadModuleByID("http.handlers.clerk_m2m", config)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("the configuration is refused: %v", err)
	}
	return module.(*Handler), cancel, nil
}

// readPlaceholders asks the replacer for every documented identity
// placeholder, and for one {http.auth.user.claims.<path>} per claim.
func (r *inspectReport) readPlaceholders(repl *caddy.Replacer) {
	r.Placeholders = map[string]string{}
	read := func(name string) {
		value, _ := repl.GetString(identityPlaceholderPrefix + name)
		r.Placeholders[identityPlaceholderPrefix+name] = value
		r.placeholderOrder = append(r.placeholderOrder, identityPlaceholderPrefix+name)
	}
	for _, name := range new(verify.Identity).FieldNames() {
		read(name)
	}
	claimsJSON, _ := repl.GetString(identityPlaceholderPrefix + "claims")
	var claims map[string]any
	if decodeNumbers([]byte(claimsJSON), &claims) == nil {
		for _, path := range claimPaths(claims, "") {
			read(claimPlaceholderPrefix + path)
		}
	}
}

// claimPaths lists the paths {http.auth.user.claims.<path>} answers for:
// every claim, and every member of a claim that is an object, sorted.
// Names holding a dot cannot be spelled in a path and are left out.
func claimPaths(claims map[string]any, prefix string) []string {
	var paths []string
	for name, value := range claims {
		if strings.Contains(name, ".") {
			continue
		}
		paths = append(paths, prefix+name)
		if object, ok := value.(map[string]any); ok {
			paths = append(paths, claimPaths(object, prefix+name+".")...)
		}
	}
	slices.Sort(paths)
	return paths
}

// readRefusal reads what the handler answers: the reason it sets, the
// status and the headers.
func (r *inspectReport) readRefusal(err error, repl *caddy.Replacer, header http.Header) {
	var handlerErr caddyhttp.HandlerError
	if !errors.As(err, &handlerErr) {
		// Not an answer of the handler's: no verdict to give.
		r.Verdict, r.NotVerifiedBecause, r.ExitStatus = verdictNotVerified, fmt.Sprint(err), exitFailed
		return
	}
	r.Verdict, r.ExitStatus, r.Status = verdictRefused, exitRefused, handlerErr.StatusCode
	reason, _ := repl.GetString(verifyErrorPlaceholder)
	r.Reason = verify.Reason(reason)
	var verr *verify.Error
	if errors.As(err, &verr) {
		r.Description, r.Hint = verr.Description, r.refusalHint(verr)
		if verr.Err != nil {
			r.Cause = verr.Err.Error()
		}
	}
	r.WWWAuthenticate, r.RetryAfter = header.Get("WWW-Authenticate"), header.Get("Retry-After")
	if r.Status >= http.StatusInternalServerError {
		r.ExitStatus = exitTrouble // Clerk trouble, or the keys: nothing said about the credential
	}
}
