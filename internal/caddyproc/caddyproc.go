// Package caddyproc builds Caddy with this module (./cmd/caddy) and runs it
// as a process of its own, for the black-box suites that hold the module to
// outside references (Clerk's SDK, a real Prometheus): they see exactly the
// binary a user builds, configured by a Caddyfile, on ports chosen at run
// time.
package caddyproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// readyTimeout bounds how long a started Caddy may take to answer.
const readyTimeout = 30 * time.Second

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
	buildDir  string
)

// Main runs a package's tests (call it from TestMain) and then removes the
// Caddy binary built for them.
func Main(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// Binary builds ./cmd/caddy once per test process and returns its path. The
// package's TestMain must call Main, which removes it.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "caddyproc-")
		if buildErr != nil {
			return
		}
		binary = filepath.Join(buildDir, "caddy")
		cmd := exec.Command("go", "build", "-o", binary, "github.com/caddy-clerk/clerk-m2m/cmd/caddy")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out.String())
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
	cmd   *exec.Cmd
	log   *lockedBuffer
	done  chan struct{}
}

// Start runs Caddy with the Caddyfile that config returns for the ports
// given, and waits until its admin endpoint answers. A port another process
// took between choosing it and Caddy binding it is chosen again. env is
// added to the test's environment. The process is stopped when the test
// ends; its output is in the test log if the test failed.
func Start(t testing.TB, config func(Ports) string, env ...string) *Process {
	t.Helper()
	bin := Binary(t)
	for attempt := 1; ; attempt++ {
		p, err := start(bin, config, env)
		if err == nil {
			t.Cleanup(func() { p.stop(t) })
			return p
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("starting caddy: %v", err)
		}
	}
}

func start(bin string, config func(Ports) string, env []string) (*Process, error) {
	ports, err := freePorts()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "caddyproc-run-")
	if err != nil {
		return nil, err
	}
	configFile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(configFile, []byte(config(ports)), 0o600); err != nil {
		return nil, err
	}
	p := &Process{Ports: ports, log: new(lockedBuffer), done: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "--config", configFile, "--adapter", "caddyfile")
	// XDG dirs in the temporary folder: no autosave.json or certificates
	// written where a developer's own Caddy keeps them.
	p.cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir, "HOME="+dir)
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		_ = os.RemoveAll(dir)
		close(p.done)
	}()
	if err := p.waitReady(); err != nil {
		p.kill()
		return nil, fmt.Errorf("%v\n%s", err, p.log.String())
	}
	return p, nil
}

// waitReady polls the admin endpoint until it answers, the process exits,
// or readyTimeout passes.
func (p *Process) waitReady() error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(p.AdminURL() + "/config/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return errors.New("caddy exited before it was ready")
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("caddy did not answer on %s within %v", p.AdminURL(), readyTimeout)
		}
	}
}

// URL is the base URL of the sites (plain http on loopback).
func (p *Process) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.Ports.HTTP) }

// AdminURL is the base URL of the admin endpoint (its /metrics too).
func (p *Process) AdminURL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.Ports.Admin) }

// Output is what Caddy has logged so far.
func (p *Process) Output() string { return p.log.String() }

// stop ends the process gracefully (Caddy stops on SIGINT), killing it if
// it does not end in time.
func (p *Process) stop(t testing.TB) {
	_ = p.cmd.Process.Signal(os.Interrupt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-p.done:
	case <-ctx.Done():
		p.kill()
	}
	if t.Failed() {
		t.Logf("caddy output:\n%s", p.log.String())
	}
}

func (p *Process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// freePorts asks the kernel for two free loopback ports.
func freePorts() (Ports, error) {
	var ports [2]int
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return Ports{}, err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		defer l.Close()
	}
	return Ports{HTTP: ports[0], Admin: ports[1]}, nil
}

// lockedBuffer collects the process's output while tests read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
