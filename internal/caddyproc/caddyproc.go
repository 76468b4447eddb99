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
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// builds holds, by main package, the function that builds it once.
var builds sync.Map

// Binary returns the path of the Caddy that ./cmd/caddy builds. The test
// processes of a `go test ./...` share one build: the first to ask links
// it into Go's build cache, under a lock the others wait for, and they
// find it there.
func Binary(t testing.TB) string {
	t.Helper()
	return BinaryOf(t, mainPackage)
}

// BinaryOf is Binary for another main package: Caddy with this module and
// others, as a test module of its own builds it (integration/redis).
func BinaryOf(t testing.TB, pkg string) string {
	t.Helper()
	once, _ := builds.LoadOrStore(pkg, sync.OnceValues(func() (string, error) { return build(pkg) }))
	binary, err := once.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	return binary
}

// build returns the executable Go's build cache holds for the main package
// pkg, linked first if it holds none, with a lock on a file of the
// temporary folder held meanwhile. Without the lock (a file another user
// owns, say), processes that ask at once may each link it.
func build(pkg string) (string, error) {
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
		if binary, err = goOutput("run", "-exec", "echo", pkg); err != nil {
			return "", err
		}
		if strings.HasPrefix(binary, cache+string(filepath.Separator)) {
			return binary, nil
		}
	}
	return "", fmt.Errorf("go run -exec echo %s printed %s, not a path under GOCACHE (%s)", pkg, binary, cache)
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
	return StartBinary(t, Binary(t), config, env...)
}

// StartBinary is Start for another Caddy (see BinaryOf).
func StartBinary(t testing.TB, binary string, config func(Ports) string, env ...string) *Process {
	t.Helper()
	p, err := Run(Command{Binary: binary, Config: func(ports Ports) ([]byte, error) { return []byte(config(ports)), nil }, Env: env})
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

// Get sends a GET of path to the sites, with token as its bearer
// credential unless token is empty, and returns the answer and its body.
func (p *Process) Get(t testing.TB, path, token string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: readyTimeout}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp, string(body)
}

// Metric returns the value of the sample of the process's /metrics named
// name, labels included; 0 when there is none.
func (p *Process) Metric(t testing.TB, name string) float64 {
	t.Helper()
	resp, err := (&http.Client{Timeout: readyTimeout}).Get(p.AdminURL() + "/metrics")
	if err != nil {
		t.Fatalf("reading the metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the metrics: %v", err)
	}
	for line := range strings.Lines(string(body)) {
		if value, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			number, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("the sample %q: %v", line, err)
			}
			return number
		}
	}
	return 0
}
