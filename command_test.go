package clerkm2m

import (
	"bytes"
	"encoding/json"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
)

func TestTimesInWords(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		claim string
		at    time.Duration // from now
		want  string
	}{
		{"exp", -3*time.Minute - 20*time.Second, "expired 3 minutes ago"},
		{"exp", 0, "expired 0 seconds ago"},
		{"exp", -time.Second, "expired 1 second ago"},
		{"exp", -119 * time.Second, "expired 119 seconds ago"},
		{"exp", 54*time.Minute + 59*time.Second, "valid for 54 more minutes"},
		{"exp", 90 * time.Minute, "valid for 90 more minutes"},
		{"exp", 3 * time.Hour, "valid for 3 more hours"},
		{"exp", 47 * time.Hour, "valid for 47 more hours"},
		{"exp", 30 * 24 * time.Hour, "valid for 30 more days"},
		{"exp", time.Second, "valid for 1 more second"},
		{"nbf", 2 * time.Minute, "not valid for another 2 minutes"},
		{"nbf", -10 * time.Second, "valid since 10 seconds ago"},
		{"iat", -5 * time.Minute, "issued 5 minutes ago"},
		{"iat", 40 * time.Second, "issued 40 seconds in the future"},
	} {
		assert.Equal(t, tc.want, timePhrases[tc.claim](now.Add(tc.at), now), "%s %v", tc.claim, tc.at)
	}
}

func TestClaimTimes(t *testing.T) {
	now := time.Unix(1_772_366_400, 0)
	times := claimTimes(json.RawMessage(`{"exp":1772366220.9,"iat":"yesterday","nbf":1e300,"sub":"mch_1"}`), now)
	assert.Equal(t, map[string]*timeReport{
		"exp": {Unix: 1772366220, UTC: "2026-03-01 11:57:00 UTC", Relative: "expired 3 minutes ago"},
	}, times, "a fraction dropped, as the verifier drops it; what is no date, left out")
}

// TestInspectFlagsAreSubdirectives: every flag of inspect that configures
// the handler is a subdirective of the same name, and every subdirective
// is a flag but those that change nothing in a verdict on one credential.
func TestInspectFlagsAreSubdirectives(t *testing.T) {
	fields := jsonFields(Handler{})
	var flags []string
	for _, s := range inspectSettings {
		assert.Contains(t, fields, s.name)
		flags = append(flags, s.name)
	}
	var left []string
	for _, name := range handlerSubdirectives.names() {
		if !slices.Contains(flags, name) {
			left = append(left, name)
		}
	}
	assert.ElementsMatch(t, []string{"optional", "strip_authorization", "disable_metrics", "cache_ttl", "jwks_max_stale",
		"max_clerk_calls", "max_clerk_rate", "cache_max_bytes", "shared_cache"}, left)

	cmd := inspectCommand()
	for _, name := range flags {
		assert.NotNil(t, cmd.Flags().Lookup(name), "--%s", name)
	}
}

// TestInspectionLeavesNothingRunning: the handler inspect provisions calls
// Clerk for the credential it verifies and nothing else (no signing keys
// fetched ahead), and once the verdict is in, it is cleaned up: nothing of
// it stays in the shared pool, and no goroutine of it runs on.
func TestInspectionLeavesNothingRunning(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	gateway, caller := clerk.NewMachine("gateway"), clerk.NewMachine("caller")
	config, err := json.Marshal(map[string]any{"api_url": clerk.URL, "secret_key": clerk.SecretKey(),
		"machine_secret_key": gateway.SecretKey, "cache_ttl": 0})
	require.NoError(t, err)
	pooled, running := pooledValues(), goroutinesOfTheModule()

	session := clerk.MintSessionJWT("user_1", backendtest.SessionOptions{})
	report := inspectCredential(session, config, credentialCarrier{}, time.Now())
	assert.Equal(t, "token_type_not_accepted", string(report.Reason))
	assert.Empty(t, clerk.Requests(), "no call to Clerk: none was needed")

	opaque, _ := clerk.CreateM2MToken(caller, backendtest.TokenOptions{Scopes: []string{gateway.ID}})
	jwt := clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{Scopes: []string{gateway.ID}}})
	for _, credential := range []string{opaque, jwt} {
		report = inspectCredential(credential, config, credentialCarrier{}, time.Now())
		assert.Equal(t, verdictAccepted, report.Verdict, "%+v", report)
	}
	assert.Equal(t, 1, clerk.Calls("/m2m_tokens/verify"))
	assert.Equal(t, 1, clerk.Calls("/v1/jwks"))
	assert.Len(t, clerk.Requests(), 2, "the calls the credentials needed, and no other")

	assert.Equal(t, pooled, pooledValues(), "the shared instance is released")
	assert.Eventually(t, func() bool { return goroutinesOfTheModule() <= running }, 10*time.Second, 10*time.Millisecond,
		"no goroutine of the handler runs on")
}

func pooledValues() int {
	n := 0
	pool.Range(func(any, any) bool { n++; return true })
	return n
}

// goroutinesOfTheModule counts the goroutines running code of the
// verifier, of the client of Clerk's API or of the shared instance.
func goroutinesOfTheModule() int {
	buf := make([]byte, 1<<22)
	stacks := string(buf[:runtime.Stack(buf, true)])
	n := 0
	for _, stack := range strings.Split(stacks, "\n\n") {
		for _, code := range []string{"clerk-m2m/verify.", "clerk-m2m/backend.", "clerk-m2m.(*instance)"} {
			if strings.Contains(stack, code) {
				n++
				break
			}
		}
	}
	return n
}

// TestReportsShowNoControlSequences: text from a credential reaches the
// terminal escaped, in both forms of the report: claims' values and names,
// header members, and the placeholders named after the claims.
func TestReportsShowNoControlSequences(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	hostile := "\x1b]0;pwned\x07\u009b31m\u2028\U0001F600"
	token := clerk.MintM2MJWT(clerk.NewMachine("caller"), backendtest.JWTOptions{
		TokenOptions: backendtest.TokenOptions{Claims: map[string]any{"note": hostile, hostile: "named"}},
		Header:       map[string]any{"kid": hostile}})
	report := inspectCredential(token, json.RawMessage(`{"jwt_key":`+jsonString(t, clerk.PublicKeyPEM())+`}`),
		credentialCarrier{}, time.Now())
	require.Equal(t, hostile, report.Header.Kid)
	require.Equal(t, verdictAccepted, report.Verdict, "%+v", report)
	require.Equal(t, "named", report.Placeholders["http.auth.user.claims."+hostile], "a placeholder named after the claim")

	var text, asJSON bytes.Buffer
	report.writeText(&text)
	report.writeJSON(&asJSON)
	for name, out := range map[string]string{"text": text.String(), "json": asJSON.String()} {
		for _, c := range []byte(out) {
			if c != '\n' && (c < 0x20 || c > 0x7e) {
				t.Fatalf("the %s report holds byte %#x:\n%s", name, c, out)
			}
		}
	}
	var decoded struct {
		Header map[string]string `json:"header"`
		Claims map[string]any    `json:"claims"`
	}
	require.NoError(t, json.Unmarshal(asJSON.Bytes(), &decoded))
	assert.Equal(t, hostile, decoded.Header["kid"], "escaped, the JSON means the same")
	assert.Equal(t, hostile, decoded.Claims["note"])
}

func TestProvisionForInspectionUsesTheHandlersChecks(t *testing.T) {
	testenv.ClearClerk(t)
	_, _, err := provisionForInspection(json.RawMessage(`{"secret_key":"ak_swapped"}`))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "a key starting with ak_ is a machine secret key")
	_, _, err = provisionForInspection(json.RawMessage(`{"secret_ky":"sk_test_x"}`))
	assert.ErrorContains(t, err, `unknown field "secret_ky"`)
	h, release, err := provisionForInspection(json.RawMessage(`{"jwt_key":` + jsonString(t, testPublicKeyPEM(t)) + `,"cache_ttl":0}`))
	require.NoError(t, err)
	defer release()
	assert.Equal(t, caddy.Duration(0), *h.CacheTTL)
}

func jsonString(t *testing.T, s string) string {
	t.Helper()
	data, err := json.Marshal(s)
	require.NoError(t, err)
	return string(data)
}

func testPublicKeyPEM(t *testing.T) string {
	t.Helper()
	clerk := backendtest.New()
	defer clerk.Close()
	return clerk.PublicKeyPEM()
}

// TestCommandsAreDocumented: the README's Commands section names every
// flag of the commands, and no flag they do not have.
func TestCommandsAreDocumented(t *testing.T) {
	section := markdownSection(t, readFile(t, "README.md"), "## Commands")
	flags := map[string]bool{}
	for _, cmd := range []*cobra.Command{inspectCommand(), mintCommand()} {
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			flags[f.Name] = true
			assert.Contains(t, section, "`--"+f.Name, "%s --%s", cmd.Name(), f.Name)
		})
	}
	for _, m := range regexp.MustCompile("`--([a-z_-]+)").FindAllStringSubmatch(section, -1) {
		assert.True(t, flags[m[1]], "the README names --%s, which no command has (the flags are spelled with dashes)", m[1])
	}
}
