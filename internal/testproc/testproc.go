// Package testproc runs a program as a process of its own for a test (a
// Caddy, a Prometheus): on ports chosen at run time, its output collected
// for the test log, its readiness waited for, and stopped when the test
// ends.
package testproc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// stopTimeout is how long a process has to end once asked to, before it
// is killed.
const stopTimeout = 10 * time.Second

// Process is a running program.
type Process struct {
	name   string
	cmd    *exec.Cmd
	output *lockedBuffer
	done   chan struct{}
}

// Start runs cmd, collecting its output, and waits until ready reports
// true (polled every 20ms). If the process exits first, or timeout passes,
// it is killed and the error holds its output. name names it in errors and
// in the test log.
func Start(name string, cmd *exec.Cmd, ready func() bool, timeout time.Duration) (*Process, error) {
	p := &Process{name: name, cmd: cmd, output: new(lockedBuffer), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	if err := p.waitReady(ready, timeout); err != nil {
		p.kill()
		return nil, fmt.Errorf("%v\n%s", err, p.output.String())
	}
	return p, nil
}

func (p *Process) waitReady(ready func() bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !ready() {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready", p.name)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s was not ready within %v", p.name, timeout)
		}
	}
	return nil
}

// Answers returns a readiness check: a GET of url gets 200.
func Answers(url string) func() bool {
	client := &http.Client{Timeout: time.Second}
	return func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}

// Output is what the process has written so far.
func (p *Process) Output() string { return p.output.String() }

// Pid is the process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process (SIGSTOP and SIGCONT freeze and thaw it).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop ends the process gracefully (SIGINT), killing it if it does not end
// in time, and puts its output in the test log if the test failed.
func (p *Process) Stop(t testing.TB) {
	_ = p.cmd.Process.Signal(os.Interrupt)
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	select {
	case <-p.done:
	case <-ctx.Done():
		p.kill()
	}
	if t.Failed() {
		t.Logf("%s output:\n%s", p.name, p.output.String())
	}
}

func (p *Process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// OnFreePorts calls start with n loopback ports that were free a moment
// before, and again with others (three tries in all) when it fails because
// another process took one in between (the error says "address already in
// use", in any case: Go's and Redis's words).
func OnFreePorts[T any](n int, start func(ports []int) (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(n)
		if err != nil {
			var none T
			return none, err
		}
		started, err := start(ports)
		if err == nil || attempt == 3 || !strings.Contains(strings.ToLower(err.Error()), "address already in use") {
			return started, err
		}
	}
}

// freePorts asks the kernel for n free loopback ports.
func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		defer l.Close()
	}
	return ports, nil
}

// lockedBuffer collects a process's output while tests read it.
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
