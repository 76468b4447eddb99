package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// modulePath is the module under test.
const modulePath = "github.com/caddy-clerk/clerk-m2m"

// buildCaddy builds, in a Go module of its own under dir, a Caddy with its
// standard modules, clerk_m2m from this checkout (through a replace
// directive) and, when the Go module proxy serves it, the peer module
// (path@version): one binary, so that both run in the same Caddy. The
// project's own go.mod never requires the peer. It returns the binary and
// whether the peer is in it.
func buildCaddy(dir, peer string) (binary string, withPeer bool, err error) {
	checkout, err := goOutput("", "list", "-m", "-f", "{{.Dir}}", modulePath)
	if err != nil {
		return "", false, fmt.Errorf("finding this checkout (run from inside it): %v", err)
	}
	build := filepath.Join(dir, "build")
	if err := os.MkdirAll(build, 0o700); err != nil {
		return "", false, err
	}
	goMod := fmt.Sprintf("module clerk-m2m-loadtest\n\ngo 1.26.0\n\nrequire %s v0.0.0\n\nreplace %[1]s => %s\n", modulePath, checkout)
	if err := os.WriteFile(filepath.Join(build, "go.mod"), []byte(goMod), 0o600); err != nil {
		return "", false, err
	}
	// The checkout's sums spare the proxy most look-ups.
	if sums, err := os.ReadFile(filepath.Join(checkout, "go.sum")); err == nil {
		if err := os.WriteFile(filepath.Join(build, "go.sum"), sums, 0o600); err != nil {
			return "", false, err
		}
	}
	imports := []string{modulePath}
	if peer != "" {
		if _, err := goOutput(build, "get", peer); err != nil {
			fmt.Printf("\n*** The peer %s cannot be had from the Go module proxy:\n%v\n", peer, err)
		} else {
			withPeer = true
			imports = append(imports, strings.SplitN(peer, "@", 2)[0])
		}
	}
	if err := writeMain(filepath.Join(build, "main.go"), imports); err != nil {
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

// caddyConfig is what the Caddyfile is made from: a port per site.
type caddyConfig struct {
	Admin                                 string // the admin API's address, or "off"
	BarePort, ClerkPort, PeerPort         int
	MetricsPort                           int
	SecretKey, MachineSecretKey, ClerkURL string
	PeerKey                               string // the PEM the peer verifies with; empty without a peer
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
{{if .PeerKey}}
http://:{{.PeerPort}} {
	bind 127.0.0.1
	route {
		jwtauth {
			sign_key ` + "`{{.PeerKey}}`" + `
			sign_alg RS256
			from_header Authorization
			user_claims sub
		}
		respond "ok"
	}
}
{{end}}
http://:{{.MetricsPort}} {
	bind 127.0.0.1
	metrics
}
`))

// startCaddy runs the Caddy binary with the Caddyfile. Caddy is stopped
// when this program ends, however it ends (an interrupted run must not
// leave a Caddy behind).
func startCaddy(binary, caddyfile string) (*exec.Cmd, error) {
	cmd := exec.Command(binary, "run", "--config", caddyfile, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	return cmd, cmd.Start()
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

// freePorts returns n ports free on loopback right now.
func freePorts(n int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}
