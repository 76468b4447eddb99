package main

import (
	"bytes"
	"testing"
)

// TestCheck runs the example's self-check for both token formats, the same
// as `go run ./examples/two-services -check`.
func TestCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Caddy")
	}
	for _, format := range []string{"jwt", "opaque"} {
		t.Run(format, func(t *testing.T) {
			s, err := start(format, false)
			if err != nil {
				t.Fatal(err)
			}
			defer s.stop()
			var out bytes.Buffer
			ok := s.check(&out)
			t.Log("\n" + out.String())
			if !ok {
				t.Fatal("the two-services self-check failed")
			}
		})
	}
}
