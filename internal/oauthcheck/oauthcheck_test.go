package oauthcheck

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseChallenge(t *testing.T) {
	c, err := ParseChallenge(`Bearer realm="clerk", error="invalid_token", error_description="a \"quoted\" word",` +
		` resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"`)
	require.NoError(t, err)
	assert.Equal(t, Challenge{Scheme: "Bearer", Params: map[string]string{
		"realm": "clerk", "error": "invalid_token", "error_description": `a "quoted" word`,
		"resource_metadata": "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
	}}, c)

	c, err = ParseChallenge(`Bearer`)
	require.NoError(t, err)
	assert.Equal(t, "Bearer", c.Scheme)
	c, err = ParseChallenge(`Bearer Error = invalid_token ,scope="a b"`)
	require.NoError(t, err, "a token value, blanks around = and before a comma")
	assert.Equal(t, map[string]string{"error": "invalid_token", "scope": "a b"}, c.Params)

	for name, value := range map[string]string{
		"an unquoted URL (as @clerk/mcp-tools sends it)": `Bearer resource_metadata=https://mcp.example.com/.well-known/oauth-protected-resource/mcp`,
		"a parameter twice":      `Bearer error="a", error="b"`,
		"a trailing comma":       `Bearer error="a",`,
		"no comma between":       `Bearer error="a" scope="b"`,
		"an unterminated string": `Bearer error="a`,
		"a token68":              `Bearer abc==`,
		"no scheme":              `="a"`,
		"a control character":    "Bearer error=\"a\x01\"",
		"two spaces, no param":   `Bearer  `,
		"an empty value":         `Bearer error=`,
	} {
		_, err := ParseChallenge(value)
		assert.Error(t, err, name)
	}
}

func TestCheckResourceMetadata(t *testing.T) {
	require.NoError(t, CheckResourceMetadata([]byte(`{"resource":"https://mcp.example.com/mcp",`+
		`"authorization_servers":["https://clerk.example.com"],"scopes_supported":["email"],"bearer_methods_supported":["header"]}`)))
	for name, document := range map[string]string{
		"not an object":          `[]`,
		"no resource":            `{"authorization_servers":["https://clerk.example.com"]}`,
		"a relative resource":    `{"resource":"/mcp"}`,
		"a fragment":             `{"resource":"https://mcp.example.com/mcp#x"}`,
		"a null":                 `{"resource":"https://mcp.example.com/mcp","scopes_supported":null}`,
		"a string for a list":    `{"resource":"https://mcp.example.com/mcp","authorization_servers":"https://clerk.example.com"}`,
		"an unknown member":      `{"resource":"https://mcp.example.com/mcp","token_introspection_endpoint":"https://clerk.example.com/oauth/token"}`,
		"an unknown bearer way":  `{"resource":"https://mcp.example.com/mcp","bearer_methods_supported":["cookie"]}`,
		"a number for a boolean": `{"resource":"https://mcp.example.com/mcp","dpop_bound_access_tokens_required":1}`,
	} {
		assert.Error(t, CheckResourceMetadata([]byte(document)), name)
	}
}
