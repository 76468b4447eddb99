package main

import (
	"path/filepath"
	"testing"
)

// TestScenariosServe runs every scenario natively, as callgrind would run
// it: each request must be answered 200, and the distinct scenario needs
// a token for each request.
func TestScenariosServe(t *testing.T) {
	material := filepath.Join(t.TempDir(), "material.json")
	if err := makeMaterial(material, 4); err != nil {
		t.Fatal(err)
	}
	for _, sc := range scenarios {
		if err := serve(sc, material, 4); err != nil {
			t.Errorf("%s: %v", sc, err)
		}
	}
	if err := serve("distinct", material, 5); err == nil {
		t.Error("the distinct scenario served more requests than it has tokens")
	}
	if err := serve("no-such", material, 1); err == nil {
		t.Error("an unknown scenario was served")
	}
}
