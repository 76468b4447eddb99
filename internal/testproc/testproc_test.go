package testproc

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// exists is a readiness check: the file is there.
func exists(path string) func() bool {
	return func() bool {
		_, err := os.Stat(path)
		return err == nil
	}
}

func TestStartWaitsUntilReadyAndStopEndsTheProcess(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "ready")
	p, err := Start("sleeper", exec.Command("sh", "-c", `echo starting; touch "$0"; exec sleep 60`, flag), exists(flag), 10*time.Second)
	require.NoError(t, err)
	assert.FileExists(t, flag)
	assert.Eventually(t, func() bool { return strings.Contains(p.Output(), "starting") }, 10*time.Second, 10*time.Millisecond)

	p.Stop()
	select {
	case <-p.done:
	default:
		t.Fatal("the process still runs after Stop")
	}
}

func TestSignalReachesTheProcess(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "ready")
	p, err := Start("trapper", exec.Command("sh", "-c", `trap 'echo got USR1; exit 0' USR1; touch "$0"; while :; do sleep 0.01; done`, flag),
		exists(flag), 10*time.Second)
	require.NoError(t, err)
	defer p.Stop()
	require.NoError(t, p.Signal(syscall.SIGUSR1))
	select {
	case <-p.Exited():
	case <-time.After(time.Minute):
		t.Fatal("the signal did not end the process")
	}
	assert.Contains(t, p.Output(), "got USR1")
}

func TestStartFailsWithTheOutputOfAProcessThatExits(t *testing.T) {
	_, err := Start("quitter", exec.Command("sh", "-c", "echo cannot bind; exit 3"), func() bool { return false }, 10*time.Second)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "quitter exited before it was ready")
	assert.Contains(t, err.Error(), "cannot bind")
}

func TestStartGivesUpOnAProcessNeverReady(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	_, err := Start("sluggard", cmd, func() bool { return false }, 100*time.Millisecond)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "sluggard was not ready within 100ms")
	assert.NotNil(t, cmd.ProcessState, "the process was killed and waited for")
}

func TestAnswers(t *testing.T) {
	status := http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
	ready := Answers(srv.URL)
	assert.False(t, ready(), "503 is not ready")
	status = http.StatusOK
	assert.True(t, ready())
	srv.Close()
	assert.False(t, ready(), "nothing listening is not ready")
}
