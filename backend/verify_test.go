package backend

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const apiKeyAnswer = `{"object":"api_key","id":"ak_ey966f1b1xf93586b2debdcadb0b3bd1","type":"api_key",
	"subject":"user_2vYVtestTESTtestTESTtestTESTtest","name":"my-api-key","description":null,"claims":{"foo":"bar"},
	"scopes":["read:foo","write:bar"],"revoked":false,"revocation_reason":null,"expired":false,"expiration":null,
	"created_by":null,"last_used_at":null,"created_at":1753743316590,"updated_at":1753743316590}`

const oauthAnswer = `{"object":"clerk_idp_oauth_access_token","id":"oat_2VTWUzvGC5UhdJCNx6xG1D98edc","type":"oauth:access_token",
	"client_id":"client_2VTWUzvGC5UhdJCNx6xG1D98edc","subject":"user_1","scopes":["read:foo"],"revoked":false,
	"revocation_reason":null,"expired":false,"expiration":1753746916590,"created_at":1753743316590,"updated_at":1753743316590,
	"act":{"sub":"user_admin","act":{"sub":"svc"}}}`

// TestVerifyRequests: each verify call posts the credential to its route
// (machine routes have no /v1 prefix) with Clerk's headers and the key it
// calls for, the machine key only for M2M tokens, and reads the answer.
func TestVerifyRequests(t *testing.T) {
	m2m := func(t *testing.T, c *Client) error {
		tok, err := c.VerifyM2MToken(budget(t, time.Second), "mt_abc")
		if err == nil {
			assert.Equal(t, "mt_1", tok.ID)
			assert.Equal(t, "mch_1", tok.Subject)
			assert.Equal(t, []string{"mch_2"}, tok.Scopes)
			assert.JSONEq(t, `{"foo":"bar"}`, string(tok.Claims))
			require.NotNil(t, tok.Expiration)
			assert.Equal(t, int64(1753746916590), *tok.Expiration)
		}
		return err
	}
	for _, tc := range []struct {
		name, machineKey, wantAuth, path, body, answer string
		call                                           func(*testing.T, *Client) error
	}{
		{"M2M token, machine key preferred", "ak_1", "Bearer ak_1", "/m2m_tokens/verify", `{"token":"mt_abc"}`, verifyAnswer, m2m},
		{"M2M token, instance key otherwise", "", "Bearer sk_test_1", "/m2m_tokens/verify", `{"token":"mt_abc"}`, verifyAnswer, m2m},
		{"api key", "ak_1", "Bearer sk_test_1", "/api_keys/verify", `{"secret":"ak_secret"}`, apiKeyAnswer, func(t *testing.T, c *Client) error {
			key, err := c.VerifyAPIKey(budget(t, time.Second), "ak_secret")
			if err == nil {
				assert.Equal(t, "ak_ey966f1b1xf93586b2debdcadb0b3bd1", key.ID)
				assert.Equal(t, "user_2vYVtestTESTtestTESTtestTESTtest", key.Subject)
				assert.Equal(t, "my-api-key", key.Name)
				assert.Equal(t, []string{"read:foo", "write:bar"}, key.Scopes)
				assert.JSONEq(t, `{"foo":"bar"}`, string(key.Claims))
				assert.Nil(t, key.Expiration)
			}
			return err
		}},
		{"oauth token", "ak_1", "Bearer sk_test_1", "/oauth_applications/access_tokens/verify", `{"access_token":"oat_token"}`, oauthAnswer, func(t *testing.T, c *Client) error {
			token, err := c.VerifyOAuthToken(budget(t, time.Second), "oat_token")
			if err == nil {
				assert.False(t, token.Inactive())
				assert.Equal(t, "oat_2VTWUzvGC5UhdJCNx6xG1D98edc", token.ID)
				assert.Equal(t, "client_2VTWUzvGC5UhdJCNx6xG1D98edc", token.ClientID)
				assert.Equal(t, "user_1", token.Subject)
				assert.JSONEq(t, `{"sub":"user_admin","act":{"sub":"svc"}}`, string(token.Actor))
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got *http.Request
			var body []byte
			c := fakeAPI(t, "sk_test_1", tc.machineKey, func(w http.ResponseWriter, r *http.Request) {
				got = r
				body, _ = io.ReadAll(r.Body)
				writeJSON(w, 200, tc.answer)
			})
			require.NoError(t, tc.call(t, c))
			assert.Equal(t, http.MethodPost, got.Method)
			assert.Equal(t, tc.path, got.URL.Path)
			assert.Equal(t, tc.wantAuth, got.Header.Get("Authorization"))
			assert.Equal(t, APIVersion, got.Header.Get("Clerk-API-Version"))
			assert.Equal(t, "application/json", got.Header.Get("Content-Type"))
			assert.Equal(t, "test-agent/1", got.Header.Get("User-Agent"))
			assert.JSONEq(t, tc.body, string(body))
		})
	}
}

func TestVerifyOAuthTokenInactive(t *testing.T) {
	c := fakeAPI(t, "sk_test_1", "", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, `{"active":false}`) })
	token, err := c.VerifyOAuthToken(budget(t, time.Second), "oat_token")
	require.NoError(t, err)
	assert.True(t, token.Inactive())
}
