package integration

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestSidecarsBeyondLoopbackAreWarnedAbout: when a configuration starts,
// a server that has a clerk_m2m_token handler (here inside a handle block)
// and listens beyond loopback is logged at WARN, once; bound to loopback,
// or without the handler, it is not.
func TestSidecarsBeyondLoopbackAreWarnedAbout(t *testing.T) {
	e := newEnv(t)
	const warning = "clerk_m2m_token attaches the machine's M2M token to the requests this server forwards"
	warnings := func() int { return strings.Count(readLog(t, e.logFile), warning) }
	sidecar := func(bind string) string {
		return strings.ReplaceAll(globals(debugLog)+`
http://{{GATEWAY}} {
	`+bind+`
	handle /a/* {
		clerk_m2m_token {
			machine_secret_key {{CALLER_KEY}}
			api_url {{CLERK}}
		}
		reverse_proxy {{UPSTREAM}}
	}
}
`, "{{CALLER_KEY}}", e.caller.SecretKey)
	}

	e.load(sidecar("bind 0.0.0.0"))
	assert.Equal(t, 1, warnings(), "a sidecar on every interface")
	assert.True(t, strings.Contains(readLog(t, e.logFile), `"listen":["0.0.0.0:`+strconv.Itoa(httpPort)+`"]`), "the warning names the listener")

	e.load(sidecar("bind 127.0.0.1"))
	assert.Equal(t, 1, warnings(), "no warning for a sidecar on loopback")

	e.load(globals(debugLog) + `
http://{{GATEWAY}} {
	clerk_m2m {
		machine_secret_key {{GATEWAY_KEY}}
		api_url {{CLERK}}
	}
	respond "through"
}
`)
	assert.Equal(t, 1, warnings(), "none for a gateway, which mints nothing")
}
