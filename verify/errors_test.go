package verify

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// TestRefusalsCarryTypeAndFormat: every refusal says the credential's type
// and format as far as they could be told, so that no caller has to tell
// them again from the credential.
func TestRefusalsCarryTypeAndFormat(t *testing.T) {
	private, _ := signingKeys(t)
	unknown := &backend.Error{Status: 404}
	v := New(Options{Accept: []TokenType{M2MToken}, Backend: &fakeBackend{err: unknown}, Keys: &countingKeys{signing: rsaKey(private, "")},
		RequireScopes: []string{"mch_elsewhere"}, CacheTTL: time.Minute, now: fixedClock})
	longJWT := sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"pad": strings.Repeat("x", maxTokenLength)}))
	for name, tc := range map[string]struct {
		credential string
		reason     Reason
		tokenType  TokenType
		format     Format
	}{
		"garbage":                   {"garbage", ReasonInvalid, "", ""},
		"a prefix alone":            {"mt_", ReasonInvalid, "", Opaque},
		"a prefix in JWT form":      {"mt_a.b.c", ReasonInvalid, "", Opaque},
		"a JWT that does not parse": {"YWJj.YWJj.YWJj", ReasonInvalid, "", JWT},
		"a JWT too long":            {longJWT, ReasonInvalid, "", JWT},
		"a type not accepted":       {"ak_LCWGdaM8mv8K4PC", ReasonTypeNotAccepted, APIKey, Opaque},
		"a session JWT":             {sign(t, private, sessionHeader(), sessionPayload()), ReasonTypeNotAccepted, SessionToken, JWT},
		"unknown to Clerk":          {"mt_0123456789abcdef", ReasonInvalid, M2MToken, Opaque},
		"a valid JWT, not granted":  {sign(t, private, m2mHeader(), m2mPayload()), ReasonInsufficientScope, M2MToken, JWT},
	} {
		t.Run(name, func(t *testing.T) {
			for range 2 { // the second answer may come from a cache
				_, err := v.Verify(context.Background(), tc.credential)
				verr := requireReason(t, err, tc.reason)
				assert.Equal(t, tc.tokenType, verr.TokenType)
				assert.Equal(t, tc.format, verr.Format)
			}
		})
	}

	t.Run("Clerk's cached refusal is not changed by the stamp", func(t *testing.T) {
		entry := v.shared.cache.get(cacheKey{v.scope, "mt_0123456789abcdef"}, testNow)
		require.NotNil(t, entry)
		assert.Empty(t, entry.refusal.(*Error).Format)
	})

	t.Run("no credential", func(t *testing.T) {
		_, err := v.VerifyRequest(httptest.NewRequest(http.MethodGet, "/", nil))
		verr := requireReason(t, err, ReasonMissing)
		assert.Empty(t, verr.TokenType)
		assert.Empty(t, verr.Format)
	})
}
