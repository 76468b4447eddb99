// Package caddyproc runs Caddy as a process of its own: for the suites
// that test the module as a user runs it, the Caddy that ./cmd/caddy
// builds (built once for a whole `go test ./...`), configured by a
// Caddyfile; for the benchmarks, which compare builds, any binary. Its
// ports are chosen at run time, on loopback.
package caddyproc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-clerk/clerk-m2m/internal/freeport"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
	"github.com/caddy-clerk/clerk-m2m/internal/testproc"
)

// readyTimeout bounds how long a started Caddy may take to answer.
const readyTimeout = 30 * time.Second

// mainPackage is the Caddy of this checkout.
const mainPackage = "github.com/caddy-clerk/clerk-m2m/cmd/caddy"

var built = sync.OnceValues(build)

// Binary returns the path of the Caddy that ./cmd/caddy builds. The test
// processes of a `go test ./...` share one build: the first to ask links
// it into Go's build cache, under a lock the others wait for, and they
// find it there.
func Binary(t testing.TB) string {
	t.Helper()
	binary, err := built()
	if err != nil {
		t.Fatal(err)
	}
	return binary
}

// build returns the executable Go's build cache holds for mainPackage,
// linked first if it holds none, with a lock on a file of the temporary
// folder held meanwhile. Without the lock (a file another user owns, say),
// processes that ask at once may each link it.
func build() (string, error) {
	if lock, err := os.OpenFile(filepath.Join(os.TempDir(), "clerk-m2m-caddyproc.lock"), os.O_CREATE|os.O_RDWR, 0o600); err == nil {
		defer lock.Close() // and with it the lock
		_ = lockFile(lock)
	}
	cache, err := goOutput("env", "GOCACHE")
	if err != nil {
		return "", err
	}
	// go run -exec echo prints the executable's path instead of running
	// it: the first run of a build not cached yet prints a temporary one,
	// removed as go run exits, and caches the executable; the next prints
	// where the cache keeps it.
	var binary string
	for range 2 {
		if binary, err = goOutput("run", "-exec", "echo", mainPackage); err != nil {
			return "", err
		}
		if strings.HasPrefix(binary, cache+string(filepath.Separator)) {
			return binary, nil
		}
	}
	return "", fmt.Errorf("go run -exec echo %s printed %s, not a path under GOCACHE (%s)", mainPackage, binary, cache)
}

// goOutput runs the go command, and returns what it printed.
func goOutput(args ...string) (string, error) {
	cmd := exec.Command("go", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// Ports are the ports a Caddy process listens on, on loopback.
type Ports struct {
	HTTP  int   // for the sites
	Admin int   // the admin endpoint
	More  []int // Command.MorePorts others
}

// Command is a Caddy to run.
type Command struct {
	Binary    string                      // the Caddy to run
	Config    func(Ports) ([]byte, error) // its configuration for the ports chosen: a Caddyfile, or Caddy's JSON
	MorePorts int                         // how many ports to choose besides HTTP and Admin
	Env       []string                    // added to this process's environment, whose Clerk variables are emptied
}

// Process is a running Caddy.
type Process struct {
	Ports Ports
	proc  *testproc.Process
	dir   string // its configuration and XDG folders
}

// Start runs the Caddy of this checkout with the Caddyfile that config
// returns for the ports chosen, env added to the test's environment (see
// Command), and waits until its admin endpoint answers. The process is
// stopped when the test ends; its output is in the test log if the test
// failed.
func Start(t testing.TB, config func(Ports) string, env ...string) *Process {
	t.Helper()
	p, err := Run(Command{Binary: Binary(t), Config: func(ports Ports) ([]byte, error) { return []byte(config(ports)), nil }, Env: env})
	if err != nil {
		t.Fatalf("starting caddy: %v", err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("caddy output:\n%s", p.Output())
		}
	})
	return p
}

// Run runs c and waits until its admin endpoint answers. A port another
// process took between choosing it and Caddy binding it is chosen again.
// The caller stops the process.
func Run(c Command) (*Process, error) {
	return freeport.Retry(2+c.MorePorts, func(ports []int) (*Process, error) {
		return run(c, Ports{HTTP: ports[0], Admin: ports[1], More: ports[2:]})
	})
}

func run(c Command, ports Ports) (*Process, error) {
	config, err := c.Config(ports)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "caddyproc-run-")
	if err != nil {
		return nil, err
	}
	p := &Process{Ports: ports, dir: dir}
	configFile := filepath.Join(dir, "config")
	if err := os.WriteFile(configFile, config, 0o600); err != nil {
		p.Stop()
		return nil, err
	}
	args := []string{"run", "--config", configFile}
	if !json.Valid(config) {
		args = append(args, "--adapter", "caddyfile")
	}
	cmd := exec.Command(c.Binary, args...)
	// XDG dirs in the temporary folder: no autosave.json or certificates
	// written where a developer's own Caddy keeps them.
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir, "HOME="+dir)
	for _, name := range testenv.ClerkVariables {
		cmd.Env = append(cmd.Env, name+"=")
	}
	cmd.Env = append(cmd.Env, c.Env...)
	if p.proc, err = testproc.Start("caddy", cmd, testproc.Answers(p.AdminURL()+"/config/"), readyTimeout); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// Stop ends the process and removes its folder.
func (p *Process) Stop() {
	if p.proc != nil {
		p.proc.Stop()
	}
	_ = os.RemoveAll(p.dir)
}

// URL is the base URL of the sites (plain http on loopback).
func (p *Process) URL() string { return "http://" + freeport.Addr(p.Ports.HTTP) }

// AdminURL is the base URL of the admin endpoint (its /metrics too).
func (p *Process) AdminURL() string { return "http://" + freeport.Addr(p.Ports.Admin) }

// Output is what Caddy has logged so far.
func (p *Process) Output() string { return p.proc.Output() }

// Exited is closed when the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.proc.Exited() }

// Pid is the process's id.
func (p *Process) Pid() int { return p.proc.Pid() }
