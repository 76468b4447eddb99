// Package testproc runs a program as a process of its own for a test or a
// benchmark (a Caddy, a Prometheus): its output collected, its readiness
// waited for, ended with the program that started it.
package testproc

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
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
// it is killed and the error holds its output. name names it in errors.
// The process is killed if the program that started it dies (on Linux),
// so that a test binary killed for its timeout leaves no server behind.
func Start(name string, cmd *exec.Cmd, ready func() bool, timeout time.Duration) (*Process, error) {
	p := &Process{name: name, cmd: cmd, output: new(lockedBuffer), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	dieWithParent(cmd)
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

// Exited is closed when the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Pid is the process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process (SIGSTOP and SIGCONT freeze and thaw it).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop ends the process gracefully (SIGINT), killing it if it does not end
// in time.
func (p *Process) Stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	select {
	case <-p.done:
	case <-ctx.Done():
		p.kill()
	}
}

func (p *Process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
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
