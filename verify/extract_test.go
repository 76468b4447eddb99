package verify

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBearerToken(t *testing.T) {
	long := strings.Repeat("a", MaxTokenLength)
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
		{"two spaces", []string{"Bearer  mt_abc"}, "", ReasonInvalid},
		{"tab", []string{"Bearer\tmt_abc"}, "", ReasonInvalid},
		{"two tokens", []string{"Bearer mt_a mt_b"}, "", ReasonInvalid},
		{"trailing space", []string{"Bearer mt_abc "}, "", ReasonInvalid},
		{"NUL byte", []string{"Bearer mt_a\x00bc"}, "", ReasonInvalid},
		{"non-ASCII", []string{"Bearer mt_äbc"}, "", ReasonInvalid},
		{"invalid UTF-8", []string{"Bearer mt_\xff\xfe"}, "", ReasonInvalid},
		{"too long", []string{"Bearer " + long + "a"}, "", ReasonInvalid},
		{"a mebibyte", []string{"Bearer " + strings.Repeat("a", 1<<20)}, "", ReasonInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := BearerToken(tc.headers)
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
