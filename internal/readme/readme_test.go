package readme

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBlocks(t *testing.T) {
	blocks := Blocks("# Title\n\n## Section\n\n```sh\ngo build ./cmd/caddy\n```\n\n1. a step\n\n   ```caddyfile\n   clerk_m2m {\n   \toptional\n   }\n   ```\n")
	require.Len(t, blocks, 2)
	assert.Equal(t, Block{Lang: "sh", Text: "go build ./cmd/caddy\n", Line: 5, Heading: "Section"}, blocks[0])
	assert.Equal(t, "clerk_m2m {\n\toptional\n}\n", blocks[1].Text, "an indented block, without its indentation")
}

func TestCaddyfile(t *testing.T) {
	for name, tc := range map[string]struct {
		block Block
		want  string
		ok    bool
	}{
		"a site": {Block{Lang: "caddyfile", Text: "api.example.com {\n\trespond ok\n}\n"}, "api.example.com {\n\trespond ok\n}\n", true},
		"directives alone": {Block{Lang: "caddyfile", Text: "clerk_m2m {\n\toptional\n}\n"},
			"http://127.0.0.1:8080 {\n\tclerk_m2m {\n\t\toptional\n\t}\n}\n", true},
		"a syntax":        {Block{Lang: "caddyfile", Text: "clerk_m2m [<matcher>] {\n}\n"}, "", false},
		"not a Caddyfile": {Block{Lang: "sh", Text: "caddy run\n"}, "", false},
		"localhost":       {Block{Lang: "caddyfile", Text: "localhost {\n\trespond ok\n}\n"}, "localhost {\n\trespond ok\n}\n", true},
	} {
		got, ok := tc.block.Caddyfile()
		assert.Equal(t, tc.ok, ok, name)
		assert.Equal(t, tc.want, got, name)
	}
}

func TestAnchors(t *testing.T) {
	assert.Equal(t, []string{"the-clerk_m2m-directive", "clerkm2mclerkunavailable", "where-it-differs-from-clerks-sdk"},
		Anchors("## The `clerk_m2m` directive\n```sh\n# a comment\n```\n#### ClerkM2MClerkUnavailable\n## Where it differs from Clerk's SDK\n"))
}
