package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// peerModule is the module ID under which the peer authenticates.
const peerModule = "http.authentication.providers.jwt"

// hasPeer tells whether a given Caddy binary has the peer built in.
func hasPeer(binary string) (bool, error) {
	out, err := exec.Command(binary, "list-modules").Output()
	if err != nil {
		return false, fmt.Errorf("%s list-modules: %v", binary, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(line) == peerModule {
			return true, nil
		}
	}
	return false, nil
}

// peerName is the peer's server in Caddy's JSON config.
const peerName = "peer"

// peerServer is the peer's site in Caddy's JSON, shaped as the Caddyfile
// adapter shapes clerk_m2m's: one route, no matcher, the authentication
// handler then the same response as every other site. The peer is
// configured in JSON, in the fields of its module (sign_key, sign_alg,
// user_claims), because its Caddyfile directive may be missing from a
// copy of its source; the JSON is what its directive would produce.
// from_header is left out: the peer reads the Authorization header
// whatever it is told, and naming it again would only make it look twice.
func peerServer(port int, publicKeyPEM string) map[string]any {
	return map[string]any{
		"listen": []string{fmt.Sprintf("127.0.0.1:%d", port)},
		"routes": []any{map[string]any{
			"handle": []any{
				map[string]any{
					"handler": "authentication",
					"providers": map[string]any{"jwt": map[string]any{
						"sign_key":    publicKeyPEM, // the fake Clerk's RSA public key, PEM
						"sign_alg":    "RS256",
						"user_claims": []string{"sub"},
					}},
				},
				map[string]any{"handler": "static_response", "body": "ok"},
			},
		}},
	}
}

// addPeerServer adds the peer's server to an adapted JSON config. Numbers
// are kept as they were written (durations are integers of nanoseconds,
// which Caddy reads back only as integers).
func addPeerServer(config []byte, port int, publicKeyPEM string) ([]byte, error) {
	decoder := json.NewDecoder(bytes.NewReader(config))
	decoder.UseNumber()
	var cfg map[string]any
	if err := decoder.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("adapted config: %v", err)
	}
	apps, _ := cfg["apps"].(map[string]any)
	httpApp, _ := apps["http"].(map[string]any)
	servers, _ := httpApp["servers"].(map[string]any)
	if servers == nil {
		return nil, errors.New("adapted config: no apps.http.servers to add the peer to")
	}
	if _, taken := servers[peerName]; taken {
		return nil, fmt.Errorf("adapted config: a server is already named %q", peerName)
	}
	servers[peerName] = peerServer(port, publicKeyPEM)
	return json.Marshal(cfg)
}
