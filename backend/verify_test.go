package backend

import (
	"io"
	"net/http"
	"sync/atomic"
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

func TestVerifyAPIKeyAndOAuthTokenUseTheInstanceKey(t *testing.T) {
	for _, tc := range []struct {
		name, path, body, answer string
		call                     func(*Client) error
	}{
		{"api key", "/api_keys/verify", `{"secret":"ak_secret"}`, apiKeyAnswer, func(c *Client) error {
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
		{"oauth token", "/oauth_applications/access_tokens/verify", `{"access_token":"oat_token"}`, oauthAnswer, func(c *Client) error {
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
			c := fakeAPI(t, "sk_test_1", "ak_machine", func(w http.ResponseWriter, r *http.Request) {
				got = r
				body, _ = io.ReadAll(r.Body)
				writeJSON(w, 200, tc.answer)
			})
			require.NoError(t, tc.call(c))
			assert.Equal(t, http.MethodPost, got.Method)
			assert.Equal(t, tc.path, got.URL.Path)
			assert.Equal(t, "Bearer sk_test_1", got.Header.Get("Authorization"), "never the machine key")
			assert.JSONEq(t, tc.body, string(body))
		})
	}
}

func TestVerifyAPIKeyAndOAuthTokenNeedTheInstanceKey(t *testing.T) {
	var calls atomic.Int32
	c := fakeAPI(t, "", "ak_machine", func(http.ResponseWriter, *http.Request) { calls.Add(1) })
	_, err := c.VerifyAPIKey(budget(t, time.Second), "ak_secret")
	require.Error(t, err)
	_, err = c.VerifyOAuthToken(budget(t, time.Second), "oat_token")
	require.Error(t, err)
	assert.Zero(t, calls.Load())
}

func TestVerifyOAuthTokenInactive(t *testing.T) {
	c := fakeAPI(t, "sk_test_1", "", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, `{"active":false}`) })
	token, err := c.VerifyOAuthToken(budget(t, time.Second), "oat_token")
	require.NoError(t, err)
	assert.True(t, token.Inactive())
}

func TestVerifyAnswersOfTheWrongShape(t *testing.T) {
	for name, tc := range map[string]struct {
		body string
		call func(*Client) error
	}{
		"api key answer is an M2M token": {`{"object":"machine_to_machine_token","id":"mt_1","subject":"mch_1"}`, func(c *Client) error {
			_, err := c.VerifyAPIKey(budget(t, time.Second), "ak_x")
			return err
		}},
		"api key without subject": {`{"object":"api_key","id":"ak_1"}`, func(c *Client) error {
			_, err := c.VerifyAPIKey(budget(t, time.Second), "ak_x")
			return err
		}},
		"oauth answer without object": {`{"id":"oat_1","subject":"user_1"}`, func(c *Client) error {
			_, err := c.VerifyOAuthToken(budget(t, time.Second), "oat_x")
			return err
		}},
		"oauth active true but no object": {`{"active":true}`, func(c *Client) error {
			_, err := c.VerifyOAuthToken(budget(t, time.Second), "oat_x")
			return err
		}},
	} {
		t.Run(name, func(t *testing.T) {
			c := fakeAPI(t, "sk_test_1", "", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, tc.body) })
			err := tc.call(c)
			require.Error(t, err)
			assert.Equal(t, KindUnavailable, KindOf(err))
		})
	}
}
