package verify

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// audienceVerifier accepts every type, and the audiences given.
func audienceVerifier(b Backend, keys KeySource, audience ...string) *Verifier {
	accept, _ := ParseTokenTypes([]string{"any"})
	return New(Options{Accept: accept, Backend: b, Keys: keys, ClockSkew: 5 * time.Second, now: fixedClock, Audience: audience})
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

// TestAudienceOfSessionsAndM2MJWTs: Clerk's lenient rule, only when the
// token names an audience; a malformed one is refused.
func TestAudienceOfSessionsAndM2MJWTs(t *testing.T) {
	private, _ := signingKeys(t)
	keys := &countingKeys{signing: rsaKey(private, "RS256")}
	for name, tc := range audiencesTried {
		changes := map[string]any{"aud": tc.aud}
		for kind, token := range map[TokenType]string{
			SessionToken: sign(t, private, sessionHeader(), with(sessionPayload(), changes)),
			M2MToken:     sign(t, private, m2mHeader(), with(m2mPayload(), with(changes, map[string]any{"scopes": "mch_1"}))),
		} {
			t.Run(string(kind)+" "+name, func(t *testing.T) {
				_, err := audienceVerifier(nil, keys).Verify(context.Background(), token)
				require.NoError(t, err, "no audience configured, nothing checked")
				_, err = audienceVerifier(nil, keys, "https://api.example.com").Verify(context.Background(), token)
				switch tc.kind {
				case "other", "malformed":
					assert.Equal(t, kind, requireReason(t, err, ReasonInvalid).TokenType)
				default:
					assert.NoError(t, err)
				}
			})
		}
	}
}

// TestAudienceOfOAuthTokens: Clerk's strict rule for OAuth tokens, JWT or
// opaque: with an audience configured, the token must name one of them.
func TestAudienceOfOAuthTokens(t *testing.T) {
	private, _ := signingKeys(t)
	keys := &countingKeys{signing: rsaKey(private, "RS256")}
	expiration := testNow.Add(time.Hour).UnixMilli()
	for name, tc := range audiencesTried {
		var raw json.RawMessage
		if tc.aud != nil {
			raw, _ = json.Marshal(tc.aud)
		}
		answer := &backend.OAuthAccessToken{Object: "clerk_idp_oauth_access_token", ID: "oat_1", Subject: "user_1",
			Expiration: &expiration, Audience: raw}
		for format, token := range map[Format]string{
			JWT:    sign(t, private, oauthHeader(), with(oauthPayload(), map[string]any{"aud": tc.aud})),
			Opaque: "oat_8XOIucKvqHVr5tYP123456789abcdefghij",
		} {
			t.Run(string(format)+" "+name, func(t *testing.T) {
				b := &fakeBackend{oauth: answer}
				_, err := audienceVerifier(b, keys).Verify(context.Background(), token)
				require.NoError(t, err, "no audience configured, nothing checked")
				id, err := audienceVerifier(b, keys, "https://api.example.com").Verify(context.Background(), token)
				if tc.kind == "match" {
					require.NoError(t, err)
					assert.Equal(t, jsonRoundTrip(t, tc.aud), jsonRoundTrip(t, id.Claims()["aud"]), "the audience is in the claims")
					return
				}
				assert.Equal(t, OAuthToken, requireReason(t, err, ReasonInvalid).TokenType)
			})
		}
	}
}

// TestAudienceSparesAPIKeysAndOpaqueM2MTokens: Clerk checks who those were
// granted to; they carry no audience.
func TestAudienceSparesAPIKeysAndOpaqueM2MTokens(t *testing.T) {
	b := &fakeBackend{apiKey: apiKeyAnswer("user_1", nil), answer: m2mAnswer(nil)}
	v := audienceVerifier(b, nil, "https://api.example.com")
	_, err := v.Verify(context.Background(), "ak_LCWGdaM8mv8K4PC57IICZQXAeWfCgF30DZaFXHoGn9")
	assert.NoError(t, err)
	_, err = v.Verify(context.Background(), "mt_8XOIucKvqHVr5tYP123456789abcdefghij")
	assert.NoError(t, err)
}
