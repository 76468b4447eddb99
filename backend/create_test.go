package backend

import (
	"encoding/base64"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCreateM2MToken(t *testing.T) {
	var got *http.Request
	var body []byte
	c := fakeAPI(t, "sk_test_1", "ak_machine", func(w http.ResponseWriter, r *http.Request) {
		got = r
		body, _ = io.ReadAll(r.Body)
		writeJSON(w, 201, `{"object":"machine_to_machine_token","id":"mt_1","subject":"mch_1","scopes":["mch_2"],"claims":null,
			"revoked":false,"revocation_reason":null,"expired":false,"expiration":1753746916590,"created_at":1,"updated_at":1,"token":"mt_secret"}`)
	})
	created, err := c.CreateM2MToken(budget(t, time.Second), CreateM2MTokenOptions{Format: "jwt", SecondsUntilExpiration: 3600,
		Claims: map[string]any{"job": "sync"}, MinRemainingTTLSeconds: 600})
	require.NoError(t, err)
	assert.Equal(t, "mt_secret", created.Token)
	assert.Equal(t, "mt_1", created.ID)
	assert.Equal(t, "mch_1", created.Subject)
	assert.Equal(t, int64(1753746916590), *created.Expiration)
	assert.Equal(t, "/m2m_tokens", got.URL.Path)
	assert.Equal(t, "Bearer ak_machine", got.Header.Get("Authorization"), "only a machine may mint")
	assert.JSONEq(t, `{"token_format":"jwt","seconds_until_expiration":3600,"claims":{"job":"sync"},"min_remaining_ttl_seconds":600}`, string(body))

	_, err = c.CreateM2MToken(budget(t, time.Second), CreateM2MTokenOptions{})
	require.NoError(t, err)
	assert.JSONEq(t, `{}`, string(body), "nothing sent that was not asked for")
}

func TestCreateM2MTokenIsNeverRetried(t *testing.T) {
	var calls atomic.Int32
	c := fakeAPI(t, "", "ak_machine", func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		writeJSON(w, 502, `{}`)
	})
	_, err := c.CreateM2MToken(budget(t, 5*time.Second), CreateM2MTokenOptions{})
	require.Error(t, err)
	assert.Equal(t, int32(1), calls.Load(), "a second attempt could mint a second token")
}

func TestCreateM2MTokenAnswerWithoutTheTokenIsRefused(t *testing.T) {
	c := fakeAPI(t, "", "ak_machine", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 201, `{"object":"machine_to_machine_token","id":"mt_1","subject":"mch_1"}`)
	})
	_, err := c.CreateM2MToken(budget(t, time.Second), CreateM2MTokenOptions{})
	assert.Error(t, err, "an answer without the token is not a minted token")
}

func TestFrontendAPIURL(t *testing.T) {
	pk := func(prefix, host string) string {
		return prefix + base64.RawStdEncoding.EncodeToString([]byte(host))
	}
	for key, want := range map[string]string{
		"pk_test_Y2xlcmsuaW5zcGlyZWQucHVtYS03NC5sY2wuZGV2JA":       "https://clerk.inspired.puma-74.lcl.dev",
		"pk_live_Y2xlcmsuaW5zcGlyZWQucHVtYS03NC5sY2wuZGV2JA":       "https://clerk.inspired.puma-74.lcl.dev",
		"pk_test_Zm9vLWJhci0xMy5jbGVyay5hY2NvdW50cy5kZXYk":         "https://foo-bar-13.clerk.accounts.dev",
		"pk_live_ZmFrZS1jbGVyay10ZXN0LmNsZXJrLmFjY291bnRzLmRldiQ":  "https://fake-clerk-test.clerk.accounts.dev",
		"pk_live_ZmFrZS1jbGVyay10ZXN0LmNsZXJrLmFjY291bnRzLmRldiQ=": "https://fake-clerk-test.clerk.accounts.dev",
		pk("pk_test_", "127.0.0.1:41234$"):                         "http://127.0.0.1:41234",
		pk("pk_test_", "clerk.example.com$"):                       "https://clerk.example.com",
	} {
		got, err := FrontendAPIURL(key)
		require.NoError(t, err, key)
		assert.Equal(t, want, got, key)
	}
	for name, key := range map[string]string{
		"empty":            "",
		"secret key":       "sk_test_abc",
		"unknown env":      pk("pk_prod_", "clerk.example.com$"),
		"four parts":       "pk_test_abc_def",
		"not base64":       "pk_test_!!!",
		"no dollar":        pk("pk_test_", "clerk.example.com"),
		"after the dollar": pk("pk_test_", "clerk.example.com$x"),
		"two dollars":      pk("pk_test_", "clerk.example.com$$"),
		"no dot":           pk("pk_test_", "localhost$"),
		"a path":           pk("pk_test_", "evil.example.com/jwks$"),
		"credentials":      pk("pk_test_", "user@evil.example.com$"),
		"a query":          pk("pk_test_", "evil.example.com?x=1$"),
		"a scheme":         pk("pk_test_", "https://evil.example.com$"),
		"spaces":           pk("pk_test_", "evil example.com$"),
	} {
		_, err := FrontendAPIURL(key)
		assert.Error(t, err, name)
	}
}
