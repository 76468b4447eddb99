// Package testenv prepares the process environment for the tests of the
// handlers, which read their keys from it by default.
package testenv

import "testing"

// ClerkVariables are the environment variables the handlers take their
// defaults from.
var ClerkVariables = []string{"CLERK_SECRET_KEY", "CLERK_MACHINE_SECRET_KEY", "CLERK_JWT_KEY", "CLERK_API_URL", "CLERK_PUBLISHABLE_KEY"}

// ClearClerk empties the Clerk variables for one test, so that a
// developer's own keys never leak into it.
func ClearClerk(t testing.TB) {
	t.Helper()
	for _, name := range ClerkVariables {
		t.Setenv(name, "")
	}
}
