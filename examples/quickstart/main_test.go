package main

import (
	"bytes"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/caddy-clerk/clerk-m2m/examples/internal/demo"
	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
	"github.com/caddy-clerk/clerk-m2m/internal/freeport"
)

// TestCheck runs the quickstart's self-check, the same as
// `go run ./examples/quickstart -check`.
func TestCheck(t *testing.T) {
	d := startQuickstart(t)
	var out bytes.Buffer
	ok := d.check(&out)
	t.Log("\n" + out.String())
	if !ok {
		t.Fatal("the quickstart's self-check failed")
	}
}

// startQuickstart starts the quickstart on a free loopback port, stopped
// when the test ends; in a short run, the test is skipped.
func startQuickstart(t *testing.T) *quickstart {
	t.Helper()
	if testing.Short() {
		t.Skip("starts Caddy")
	}
	d, err := start(demo.FreeAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	return d
}

var (
	exports = regexp.MustCompile(`(?m)^  export (.+)$`)
	tryCurl = regexp.MustCompile(`(?m)^  curl -i (http://localhost:(\d+)/invoices) -H 'Authorization: Bearer (\S+)'$`)
)

// TestTheHintWorksAsPrinted follows the quickstart's hint as a user
// would: examples/Caddyfile, run by the Caddy of ./cmd/caddy with exactly
// the variables the hint exports, on the port it names (beside the
// quickstart's own gateway, which keeps answering), lets the hint's curl
// line through to the demo service as the quickstart's caller.
func TestTheHintWorksAsPrinted(t *testing.T) {
	d := startQuickstart(t)
	ports, err := freeport.Ports(1)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	d.explain(&out, ports[0])
	printed := out.String()
	export := exports.FindStringSubmatch(printed)
	curl := tryCurl.FindAllStringSubmatch(printed, -1)
	if export == nil || len(curl) == 0 || !strings.Contains(printed, "\n  go run ./cmd/caddy run --config examples/Caddyfile\n") {
		t.Fatalf("no export, command and curl line in the hint:\n%s", printed)
	}
	try := curl[len(curl)-1]
	if try[2] != strconv.Itoa(ports[0]) || strings.Contains(d.gateway, ":"+try[2]) {
		t.Fatalf("the hint's port %s is not the one given, or is the gateway's (%s)", try[2], d.gateway)
	}
	caddyfile, err := os.ReadFile("../Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	caddyproc.Start(t, func(p caddyproc.Ports) string {
		// The hint's Caddy has its admin endpoint where the Caddyfile's
		// default puts it; the test's, on a port of its own.
		return "{\n\tadmin " + freeport.Addr(p.Admin) + "\n}\n\n" + string(caddyfile)
	}, strings.Fields(export[1])...)

	req, err := http.NewRequest(http.MethodGet, strings.Replace(try[1], "localhost", freeport.Host, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+try[3])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the hint's curl line got %d", resp.StatusCode)
	}
	if status, _ := d.try(checkCase{token: try[3]}); status != http.StatusOK {
		t.Errorf("the quickstart's own gateway answered %d beside it", status)
	}
}
