// Package caddyproc builds Caddy with this module (./cmd/caddy) and runs it
// as a process of its own, for the black-box suites that hold the module to
// outside references (Clerk's SDK, a real Prometheus): they see exactly the
// binary a user builds, configured by a Caddyfile, on ports chosen at run
// time.
package caddyproc

import (
	"bytes"
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

	"github.com/caddy-clerk/clerk-m2m/internal/testproc"
)

// readyTimeout bounds how long a started Caddy may take to answer.
const readyTimeout = 30 * time.Second

var (
	mainPackage = "github.com/caddy-clerk/clerk-m2m/cmd/caddy" // what Binary builds
	buildOnce   sync.Once
	binary      string
	buildErr    error
	buildDir    string
)

// Main runs a package's tests (call it from TestMain) and then removes the
// Caddy binary built for them.
func Main(m *testing.M) { MainBuilding(m, mainPackage) }

// MainBuilding is Main for the tests of another build of Caddy: the main
// package pkg, Caddy with this module and others, as xcaddy builds it.
func MainBuilding(m *testing.M, pkg string) {
	mainPackage = pkg
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// Binary builds ./cmd/caddy (or the package given to MainBuilding) once
// per test process and returns its path. The package's TestMain must call
// Main or MainBuilding, which removes it.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "caddyproc-")
		if buildErr != nil {
			return
		}
		binary = filepath.Join(buildDir, "caddy")
		cmd := exec.Command("go", "build", "-o", binary, mainPackage)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build %s: %v\n%s", mainPackage, err, out.String())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// Ports are the ports a Caddy process listens on.
type Ports struct {
	HTTP  int // for the sites
	Admin int // the admin endpoint (localhost only)
}

// Process is a running Caddy.
type Process struct {
	Ports Ports
	proc  *testproc.Process
	dir   string // its Caddyfile and XDG folders
}

// Start runs Caddy with the Caddyfile that config returns for the ports
// given, and waits until its admin endpoint answers. A port another process
// took between choosing it and Caddy binding it is chosen again. env is
// added to the test's environment. The process is stopped when the test
// ends; its output is in the test log if the test failed.
func Start(t testing.TB, config func(Ports) string, env ...string) *Process {
	t.Helper()
	bin := Binary(t)
	p, err := testproc.OnFreePorts(2, func(ports []int) (*Process, error) {
		return start(bin, config, Ports{HTTP: ports[0], Admin: ports[1]}, env)
	})
	if err != nil {
		t.Fatalf("starting caddy: %v", err)
	}
	t.Cleanup(func() {
		p.proc.Stop(t)
		_ = os.RemoveAll(p.dir)
	})
	return p
}

func start(bin string, config func(Ports) string, ports Ports, env []string) (*Process, error) {
	dir, err := os.MkdirTemp("", "caddyproc-run-")
	if err != nil {
		return nil, err
	}
	configFile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(configFile, []byte(config(ports)), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	p := &Process{Ports: ports, dir: dir}
	cmd := exec.Command(bin, "run", "--config", configFile, "--adapter", "caddyfile")
	// XDG dirs in the temporary folder: no autosave.json or certificates
	// written where a developer's own Caddy keeps them.
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir, "HOME="+dir)
	cmd.Env = append(cmd.Env, env...)
	p.proc, err = testproc.Start("caddy", cmd, testproc.Answers(p.AdminURL()+"/config/"), readyTimeout)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

// URL is the base URL of the sites (plain http on loopback).
func (p *Process) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.Ports.HTTP) }

// AdminURL is the base URL of the admin endpoint (its /metrics too).
func (p *Process) AdminURL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.Ports.Admin) }

// Output is what Caddy has logged so far.
func (p *Process) Output() string { return p.proc.Output() }

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

// Metric returns the value of the sample of the process's /metrics whose
// name and labels start with prefix, 0 when there is none.
func (p *Process) Metric(t testing.TB, prefix string) float64 {
	t.Helper()
	client := &http.Client{Timeout: readyTimeout}
	resp, err := client.Get(p.AdminURL() + "/metrics")
	if err != nil {
		t.Fatalf("reading the metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the metrics: %v", err)
	}
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, prefix) {
			fields := strings.Fields(line)
			value, err := strconv.ParseFloat(fields[len(fields)-1], 64)
			if err != nil {
				t.Fatalf("the sample %q: %v", line, err)
			}
			return value
		}
	}
	return 0
}
