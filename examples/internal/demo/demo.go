// Package demo holds what the runnable examples share: Caddy started
// in-process from an embedded Caddyfile, a demo service that echoes the
// identity it is given, and free loopback ports.
package demo

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-clerk/clerk-m2m"
	"github.com/caddy-clerk/clerk-m2m/internal/freeport"
)

// dataDir is where the demo's Caddy keeps its data while it runs: a
// temporary folder, removed by StopCaddy.
var dataDir string

// StartCaddy sets env (the Caddyfile reads it), adapts the Caddyfile and
// runs it in this process, with its data in a temporary folder.
func StartCaddy(caddyfile []byte, env map[string]string) error {
	for name, value := range env {
		if err := os.Setenv(name, value); err != nil {
			return err
		}
	}
	config, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(caddyfile, nil)
	if err != nil {
		return fmt.Errorf("adapting the Caddyfile: %v", err)
	}
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, "Caddyfile:", w.Message)
	}
	if dataDir, err = os.MkdirTemp("", "clerk-m2m-demo-"); err != nil {
		return err
	}
	// Caddy reads this for what it keeps outside its storage (its
	// instance id); its default storage was placed at start-up, hence
	// isolated.
	if err := os.Setenv("XDG_DATA_HOME", dataDir); err != nil {
		return err
	}
	config, err = isolated(config, dataDir)
	if err != nil {
		return err
	}
	if err := caddy.Load(config, true); err != nil {
		return fmt.Errorf("starting Caddy: %v", err)
	}
	return nil
}

// isolated keeps a demo's Caddy to itself: no autosave of the config (a
// demo must not overwrite the autosave.json that `caddy run --resume`
// would load), and, unless the config names a storage, its data (the
// local CA, verdicts) in dir rather than the user's data directory.
func isolated(config []byte, dir string) ([]byte, error) {
	var parsed caddy.Config
	if err := json.Unmarshal(config, &parsed); err != nil {
		return nil, fmt.Errorf("reading the adapted config: %v", err)
	}
	if parsed.Admin == nil {
		parsed.Admin = new(caddy.AdminConfig)
	}
	if parsed.Admin.Config == nil {
		parsed.Admin.Config = new(caddy.ConfigSettings)
	}
	persist := false
	parsed.Admin.Config.Persist = &persist
	if parsed.StorageRaw == nil {
		storage, err := json.Marshal(map[string]string{"module": "file_system", "root": dir})
		if err != nil {
			return nil, err
		}
		parsed.StorageRaw = storage
	}
	return json.Marshal(parsed)
}

// StopCaddy stops what StartCaddy started, and removes its data.
func StopCaddy() {
	_ = caddy.Stop()
	if dataDir != "" {
		_ = os.RemoveAll(dataDir)
	}
}

// EchoIdentity is a demo service: it answers, as JSON, with the identity
// the gateway passed on in X-Clerk-* headers.
func EchoIdentity(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		seen := map[string]string{"message": "hello from " + name}
		for header, values := range r.Header {
			if field, ok := strings.CutPrefix(header, "X-Clerk-"); ok {
				seen[strings.ReplaceAll(strings.ToLower(field), "-", "_")] = values[0]
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(seen)
	}
}

// FreeAddr finds a loopback address nobody listens on.
func FreeAddr() string {
	ports, err := freeport.Ports(1)
	if err != nil {
		panic(errors.New("no free loopback port: " + err.Error()))
	}
	return freeport.Addr(ports[0])
}
