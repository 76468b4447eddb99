package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// modulePath is the module under test.
const modulePath = "github.com/caddy-clerk/clerk-m2m"

// floorSource is the floor's handler (package floor), copied into the build
// module, so that a Caddy built from any checkout has the same floor.
//
//go:embed floor/floor.go
var floorSource []byte

// floorPackage is where the build module holds the floor.
const floorPackage = "clerk-m2m-loadtest/floor"

// buildCaddy builds, in a Go module of its own under dir, a Caddy with its
// standard modules, the floor, clerk_m2m from checkout (this checkout when
// empty; through a replace directive) and the peer module (path@version):
// from peerSource, a directory holding its source, when given (through a
// replace directive too), or else from the Go module proxy when it serves
// it. One binary, so that all run in the same Caddy. The project's own
// go.mod never requires the peer.
func buildCaddy(dir, checkout, peer, peerSource string) (binary string, err error) {
	if checkout == "" {
		if checkout, err = goOutput("", "list", "-m", "-f", "{{.Dir}}", modulePath); err != nil {
			return "", fmt.Errorf("finding this checkout (run from inside it): %v", err)
		}
	} else if checkout, err = filepath.Abs(checkout); err != nil {
		return "", err
	}
	build := filepath.Join(dir, "build")
	if _, err = writeBuildModule(build, checkout, peer, peerSource); err != nil {
		return "", err
	}
	if _, err := goOutput(build, "mod", "tidy"); err != nil {
		return "", err
	}
	binary = filepath.Join(dir, "caddy")
	if _, err := goOutput(build, "build", "-o", binary, "."); err != nil {
		return "", err
	}
	return binary, nil
}

// writeBuildModule writes the build module into dir: its go.mod, the
// checkout's sums, the floor and a main.go importing the modules built in.
// It tells whether the peer is among them.
func writeBuildModule(dir, checkout, peer, peerSource string) (withPeer bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	goMod, err := buildGoMod(checkout, peer, peerSource)
	if err != nil {
		return false, err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(goMod), 0o600); err != nil {
		return false, err
	}
	// The checkout's sums spare the proxy most look-ups.
	if sums, err := os.ReadFile(filepath.Join(checkout, "go.sum")); err == nil {
		if err := os.WriteFile(filepath.Join(dir, "go.sum"), sums, 0o600); err != nil {
			return false, err
		}
	}
	switch {
	case peerSource != "":
		withPeer = true
	case peer != "":
		if _, err := goOutput(dir, "get", peer); err != nil {
			fmt.Printf("\n*** The peer %s cannot be had from the Go module proxy:\n%v\n", peer, err)
		} else {
			withPeer = true
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "floor"), 0o700); err != nil {
		return false, err
	}
	if err := os.WriteFile(filepath.Join(dir, "floor", "floor.go"), floorSource, 0o600); err != nil {
		return false, err
	}
	imports := []string{modulePath, floorPackage}
	if withPeer {
		peerPath, _, _ := strings.Cut(peer, "@")
		imports = append(imports, peerPath)
	}
	return withPeer, writeMain(filepath.Join(dir, "main.go"), imports)
}

// buildGoMod is the build module's go.mod: this checkout as the module
// under test and, with a peer source, the peer (path@version) replaced by
// that directory, so that the peer is built from it instead of being
// fetched.
func buildGoMod(checkout, peer, peerSource string) (string, error) {
	goMod := fmt.Sprintf("module clerk-m2m-loadtest\n\ngo 1.26.0\n\nrequire %s v0.0.0\n\nreplace %[1]s => %s\n", modulePath, checkout)
	if peerSource == "" {
		return goMod, nil
	}
	path, version, ok := strings.Cut(peer, "@")
	if !ok || path == "" || version == "" {
		return "", fmt.Errorf("-peer-source needs -peer as path@version, not %q", peer)
	}
	source, err := filepath.Abs(peerSource)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(source, "go.mod")); err != nil {
		return "", fmt.Errorf("-peer-source %s holds no Go module: %v", peerSource, err)
	}
	return goMod + fmt.Sprintf("\nrequire %s %s\n\nreplace %[1]s => %[3]s\n", path, version, source), nil
}

var mainTemplate = template.Must(template.New("main").Parse(`// Caddy with its standard modules and the modules the load run compares.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
{{range .}}
	_ "{{.}}"{{end}}
)

func main() {
	caddycmd.Main()
}
`))

func writeMain(path string, imports []string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := mainTemplate.Execute(f, imports); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// goOutput runs the go command in dir (the current directory when empty),
// outside any workspace.
func goOutput(dir string, args ...string) (string, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// caddyConfig is what the Caddyfile is made from: a port per site, and the
// many-callers site's bound on its cache.
type caddyConfig struct {
	Admin                                      string // the admin API's address, or "off"
	BarePort, ClerkPort, ManyPort, MetricsPort int
	SecretKey, MachineSecretKey, ClerkURL      string
	ManyCacheBytes                             int64
}

// caddyfileTemplate puts every route in a site of its own, on a port of its
// own and with no host to match, so that no route pays for another's
// matchers and every route pays the same for its own. The logs are quiet:
// no access log, and errors only. The module's site keeps a small cache,
// whose verdicts (and whose admission of JWTs, sized by it) hold a few
// thousand JWTs, so that none of the distinct table's are kept from one
// pass through it to the next: each is as new as the first time, while the
// single tokens repeated stay. The many-callers site has a Clerk
// instance of its own (its bounds differ): a cache that keeps every
// caller's verdict, opaque verdicts kept for the whole run, and calls to
// Clerk unbounded by rate, so that the fill before the run is not refused.
var caddyfileTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	persist_config off
	grace_period 1s
	log {
		level ERROR
	}
}

http://:{{.BarePort}} {
	bind 127.0.0.1
	respond "ok"
}

http://:{{.ClerkPort}} {
	bind 127.0.0.1
	clerk_m2m {
		secret_key {{.SecretKey}}
		machine_secret_key {{.MachineSecretKey}}
		api_url {{.ClerkURL}}
		cache_max_bytes 4MiB
	}
	respond "ok"
}

http://:{{.ManyPort}} {
	bind 127.0.0.1
	clerk_m2m {
		secret_key {{.SecretKey}}
		machine_secret_key {{.MachineSecretKey}}
		api_url {{.ClerkURL}}
		cache_max_bytes {{.ManyCacheBytes}}
		cache_ttl 1h
		max_clerk_rate 1000000
	}
	respond "ok"
}

http://:{{.MetricsPort}} {
	bind 127.0.0.1
	metrics
}
`))

// adaptCaddyfile turns the Caddyfile into Caddy's JSON with the binary's
// own adapter.
func adaptCaddyfile(binary, caddyfile string) ([]byte, error) {
	out, err := exec.Command(binary, "adapt", "--config", caddyfile, "--adapter", "caddyfile").Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return nil, fmt.Errorf("%s adapt: %v\n%s", binary, err, exit.Stderr)
		}
		return nil, fmt.Errorf("%s adapt: %v", binary, err)
	}
	return out, nil
}

// waitForOK waits until GET url with the Authorization header answers 200:
// the site is up and, for a JWT, the signing keys have arrived.
func waitForOK(url, authorization string, exited <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	last := errors.New("no answer")
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("caddy exited")
		default:
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", authorization)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer 200 within 30s: %v", url, last)
}

// floorModule is the module ID of the floor's handler.
const floorModule = "http.handlers.loadtest_floor"

// floorHandler is the floor's handler in Caddy's JSON (package floor has
// no Caddyfile directive).
func floorHandler(publicKeyPEM string) map[string]any {
	return map[string]any{"handler": "loadtest_floor", "key": publicKeyPEM}
}

// builtInto tells which of the modules compared the binary has.
func builtInto(binary string) (builtIn, error) {
	out, err := exec.Command(binary, "list-modules").Output()
	if err != nil {
		return builtIn{}, fmt.Errorf("%s list-modules: %v", binary, err)
	}
	var with builtIn
	for _, line := range strings.Split(string(out), "\n") {
		switch strings.TrimSpace(line) {
		case peerModule:
			with.peer = true
		case floorModule:
			with.floor = true
		}
	}
	return with, nil
}

// jsonSite is a site in Caddy's JSON, shaped as the Caddyfile adapter
// shapes clerk_m2m's: one route, no matcher, the handler then the same
// response as every other site.
func jsonSite(port int, handler map[string]any) map[string]any {
	return map[string]any{
		"listen": []string{fmt.Sprintf("127.0.0.1:%d", port)},
		"routes": []any{map[string]any{
			"handle": []any{handler, map[string]any{"handler": "static_response", "body": "ok"}},
		}},
	}
}

// addServers adds servers, by name, to an adapted JSON config. Numbers are
// kept as they were written (durations are integers of nanoseconds, which
// Caddy reads back only as integers).
func addServers(config []byte, added map[string]any) ([]byte, error) {
	if len(added) == 0 {
		return config, nil
	}
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
		return nil, errors.New("adapted config: no apps.http.servers to add to")
	}
	for name, server := range added {
		if _, taken := servers[name]; taken {
			return nil, fmt.Errorf("adapted config: a server is already named %q", name)
		}
		servers[name] = server
	}
	return json.Marshal(cfg)
}
