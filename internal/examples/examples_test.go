package examples

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestExtraModulesAreWhatTheXcaddyLineAddsToThisModule(t *testing.T) {
	assert.Empty(t, ExtraModules([]byte("# xcaddy build --with github.com/caddy-clerk/clerk-m2m\n:8080 {\n\tclerk_m2m\n}\n")))
	assert.Empty(t, ExtraModules([]byte("xcaddy build --with github.com/caddy-clerk/clerk-m2m=.\n")), "this module, from a checkout")
	assert.Empty(t, ExtraModules([]byte("# built with --with github.com/other/module, said in prose\n")), "only an xcaddy line counts")
	assert.Equal(t, []string{"github.com/pberkel/caddy-storage-redis@v1.8.1", "github.com/mholt/caddy-ratelimit"},
		ExtraModules([]byte("#\txcaddy build --with github.com/caddy-clerk/clerk-m2m --with github.com/pberkel/caddy-storage-redis@v1.8.1 "+
			"--with github.com/mholt/caddy-ratelimit\n{\n}\n")))
}

func TestName(t *testing.T) {
	for file, name := range map[string]string{
		"examples/Caddyfile": "Caddyfile", "examples/fleet.Caddyfile": "fleet", "../../examples/rate-limit.Caddyfile": "rate-limit",
		"examples/two-services/Caddyfile": "two-services", "../../examples/Caddyfile": "Caddyfile",
	} {
		assert.Equal(t, name, Name(file), file)
	}
}
