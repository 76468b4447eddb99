package testenv

import (
	"os/exec"
	"strings"
	"testing"
)

func TestClerkEmptiedEmptiesEveryClerkVariableOfAProcess(t *testing.T) {
	for _, name := range ClerkVariables {
		t.Setenv(name, "a developer's own")
	}
	cmd := exec.Command("env")
	cmd.Env = append(cmd.Environ(), ClerkEmptied()...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range ClerkVariables {
		if !strings.Contains(string(out), "\n"+name+"=\n") && !strings.HasPrefix(string(out), name+"=\n") {
			t.Errorf("%s is not empty in the process:\n%s", name, out)
		}
	}
}
