package verify

import (
	"net/http"
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
		{"scheme and space", []string{"Bearer "}, "", ""}, // empty: refused by Verify
		{"other scheme", []string{"Basic dXNlcjpwYXNz"}, "", ReasonInvalid},
		{"no scheme", []string{"mt_abc"}, "", ReasonInvalid},
		{"tab", []string{"Bearer\tmt_abc"}, "", ReasonInvalid},
		// The length is checked by Verify, before the cache, and the
		// characters when the token is classified (see
		// TestRefusalsCarryTypeAndFormat).
		{"too long", []string{"Bearer " + long + "a"}, long + "a", ""},
		{"two tokens", []string{"Bearer mt_a mt_b"}, "mt_a mt_b", ""},
		{"NUL byte", []string{"Bearer mt_a\x00bc"}, "mt_a\x00bc", ""},
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

// TestStripCredentials: the Authorization header and every session cookie
// go; the other cookies stay as they were sent, header by header.
func TestStripCredentials(t *testing.T) {
	for name, tc := range map[string]struct{ sent, want []string }{
		"alone":             {[]string{"__session=eyJ"}, nil},
		"first":             {[]string{"__session=eyJ; theme=dark"}, []string{"theme=dark"}},
		"middle":            {[]string{"a=1; __session=eyJ; b=2"}, []string{"a=1; b=2"}},
		"twice":             {[]string{"__session=x;a=1;__session=y"}, []string{"a=1"}},
		"unparseable kept":  {[]string{`bad name=1; __session=eyJ; q="a"b"`}, []string{`bad name=1; q="a"b"`}},
		"headers kept":      {[]string{"a=1", "__session=eyJ", "b=2; __session=eyJ"}, []string{"a=1", "b=2"}},
		"suffixed ones too": {[]string{"__session_x=1; __session_Ab12Cd34=2; a=3"}, []string{"a=3"}},
		"a lookalike kept":  {[]string{"__sessions=1; x__session=2; __session-x=3"}, []string{"__sessions=1; x__session=2; __session-x=3"}},
		"no cookie at all":  {nil, nil},
		"spaces around it":  {[]string{"a=1 ;  __session =eyJ ; b=2"}, []string{"a=1 ; b=2"}},
		"value holds names": {[]string{"a=__session=1"}, []string{"a=__session=1"}},
		"client_uat kept":   {[]string{"__session=eyJ; __client_uat=1700000000"}, []string{"__client_uat=1700000000"}},
	} {
		t.Run(name, func(t *testing.T) {
			header := http.Header{"Cookie": tc.sent, "Authorization": {"Bearer mt_abc"}, "Accept": {"*/*"}}
			StripCredentials(header)
			assert.Equal(t, tc.want, header["Cookie"])
			assert.NotContains(t, header, "Authorization")
			assert.Equal(t, []string{"*/*"}, header["Accept"])
		})
	}
}
