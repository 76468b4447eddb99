// Command two-services runs Caddy on both ends of an M2M call, against a
// built-in fake Clerk: a sidecar that gives service A's outgoing calls a
// token of A's machine, and a gateway in front of service B that verifies
// it.
//
//	go run ./examples/two-services            # serve until interrupted
//	go run ./examples/two-services -check     # make the calls, print the outcomes, exit 0 if all as expected
package main

import (
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/examples/internal/demo"
)

//go:embed Caddyfile
var caddyfile []byte

func main() {
	format := flag.String("format", "jwt", "the format of A's tokens: jwt or opaque")
	check := flag.Bool("check", false, "make the calls, print the outcomes and exit (0 if all as expected)")
	flag.Parse()
	setup, err := start(*format, !*check)
	if err != nil {
		fmt.Fprintln(os.Stderr, "two-services:", err)
		os.Exit(1)
	}
	defer setup.stop()
	if *check {
		if !setup.check(os.Stdout) {
			os.Exit(1)
		}
		return
	}
	fmt.Printf(`Caddy on both ends of an M2M call (%s tokens), against a fake Clerk at %s

  service A (%s) calls B through its sidecar, with no credential:

    curl -i %s/invoices

  B's gateway refuses anyone calling it directly:

    curl -i %s/invoices

Press Ctrl+C to stop.
`, *format, setup.clerk.URL, setup.a.ID, setup.sidecar, setup.gateway)
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt)
	<-interrupted
}

// setup is the running example.
type setup struct {
	clerk            *backendtest.Server
	a, b             *backendtest.Machine
	serviceB         *httptest.Server
	sidecar, gateway string // base URLs
}

// start runs the fake Clerk, service B and Caddy. The example's own ports
// are used when serving; free ones when checking.
func start(format string, defaultPorts bool) (*setup, error) {
	s := &setup{clerk: backendtest.New(), serviceB: httptest.NewServer(demo.EchoIdentity("service B"))}
	s.a, s.b = s.clerk.NewMachine("service-a"), s.clerk.NewMachine("service-b")
	s.clerk.GrantScopes(s.a, s.b.ID)
	sidecar, gateway := "localhost:8081", "localhost:8082"
	if !defaultPorts {
		sidecar, gateway = demo.FreeAddr(), demo.FreeAddr()
	}
	s.sidecar, s.gateway = "http://"+sidecar, "http://"+gateway
	err := demo.StartCaddy(caddyfile, map[string]string{
		"A_MACHINE_SECRET_KEY": s.a.SecretKey, "B_MACHINE_SECRET_KEY": s.b.SecretKey, "B_MACHINE_ID": s.b.ID,
		"CLERK_SECRET_KEY": s.clerk.SecretKey(), "CLERK_API_URL": s.clerk.URL, "TOKEN_FORMAT": format,
		"A_SIDECAR": sidecar, "B_GATEWAY": gateway, "B_SERVICE": strings.TrimPrefix(s.serviceB.URL, "http://"),
	})
	if err != nil {
		s.clerk.Close()
		s.serviceB.Close()
		return nil, err
	}
	return s, nil
}

func (s *setup) stop() {
	demo.StopCaddy()
	s.serviceB.Close()
	s.clerk.Close()
}

// call makes one request and returns its status and what service B saw.
func call(url string) (int, map[string]string) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var seen map[string]string
	_ = json.Unmarshal(body, &seen)
	return resp.StatusCode, seen
}

// check makes A's calls through the sidecar (20 in a row, then 50 at once)
// and one call around it, and reports whether everything went as it should:
// every call through reaches B as A, with one token minted in all.
func (s *setup) check(out io.Writer) bool {
	ok := true
	report := func(what string, good bool, detail string) {
		verdict := "ok"
		if !good {
			verdict, ok = "UNEXPECTED", false
		}
		fmt.Fprintf(out, "%-52s %-10s %s\n", what, verdict, detail)
	}
	for i := range 20 {
		status, seen := call(s.sidecar + "/invoices")
		if status != http.StatusOK || seen["machine_id"] != s.a.ID || i == 19 {
			report("20 calls from A through its sidecar", status == http.StatusOK && seen["machine_id"] == s.a.ID,
				fmt.Sprintf("status %d, B saw caller %s (%s token)", status, seen["machine_id"], seen["token_format"]))
			break
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	failures := 0
	for range 50 {
		wg.Go(func() {
			if status, seen := call(s.sidecar + "/invoices"); status != http.StatusOK || seen["machine_id"] != s.a.ID {
				mu.Lock()
				failures++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	report("50 calls at once", failures == 0, fmt.Sprintf("%d failed", failures))
	mints := s.clerk.Calls("/m2m_tokens")
	report("tokens minted for all 70 calls", mints == 1, fmt.Sprint(mints))
	status, _ := call(s.gateway + "/invoices")
	report("a call to B's gateway without the sidecar", status == http.StatusUnauthorized, fmt.Sprintf("status %d", status))
	return ok
}
