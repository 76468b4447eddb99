package verify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// TestRefusalsCarryTypeAndFormat: every refusal says the credential's type
// and format as far as they could be told, so that no caller has to tell
// them again from the credential. Its lookups follow the same
// classification: a credential is looked up in the cache of its format
// once classified (a hit reports the format of the verdict found), and a
// string that is no credential (too long, of characters no credential
// has, not of a known shape, a JWT whose parts do not decode) in no cache
// at all, nor is Clerk asked about it.
func TestRefusalsCarryTypeAndFormat(t *testing.T) {
	private, _ := signingKeys(t)
	var lookups []string
	v := newVerifier(t, Options{MachineSecretKey: testMachineKey, clerk: &fakeClerk{err: &backend.Error{Status: 404}},
		keys: keysFor(private, ""), CacheTTL: new(time.Minute),
		OnCacheLookup: func(cache string, hit bool) { lookups = append(lookups, fmt.Sprintf("%s %v", cache, hit)) }})
	longJWT := sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"pad": strings.Repeat("x", maxTokenLength)}))
	for name, tc := range map[string]struct {
		credential string
		reason     Reason
		tokenType  TokenType
		format     Format
		lookups    []string // of the two attempts
	}{
		"no credential (no lookup)": {"hello-not-a-token", ReasonInvalid, "", "", nil},
		"two tokens":                {"mt_a mt_b", ReasonInvalid, "", Opaque, nil},
		"a leading space":           {" mt_abc", ReasonInvalid, "", "", nil},
		"a trailing space":          {"mt_abc ", ReasonInvalid, "", Opaque, nil},
		"a NUL byte":                {"mt_a\x00bc", ReasonInvalid, "", Opaque, nil},
		"non-ASCII":                 {"mt_äbc", ReasonInvalid, "", Opaque, nil},
		"invalid UTF-8":             {"mt_\xff\xfe", ReasonInvalid, "", Opaque, nil},
		"a JWT with a space":        {"a.b c.d", ReasonInvalid, "", "", nil},
		"quoted":                    {`"a.b.c"`, ReasonInvalid, "", "", nil},
		"empty":                     {"", ReasonInvalid, "", "", nil},
		"a prefix alone":            {"mt_", ReasonInvalid, "", Opaque, nil},
		"a prefix in JWT form":      {"mt_a.b.c", ReasonInvalid, "", JWT, nil},
		"a JWT that does not parse": {"YWJj.YWJj.YWJj", ReasonInvalid, "", JWT, nil},
		"a JWT too long":            {longJWT, ReasonInvalid, "", "", nil},
		"a type not accepted":       {"ak_LCWGdaM8mv8K4PC", ReasonTypeNotAccepted, APIKey, Opaque, []string{"opaque false", "opaque false"}},
		"a session JWT":             {sign(t, private, sessionHeader(), sessionPayload()), ReasonTypeNotAccepted, SessionToken, JWT, []string{"jwt false", "jwt false"}},
		"unknown to Clerk":          {"mt_x", ReasonInvalid, M2MToken, Opaque, []string{"opaque false", "opaque true"}},
		"expired":                   {sign(t, private, m2mHeader(), with(m2mPayload(), map[string]any{"exp": 1})), ReasonExpired, M2MToken, JWT, []string{"jwt false", "jwt false"}},
	} {
		t.Run(name, func(t *testing.T) {
			lookups = nil
			for range 2 { // the second answer may come from a cache
				_, err := v.Verify(context.Background(), tc.credential)
				verr := requireReason(t, err, tc.reason)
				assert.Equal(t, tc.tokenType, verr.TokenType)
				assert.Equal(t, tc.format, verr.Format)
			}
			assert.Equal(t, tc.lookups, lookups)
		})
	}

	t.Run("no credential", func(t *testing.T) {
		_, err := v.VerifyRequest(httptest.NewRequest(http.MethodGet, "/", nil))
		verr := requireReason(t, err, ReasonMissing)
		assert.Empty(t, verr.TokenType)
		assert.Empty(t, verr.Format)
	})
}

// TestEveryRefusalCarriesTheFormat: the refusals of a credential that was
// verified (the policy's, a session's from a browser that is not signed
// in, a machine's from the cookie answered from the cache) carry its
// format too.
func TestEveryRefusalCarriesTheFormat(t *testing.T) {
	private, _ := signingKeys(t)
	opts := allTypes(nil, keysFor(private, ""))
	opts.RequireScopes = []string{"mch_elsewhere"}
	v := newVerifier(t, opts)
	m2m, session := sign(t, private, m2mHeader(), ourM2MPayload()), sign(t, private, sessionHeader(), sessionPayload())
	inCookie := func(token string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.AddCookie(&http.Cookie{Name: SessionCookie, Value: token})
		return r
	}
	for range 2 { // verified, then from the cache
		_, err := v.Verify(context.Background(), m2m)
		assert.Equal(t, JWT, requireReason(t, err, ReasonInsufficientScope).Format)
		_, err = v.VerifyRequest(inCookie(session))
		assert.Equal(t, JWT, requireReason(t, err, ReasonSessionOutdated).Format)
		_, err = v.VerifyRequest(inCookie(m2m))
		assert.Equal(t, JWT, requireReason(t, err, ReasonTypeNotAccepted).Format)
	}
}

// TestStampedCopies: a refusal is stamped with the credential's type and
// format on a copy, for one may be shared (Clerk's refusals are cached).
func TestStampedCopies(t *testing.T) {
	shared := invalid("", "no such token")
	stampedErr := stamped(shared, M2MToken, Opaque)
	assert.Equal(t, &Error{Reason: ReasonInvalid, TokenType: M2MToken, Format: Opaque, Description: "no such token"}, stampedErr)
	assert.Equal(t, invalid("", "no such token"), shared, "unchanged")
	assert.Same(t, stampedErr, stamped(stampedErr, M2MToken, Opaque), "an error stamped already is returned as it is")
	assert.NoError(t, stamped(nil, M2MToken, Opaque))
}

func TestReasonOf(t *testing.T) {
	for err, want := range map[error]Reason{
		&Error{Reason: ReasonExpired}:                                    ReasonExpired,
		fmt.Errorf("wrapped: %w", &Error{Reason: ReasonCallsLimited}):    ReasonCallsLimited,
		&backend.Error{Status: 401, Code: "clerk_key_invalid"}:           ReasonMisconfigured,
		&backend.Error{Status: 429}:                                      ReasonRateLimited,
		&backend.Error{Status: 404}:                                      ReasonInvalid,
		&backend.Error{Status: 503}:                                      ReasonUnavailable,
		fmt.Errorf("fetching: %w", &backend.Error{Status: 400}):          ReasonInvalid,
		fmt.Errorf("fetching: %w", &backend.Error{Err: errors.New("x")}): ReasonUnavailable,
		errors.New("anything else"):                                      ReasonInvalid,
	} {
		assert.Equal(t, want, ReasonOf(err), "%v", err)
	}
}
