package main

import (
	"bytes"
	"testing"

	"github.com/caddy-clerk/clerk-m2m/examples/internal/demo"
)

// TestCheck runs the quickstart's self-check, the same as
// `go run ./examples/quickstart -check`.
func TestCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Caddy")
	}
	d, err := start(demo.FreeAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer d.stop()
	var out bytes.Buffer
	ok := d.check(&out)
	t.Log("\n" + out.String())
	if !ok {
		t.Fatal("the quickstart's self-check failed")
	}
}
