package verify

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// audienceVerifier accepts every type, and the audiences given.
func audienceVerifier(t *testing.T, clerk clerkAPI, keys keySource, audience ...string) *Verifier {
	opts := allTypes(clerk, keys)
	opts.Audience = audience
	return newVerifier(t, opts)
}

// The "aud" values the tests try, and which of them name the audience
// https://api.example.com, name another, name none, or are malformed.
var audiencesTried = map[string]struct {
	aud  any // nil: no "aud" at all
	kind string
}{
	"absent":               {nil, "none"},
	"null":                 {json.RawMessage("null"), "none"},
	"empty string":         {"", "none"},
	"empty list":           {[]string{}, "none"},
	"list of empty":        {[]string{""}, "none"},
	"the audience":         {"https://api.example.com", "match"},
	"in a list":            {[]string{"https://other.example.com", "https://api.example.com"}, "match"},
	"with an empty member": {[]string{"", "https://api.example.com"}, "match, with an empty member"},
	"another":              {"https://other.example.com", "other"},
	"others":               {[]string{"https://other.example.com"}, "other"},
	"a number":             {7, "malformed"},
	"numbers":              {[]int{1, 2}, "malformed"},
	"an object":            {map[string]any{"aud": "https://api.example.com"}, "malformed"},
	"nested":               {[][]string{{"https://api.example.com"}}, "malformed"},
}

// TestAudience: with an audience configured, session tokens and M2M JWTs
// follow Clerk's lenient rule (checked only when the token names an
// audience; a malformed one is refused), OAuth tokens, JWT or opaque, its
// strict one (they must name one of them, which stays in their claims),
// and API keys and opaque M2M tokens none (they carry no audience; whom an
// opaque M2M token was granted to Clerk checks only for a machine secret
// key). With none configured, nothing is checked.
func TestAudience(t *testing.T) {
	private, _ := signingKeys(t)
	keys := keysFor(private, "RS256")
	expiration := testNow.Add(time.Hour).UnixMilli()
	for name, tc := range audiencesTried {
		var raw json.RawMessage
		if tc.aud != nil {
			raw, _ = json.Marshal(tc.aud)
		}
		clerk := &fakeClerk{apiKey: apiKeyAnswer("user_1", nil), m2m: m2mAnswer(nil), oauth: &backend.OAuthAccessToken{
			Object: "clerk_idp_oauth_access_token", ID: "oat_1", Subject: "user_1", Expiration: &expiration, Audience: raw}}
		open, strict := audienceVerifier(t, clerk, keys), audienceVerifier(t, clerk, keys, "https://api.example.com")
		changes := map[string]any{"aud": tc.aud}
		for _, credential := range []struct {
			tokenType   TokenType
			token, rule string
		}{
			{SessionToken, sign(t, private, sessionHeader(), with(sessionPayload(), changes)), "lenient"},
			{M2MToken, sign(t, private, m2mHeader(), with(m2mPayload(), with(changes, map[string]any{"scopes": "mch_1"}))), "lenient"},
			{OAuthToken, sign(t, private, oauthHeader(), with(oauthPayload(), changes)), "strict"},
			{OAuthToken, "oat_8XOIucKvqHVr5tYP123456789abcdefghij", "strict"},
			{APIKey, "ak_LCWGdaM8mv8K4PC57IICZQXAeWfCgF30DZaFXHoGn9", "none"},
			{M2MToken, "mt_8XOIucKvqHVr5tYP123456789abcdefghij", "none"},
		} {
			t.Run(name+", "+string(credential.tokenType)+" "+credential.token[:3], func(t *testing.T) {
				_, err := open.Verify(context.Background(), credential.token)
				require.NoError(t, err, "no audience configured, nothing checked")
				id, err := strict.Verify(context.Background(), credential.token)
				if credential.rule == "lenient" && (tc.kind == "other" || tc.kind == "malformed") ||
					credential.rule == "strict" && tc.kind != "match" {
					assert.Equal(t, credential.tokenType, requireReason(t, err, ReasonInvalid).TokenType)
					return
				}
				require.NoError(t, err)
				if credential.rule == "strict" {
					assert.Equal(t, jsonRoundTrip(t, tc.aud), jsonRoundTrip(t, id.Claims()["aud"]), "the audience is in the claims")
				}
			})
		}
	}
}

// TestOnlyTheMachineKeyBindsOpaqueM2MTokens: an opaque M2M token granted
// only to another machine passes `audience <this machine>` with the
// instance secret key, since it carries no audience and Clerk checks whom
// it was granted to only for a machine secret key; that key, or
// require_scopes with the machine's id, refuses it.
func TestOnlyTheMachineKeyBindsOpaqueM2MTokens(t *testing.T) {
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	clerk.SetClock(fixedClock)
	gateway, other := clerk.NewMachine("gateway"), clerk.NewMachine("other")
	token, _ := clerk.CreateM2MToken(clerk.NewMachine("caller"), backendtest.TokenOptions{Scopes: []string{other.ID}})
	verify := func(opts Options) error {
		opts.APIURL, opts.Audience = clerk.URL, []string{gateway.ID}
		_, err := newVerifier(t, opts).Verify(context.Background(), token)
		return err
	}

	assert.NoError(t, verify(Options{SecretKey: clerk.SecretKey()}), "the secret key alone accepts it, audience or not")
	requireReason(t, verify(Options{MachineSecretKey: gateway.SecretKey}), ReasonInvalid)
	requireReason(t, verify(Options{SecretKey: clerk.SecretKey(), RequireScopes: []string{gateway.ID}}), ReasonInsufficientScope)
}
