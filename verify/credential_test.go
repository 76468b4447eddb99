package verify

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBearerToken(t *testing.T) {
	long := strings.Repeat("a", maxTokenLength)
	for _, tc := range []struct {
		name    string
		headers []string
		want    string
		reason  Reason
	}{
		{"no header", nil, "", ReasonMissing},
		{"bearer", []string{"Bearer mt_abc"}, "mt_abc", ""},
		{"scheme in any case", []string{"bEaReR mt_abc"}, "mt_abc", ""},
		{"jwt", []string{"Bearer a.b.c"}, "a.b.c", ""},
		{"api key alphabet", []string{"Bearer ak_LCWGdaM8mv8K4PC/57IICZQXAeWfCgF30DZaFXHoGn9="}, "ak_LCWGdaM8mv8K4PC/57IICZQXAeWfCgF30DZaFXHoGn9=", ""},
		{"longest allowed", []string{"Bearer " + long}, long, ""},
		{"two headers", []string{"Bearer mt_a", "Bearer mt_b"}, "", ReasonInvalid},
		{"empty header", []string{""}, "", ReasonInvalid},
		{"scheme only", []string{"Bearer"}, "", ReasonInvalid},
		{"scheme and space", []string{"Bearer "}, "", ReasonInvalid},
		{"other scheme", []string{"Basic dXNlcjpwYXNz"}, "", ReasonInvalid},
		{"no scheme", []string{"mt_abc"}, "", ReasonInvalid},
		{"tab", []string{"Bearer\tmt_abc"}, "", ReasonInvalid},
		{"too long", []string{"Bearer " + long + "a"}, "", ReasonInvalid},
		// Characters are checked when the token is classified (see
		// TestCharactersRefusedBeforeParsing).
		{"two tokens", []string{"Bearer mt_a mt_b"}, "mt_a mt_b", ""},
		{"NUL byte", []string{"Bearer mt_a\x00bc"}, "mt_a\x00bc", ""},
		{"a mebibyte", []string{"Bearer " + strings.Repeat("a", 1<<20)}, "", ReasonInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bearerToken(tc.headers)
			if tc.reason == "" {
				require.NoError(t, err)
				assert.Equal(t, tc.want, got)
				return
			}
			verr := requireReason(t, err, tc.reason)
			assert.Empty(t, got)
			assert.NotContains(t, verr.Error(), "mt_", "errors never repeat the credential")
		})
	}
}

func TestCredential(t *testing.T) {
	request := func(authorization []string, cookies ...string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		for _, value := range authorization {
			r.Header.Add("Authorization", value)
		}
		for _, cookie := range cookies {
			r.Header.Add("Cookie", cookie)
		}
		return r
	}
	for name, tc := range map[string]struct {
		r              *http.Request
		acceptSessions bool
		want           string
		fromCookie     bool
		reason         Reason
	}{
		"header":                           {request([]string{"Bearer mt_a"}), false, "mt_a", false, ""},
		"header wins over the cookie":      {request([]string{"Bearer mt_a"}, "__session=a.b.c"), true, "mt_a", false, ""},
		"cookie when sessions accepted":    {request(nil, "__session=a.b.c"), true, "a.b.c", true, ""},
		"cookie ignored otherwise":         {request(nil, "__session=a.b.c"), false, "", false, ReasonMissing},
		"nothing":                          {request(nil), true, "", true, ReasonMissing},
		"empty cookie":                     {request(nil, "__session="), true, "", true, ReasonMissing},
		"two session cookies":              {request(nil, "__session=a.b.c; __session=d.e.f"), true, "", true, ReasonInvalid},
		"other cookies only":               {request(nil, "theme=dark"), true, "", true, ReasonMissing},
		"bad header, cookie not consulted": {request([]string{"Basic x"}, "__session=a.b.c"), true, "", false, ReasonInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			token, fromCookie, err := credentialOf(tc.r, tc.acceptSessions)
			if tc.reason != "" {
				requireReason(t, err, tc.reason)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, token)
			assert.Equal(t, tc.fromCookie, fromCookie)
		})
	}
}

// TestCharactersRefusedBeforeParsing presents credentials that no Clerk
// credential can be, because of their characters: each is refused as
// invalid before anything parses it or Clerk is asked, from the header as
// from the cookie.
func TestCharactersRefusedBeforeParsing(t *testing.T) {
	clerk := &fakeBackend{answer: m2mAnswer(nil)}
	v := allTypesVerifier(clerk, nil)
	for name, r := range map[string]*http.Request{
		"two tokens":         requestWith("Authorization", "Bearer mt_a mt_b"),
		"a second space":     requestWith("Authorization", "Bearer  mt_abc"),
		"trailing space":     requestWith("Authorization", "Bearer mt_abc "),
		"NUL byte":           requestWith("Authorization", "Bearer mt_a\x00bc"),
		"non-ASCII":          requestWith("Authorization", "Bearer mt_äbc"),
		"invalid UTF-8":      requestWith("Authorization", "Bearer mt_\xff\xfe"),
		"JWT with a space":   requestWith("Authorization", "Bearer a.b c.d"),
		"cookie with spaces": requestWith("Cookie", `__session="a b"`),
		"quoted cookie":      requestWith("Cookie", `__session="a.b.c"`),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.VerifyRequest(r)
			verr := requireReason(t, err, ReasonInvalid)
			assert.Contains(t, verr.Description, "characters a token cannot have")
		})
	}
	assert.Zero(t, clerk.calls, "Clerk was asked about a token that cannot be one")
}

func requestWith(header, value string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set(header, value)
	return r
}
