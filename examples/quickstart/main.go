// Command quickstart runs the whole thing on localhost with nothing to set
// up: a fake Clerk, a demo service that echoes the identity it is given, and
// Caddy with clerk_m2m in front of it. It prints tokens and curl lines to try.
//
//	go run ./examples/quickstart            # serve until interrupted
//	go run ./examples/quickstart -check     # try every case, print a table, exit 0 if all went as expected
package main

import (
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/examples/internal/demo"
)

//go:embed Caddyfile
var caddyfile []byte

func main() {
	addr := flag.String("addr", "localhost:8080", "where the gateway listens")
	tryPort := flag.Int("try-port", 8090, "the port the hint to try your own Caddyfile gives it, beside the gateway's")
	check := flag.Bool("check", false, "try every case against the gateway, print the outcomes and exit (0 if all as expected)")
	flag.Parse()

	if *check {
		*addr = demo.FreeAddr()
	}
	demo, err := start(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
	defer demo.stop()

	if *check {
		if !demo.check(os.Stdout) {
			os.Exit(1)
		}
		return
	}
	demo.explain(os.Stdout, *tryPort)
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt)
	<-interrupted
}

// quickstart is the running demo.
type quickstart struct {
	gateway  string // base URL of Caddy
	clerk    *backendtest.Server
	service  *backendtest.Machine // the machine the gateway stands for
	caller   *backendtest.Machine // a machine allowed to call it
	upstream *httptest.Server
}

// start runs the fake Clerk, the demo service and Caddy listening on addr.
func start(addr string) (*quickstart, error) {
	d := &quickstart{gateway: "http://" + addr, clerk: backendtest.New(), upstream: httptest.NewServer(demo.EchoIdentity("the invoices API"))}
	d.service = d.clerk.NewMachine("invoices-api")
	d.caller = d.clerk.NewMachine("billing-job")
	d.clerk.GrantScopes(d.caller, d.service.ID)

	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("-addr %q: %v", addr, err)
	}
	err = demo.StartCaddy(caddyfile, map[string]string{
		"CLERK_SECRET_KEY":         d.clerk.SecretKey(),
		"CLERK_MACHINE_SECRET_KEY": d.service.SecretKey,
		"CLERK_API_URL":            d.clerk.URL,
		"QUICKSTART_ADDR":          addr,
		"QUICKSTART_HOST":          host,
		"QUICKSTART_UPSTREAM":      strings.TrimPrefix(d.upstream.URL, "http://"),
	})
	if err != nil {
		d.clerk.Close()
		d.upstream.Close()
		return nil, fmt.Errorf("on %s: %v", addr, err)
	}
	return d, nil
}

func (d *quickstart) stop() {
	demo.StopCaddy()
	d.upstream.Close()
	d.clerk.Close()
}

func (d *quickstart) opaqueToken() string {
	token, _ := d.clerk.CreateM2MToken(d.caller, backendtest.TokenOptions{
		Scopes: []string{d.service.ID}, Claims: map[string]any{"job": "nightly-billing"}, TTL: time.Hour,
	})
	return token
}

func (d *quickstart) jwt(opts backendtest.JWTOptions) string {
	opts.Scopes = []string{d.service.ID}
	if opts.TTL == 0 {
		opts.TTL = time.Hour
	}
	return d.clerk.MintM2MJWT(d.caller, opts)
}

// explain prints what runs, tokens and curl lines to try, and how to try
// examples/Caddyfile against the fake Clerk, on tryPort: the exports it
// needs (keys, and what it reads as it is adapted: its port, upstream and
// machine id) and the command.
func (d *quickstart) explain(out io.Writer, tryPort int) {
	opaque := d.opaqueToken()
	fmt.Fprintf(out, `caddy-clerk-m2m quickstart

  gateway (Caddy + clerk_m2m)  %s
  demo service behind it       %s
  fake Clerk Backend API       %s
  machines                     %s (billing-job, the caller) -> %s (invoices-api, behind the gateway)

An opaque M2M token (verified by asking Clerk):

  curl -i %s/invoices -H 'Authorization: Bearer %s'

An M2M JWT (verified locally with Clerk's signing keys):

  curl -i %s/invoices -H 'Authorization: Bearer %s'

No token, or a forged one, is refused:

  curl -i %s/invoices
  curl -i %s/invoices -H 'Authorization: Bearer mt_0123456789abcdef0123456789abcdef'

To try examples/Caddyfile against this fake Clerk and demo service, on
port %d (the gateway above keeps its own), in another terminal:

  export CLERK_API_URL=%s CLERK_SECRET_KEY=%s CLERK_MACHINE_SECRET_KEY=%s PORT=%d UPSTREAM=%s MACHINE_ID=%s
  go run ./cmd/caddy run --config examples/Caddyfile

then the tokens above work there too:

  curl -i http://localhost:%d/invoices -H 'Authorization: Bearer %s'

The tokens are valid for an hour. Press Ctrl+C to stop.
`, d.gateway, d.upstream.URL, d.clerk.URL, d.caller.ID, d.service.ID,
		d.gateway, opaque, d.gateway, d.jwt(backendtest.JWTOptions{}), d.gateway, d.gateway,
		tryPort, d.clerk.URL, d.clerk.SecretKey(), d.service.SecretKey, tryPort, strings.TrimPrefix(d.upstream.URL, "http://"),
		d.service.ID, tryPort, opaque)
}

// checkCase is one request of the self-check and the status it must get.
type checkCase struct {
	name   string
	token  string // "" = no Authorization header
	setup  func() func()
	status int
}

// check makes each request, prints a table of outcomes, and reports whether
// every one was as expected.
func (d *quickstart) check(out io.Writer) bool {
	outage := func() func() {
		d.clerk.SetFault(backendtest.Fault{Status: http.StatusServiceUnavailable})
		return d.clerk.ClearFaults
	}
	cases := []checkCase{
		{"valid opaque token", d.opaqueToken(), nil, http.StatusOK},
		{"valid M2M JWT", d.jwt(backendtest.JWTOptions{}), nil, http.StatusOK},
		{"no token", "", nil, http.StatusUnauthorized},
		{"garbage token", "not-a-clerk-token", nil, http.StatusUnauthorized},
		{"JWT of the session category", d.jwt(backendtest.JWTOptions{Category: "cl_B7d4PD111AAA"}), nil, http.StatusUnauthorized},
		{"Clerk outage (opaque token)", d.opaqueToken(), outage, http.StatusServiceUnavailable},
	}
	table := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(table, "CASE\tEXPECTED\tGOT\tDETAIL\t")
	allGood := true
	for _, c := range cases {
		status, detail := d.try(c)
		verdict := "ok"
		if status != c.status {
			verdict, allGood = "UNEXPECTED", false
		}
		fmt.Fprintf(table, "%s\t%d\t%d %s\t%s\t\n", c.name, c.status, status, verdict, detail)
	}
	_ = table.Flush()
	if allGood {
		fmt.Fprintln(out, "\nall cases behaved as expected")
	} else {
		fmt.Fprintln(out, "\nsome cases did not behave as expected")
	}
	return allGood
}

// try makes one request through the gateway and summarises the answer.
func (d *quickstart) try(c checkCase) (int, string) {
	if c.setup != nil {
		defer c.setup()()
	}
	req, err := http.NewRequest(http.MethodGet, d.gateway+"/invoices", nil)
	if err != nil {
		return 0, err.Error()
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	var echoed map[string]string
	if err := json.Unmarshal(body, &echoed); err != nil {
		return resp.StatusCode, "unexpected body"
	}
	return resp.StatusCode, fmt.Sprintf("caller %s, %s %s", echoed["subject"], echoed["token_format"], echoed["token_type"])
}
