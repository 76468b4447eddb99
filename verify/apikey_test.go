package verify

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

func apiKeyAnswer(subject string, change func(*backend.APIKey)) *backend.APIKey {
	answer := &backend.APIKey{Object: "api_key", ID: "ak_ey966f1b1xf93586b2debdcadb0b3bd1", Type: "api_key",
		Subject: subject, Name: "my-api-key", Claims: json.RawMessage(`{"foo":"bar"}`), Scopes: []string{"read:foo", "write:bar"}}
	if change != nil {
		change(answer)
	}
	return answer
}

func TestAPIKeys(t *testing.T) {
	const secret = "ak_LCWGdaM8mv8K4PC/57IICZQXAeWfCgF30DZaFXHoGn9="
	verify := func(clerk *fakeClerk) (*Identity, error) {
		return newVerifier(t, allTypes(clerk, nil)).Verify(context.Background(), secret)
	}
	id, err := verify(&fakeClerk{apiKey: apiKeyAnswer("user_2vYVtestTESTtestTESTtestTESTtest", nil)})
	require.NoError(t, err)
	assert.Equal(t, "user_2vYVtestTESTtestTESTtestTESTtest", id.Subject)
	assert.Equal(t, APIKey, id.TokenType)
	assert.Equal(t, Opaque, id.Format)
	assert.Equal(t, "ak_ey966f1b1xf93586b2debdcadb0b3bd1", id.TokenID)
	assert.Equal(t, "my-api-key", id.Name)
	assert.Equal(t, []string{"read:foo", "write:bar"}, id.Scopes)
	assert.Equal(t, `{"foo":"bar"}`, id.ClaimsJSON())
	assert.Empty(t, id.OrgID)
	assert.True(t, id.ExpiresAt.IsZero(), "API keys may never expire")

	id, err = verify(&fakeClerk{apiKey: apiKeyAnswer("org_2vYVtestTESTtestTESTtestTESTtest", nil)})
	require.NoError(t, err)
	assert.Equal(t, "org_2vYVtestTESTtestTESTtestTESTtest", id.OrgID, "an organization's key names the organization")

	for name, tc := range map[string]struct {
		clerk *fakeClerk
		want  Reason
	}{
		"revoked":       {&fakeClerk{apiKey: apiKeyAnswer("user_1", func(k *backend.APIKey) { k.Revoked = true })}, ReasonInvalid},
		"expired":       {&fakeClerk{apiKey: apiKeyAnswer("user_1", func(k *backend.APIKey) { k.Expired = true })}, ReasonExpired},
		"claims a list": {&fakeClerk{apiKey: apiKeyAnswer("user_1", func(k *backend.APIKey) { k.Claims = json.RawMessage(`[1]`) })}, ReasonUnavailable},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := verify(tc.clerk)
			verr := requireReason(t, err, tc.want)
			assert.Equal(t, APIKey, verr.TokenType)
		})
	}
}
