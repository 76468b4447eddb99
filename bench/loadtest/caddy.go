package main

import (
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

// buildCaddy builds, in a Go module of its own under dir, a Caddy with its
// standard modules, clerk_m2m from this checkout (through a replace
// directive) and the peer module (path@version): from peerSource, a
// directory holding its source, when given (through a replace directive
// too), or else from the Go module proxy when it serves it. One binary, so
// that both run in the same Caddy. The project's own go.mod never requires
// the peer. It returns the binary and whether the peer is in it.
func buildCaddy(dir, peer, peerSource string) (binary string, withPeer bool, err error) {
	checkout, err := goOutput("", "list", "-m", "-f", "{{.Dir}}", modulePath)
	if err != nil {
		return "", false, fmt.Errorf("finding this checkout (run from inside it): %v", err)
	}
	build := filepath.Join(dir, "build")
	if withPeer, err = writeBuildModule(build, checkout, peer, peerSource); err != nil {
		return "", false, err
	}
	if _, err := goOutput(build, "mod", "tidy"); err != nil {
		return "", false, err
	}
	binary = filepath.Join(dir, "caddy")
	if _, err := goOutput(build, "build", "-o", binary, "."); err != nil {
		return "", false, err
	}
	return binary, withPeer, nil
}

// writeBuildModule writes the build module into dir: its go.mod, the
// checkout's sums and a main.go importing the modules built in. It tells
// whether the peer is among them.
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
	imports := []string{modulePath}
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

// caddyConfig is what the Caddyfile is made from: a port per site.
type caddyConfig struct {
	Admin                                 string // the admin API's address, or "off"
	BarePort, ClerkPort, MetricsPort      int
	SecretKey, MachineSecretKey, ClerkURL string
}

// caddyfileTemplate puts every route in a site of its own, on a port of its
// own and with no host to match, so that no route pays for another's
// matchers and every route pays the same for its own. The logs are quiet:
// no access log, and errors only.
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
