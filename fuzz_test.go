package clerkm2m

import (
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzUnmarshalCaddyfile feeds the directives' parsers (clerk_m2m and
// clerk_m2m_token) any block: they may refuse it, but never panic.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"clerk_m2m",
		"clerk_m2m {\n secret_key sk_test_x\n machine_secret_key ak_x\n accept any\n optional\n}",
		"clerk_m2m {\n require_scopes a b c\n allowed_subjects mch_1\n authorized_parties https://a\n timeout 2s\n}",
		"clerk_m2m {\n jwt_key `-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----`\n}",
		"clerk_m2m {\n cache_ttl\n}", "clerk_m2m x {", "clerk_m2m {\n {\n}\n}", "clerk_m2m {\n timeout -1ns\n}",
		"clerk_m2m_token {\n format jwt\n renew_at 80%\n claims {\n team billing\n }\n}", "clerk_m2m_token {\n claims {\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
		if err != nil || len(tokens) == 0 {
			return
		}
		_ = new(Handler).UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
		_ = new(MintHandler).UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	})
}
