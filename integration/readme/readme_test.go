// Package readme_test holds the README to what it shows: every command of
// its shell blocks works as written, every Caddyfile adapts, validates and
// is left as it is by caddy fmt, its links lead somewhere, its tables are
// short, and the Dockerfile it points at builds this module.
//
// The README's commands are for real Clerk keys and fixed ports; this test
// runs them against the fake Clerk, on ports chosen at run time, by the
// rules of the table commands, which every command of the README must be
// in: the one place that says how each is checked, or why it is not run
// here.
package readme_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	_ "github.com/caddy-clerk/clerk-m2m"
	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
	"github.com/caddy-clerk/clerk-m2m/internal/examples"
	"github.com/caddy-clerk/clerk-m2m/internal/freeport"
	"github.com/caddy-clerk/clerk-m2m/internal/readme"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
	"github.com/caddy-clerk/clerk-m2m/internal/testproc"
)

// repo is the repository's root, where the README's commands run.
const repo = "../.."

// How a command of the README is checked.
type check int

const (
	// run: run as written, in the repository, by bash, in the sandbox's
	// environment (see sandbox); it must exit 0.
	run check = iota
	// serve: started as written (a program built once, for go run), on
	// ports of the sandbox's, and checked as it answers; left running
	// until the test ends.
	serve
	// setting: an export of a value the README writes as a placeholder
	// (…): the sandbox sets that variable to the fake Clerk's value.
	setting
	// inCI: too slow for go test, or it fetches from a registry: .ci/run
	// runs it as written (a line of it starts with the command).
	inCI
	// goTest: a go test command, which go test ./... runs.
	goTest
	// needsRuntime: run where a container runtime answers; skipped, and
	// said so, elsewhere.
	needsRuntime
	// notRun: not run here, for the reason given.
	notRun
)

// commands are the commands of the README's shell blocks (a trailing
// comment left out), and how each is checked.
var commands = map[string]struct {
	check check
	why   string // of notRun
}{
	"xcaddy build --with github.com/caddy-clerk/clerk-m2m": {notRun, "xcaddy fetches the module from the Go module proxy, " +
		"which serves it once it is released; from a checkout, the README's next commands build the same, and CI runs them"},
	"xcaddy build --with github.com/caddy-clerk/clerk-m2m --with github.com/pberkel/caddy-storage-redis@v1.8.1 --with github.com/mholt/caddy-ratelimit@v0.1.0": {notRun,
		"xcaddy fetches this module from the Go module proxy, as above; the Redis suite (integration/redis) builds Caddy " +
			"with the modules at the versions this line names, checks that it does, and runs the Caddyfiles built with it"},
	"go build ./cmd/caddy":                                              {check: run},
	"./caddy list-modules | grep clerk_m2m":                             {check: run},
	"(cd tools && go install github.com/caddyserver/xcaddy/cmd/xcaddy)": {check: inCI},
	`GOPROXY="$(go env GOPROXY | cut -d, -f1)|file://$(mktemp -d)" xcaddy build --with github.com/caddy-clerk/clerk-m2m=.`: {check: inCI},
	"docker build -t caddy-clerk-m2m .":      {check: needsRuntime},
	"go run ./examples/quickstart":           {check: serve},
	"go run ./examples/quickstart -check":    {check: run},
	"export CLERK_MACHINE_SECRET_KEY=ak_…":   {check: setting},
	"export CLERK_SECRET_KEY=sk_live_…":      {check: setting},
	"export CLERK_PUBLISHABLE_KEY=pk_live_…": {check: setting},
	"caddy run --config Caddyfile":           {check: serve},
	`printf '%s' "$TOKEN" | caddy clerk-m2m inspect --require-scopes mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk`: {check: run},
	`curl -H "Authorization: Bearer $(caddy clerk-m2m mint)" https://api.example.com/invoices`:        {check: run},
	"npm ci --prefix conformance/sdk":      {check: inCI},
	"go test ./conformance/":               {check: goTest},
	"npm ci --prefix integration/mcp/node": {check: inCI},
	"go test ./integration/mcp/":           {check: goTest},
}

// The README's stand-ins, and what they stand for in the sandbox.
const (
	exampleMachineID = "mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk" // this service's machine: the gateway's
	exampleSite      = "https://api.example.com"         // the gateway a command calls: the one served
	exampleUpstream  = "localhost:9000"                  // the service behind: an echo of what it gets
)

// trailingComment is a command's comment, left out of its key.
var trailingComment = regexp.MustCompile(`\s{2,}#.*$`)

// commandLines are the commands of the README's shell blocks, by block,
// without their trailing comments.
func commandLines(t *testing.T, blocks []readme.Block) [][]string {
	t.Helper()
	var lines [][]string
	for _, block := range blocks {
		if block.Lang != "sh" {
			continue
		}
		var commands []string
		for _, line := range strings.Split(strings.TrimSpace(block.Text), "\n") {
			commands = append(commands, strings.TrimSpace(trailingComment.ReplaceAllString(line, "")))
		}
		lines = append(lines, commands)
	}
	return lines
}

// TestEveryCommandHasACheck: the table of checks is the README's commands,
// no more, no less.
func TestEveryCommandHasACheck(t *testing.T) {
	blocks, err := readme.Read(filepath.Join(repo, "README.md"))
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, block := range commandLines(t, blocks) {
		for _, line := range block {
			_, known := commands[line]
			assert.True(t, known, "the README's command %q has no check in this test's table", line)
			seen[line] = true
		}
	}
	for line := range commands {
		assert.True(t, seen[line], "the table checks %q, which the README no longer shows", line)
	}
}

// TestCommandsWorkAsShown runs the README's commands, in the README's
// order, by their checks.
func TestCommandsWorkAsShown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy and the quickstart")
	}
	blocks, err := readme.Read(filepath.Join(repo, "README.md"))
	require.NoError(t, err)
	s := newSandbox(t)
	var lastCaddyfile string
	for i, block := range blocks {
		switch block.Lang {
		case "caddyfile":
			if !block.IsSyntax() {
				lastCaddyfile = block.Text
			}
			continue
		case "sh":
		default:
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(block.Text), "\n") {
			line = strings.TrimSpace(trailingComment.ReplaceAllString(line, ""))
			t.Run(line, func(t *testing.T) {
				switch commands[line].check {
				case run:
					out := s.run(t, line)
					s.expectOutput(t, line, out, blocks[i+1:])
				case serve:
					s.serve(t, line, lastCaddyfile)
				case setting:
					s.checkSetting(t, line)
				case inCI:
					assert.True(t, ciRuns(t, line), ".ci/run runs %q", line)
				case goTest:
					pkg := strings.TrimSuffix(strings.TrimPrefix(line, "go test "), "...")
					assert.DirExists(t, filepath.Join(repo, pkg), "go test ./... runs %s", pkg)
				case needsRuntime:
					if exec.Command("docker", "info").Run() != nil {
						t.Skipf("no container runtime answers `docker info`: %q is checked by TestDockerfile", line)
					}
					s.run(t, line)
				case notRun:
					t.Logf("not run: %s", commands[line].why)
				}
			})
		}
	}
}

// ciRuns reports whether a line of .ci/run starts with line.
func ciRuns(t *testing.T, line string) bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repo, ".ci", "run"))
	require.NoError(t, err)
	return slices.ContainsFunc(strings.Split(string(data), "\n"), func(ci string) bool {
		return strings.HasPrefix(strings.TrimSpace(ci), line)
	})
}

// sandbox is where the README's commands run: the fake Clerk, with the
// machine the README's gateway stands for and one allowed to call it, a
// folder for what they write, and the environment they read.
type sandbox struct {
	t               *testing.T // what it serves lives as long as this test
	clerk           *backendtest.Server
	gateway, caller *backendtest.Machine
	token           string // the caller's, granted to the gateway: $TOKEN
	dir             string // on PATH: the caddy the README builds, the programs go run builds
	upstream        string // host:port of the echo service behind the gateway
	gatewayURL      string // of the gateway served, once it is
	built           map[string]string
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	t.Cleanup(clerk.Close)
	s := &sandbox{t: t, clerk: clerk, gateway: clerk.NewMachine("gateway"), caller: clerk.NewMachine("caller"),
		dir: t.TempDir(), built: map[string]string{}}
	clerk.GrantScopes(s.caller, s.gateway.ID)
	s.token, _ = clerk.CreateM2MToken(s.caller, backendtest.TokenOptions{Scopes: []string{s.gateway.ID}, TTL: time.Hour})
	upstream := httptest.NewServer(http.HandlerFunc(echoIdentity)) // on loopback
	t.Cleanup(upstream.Close)
	s.upstream = strings.TrimPrefix(upstream.URL, "http://")
	return s
}

// settings are what the sandbox sets for a command: the fake Clerk's keys
// (the gateway's machine's, or the caller's for mint, which mints as the
// calling machine), $TOKEN, and the sandbox's folder first on PATH.
func (s *sandbox) settings(line string) []string {
	machine := s.gateway
	if strings.Contains(line, "clerk-m2m mint") {
		machine = s.caller
	}
	return []string{"PATH=" + s.dir + string(os.PathListSeparator) + os.Getenv("PATH"), "TOKEN=" + s.token,
		"CLERK_API_URL=" + s.clerk.URL, "CLERK_SECRET_KEY=" + s.clerk.SecretKey(), "CLERK_MACHINE_SECRET_KEY=" + machine.SecretKey,
		"CLERK_PUBLISHABLE_KEY=" + backendtest.PublishableKey(false)}
}

// env is the environment of a command: this process's, and the sandbox's
// settings.
func (s *sandbox) env(line string) []string { return append(os.Environ(), s.settings(line)...) }

// adapted is line with the README's stand-ins replaced by the sandbox's,
// and what it writes in the repository (./caddy) written in the sandbox's
// folder.
func (s *sandbox) adapted(line string) string {
	return strings.NewReplacer(
		exampleMachineID, s.gateway.ID,
		exampleSite, s.gatewayURL,
		"go build ./cmd/caddy", "go build -o "+filepath.Join(s.dir, "caddy")+" ./cmd/caddy",
		"./caddy ", filepath.Join(s.dir, "caddy")+" ",
	).Replace(line)
}

// run runs line by bash in the repository, and returns its output; it
// must exit 0.
func (s *sandbox) run(t *testing.T, line string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "bash", "-o", "pipefail", "-c", s.adapted(line))
	cmd.Dir, cmd.Env = repo, s.env(line)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s\n%s", s.adapted(line), out)
	return string(out)
}

// expectOutput checks a command's output against what the README shows
// for it: the text block right after its shell block, when it names
// every line it prints; and, for a call through the gateway, the caller
// the service behind it saw.
func (s *sandbox) expectOutput(t *testing.T, line, out string, after []readme.Block) {
	t.Helper()
	switch {
	case strings.HasPrefix(line, "./caddy list-modules"):
		require.NotEmpty(t, after)
		require.Equal(t, "text", after[0].Lang, "the README shows what it prints")
		assert.Equal(t, after[0].Text, out)
	case strings.Contains(line, exampleSite):
		assert.Contains(t, out, `"X-Clerk-Machine-Id":"`+s.caller.ID+`"`, "the service learns the calling machine")
	}
}

// checkSetting checks an export the README shows with a placeholder: the
// sandbox sets that variable.
func (s *sandbox) checkSetting(t *testing.T, line string) {
	t.Helper()
	name, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
	require.True(t, ok && strings.Contains(value, "…"), "an export of a placeholder: %s", line)
	assert.True(t, slices.ContainsFunc(s.settings(line), func(kv string) bool { return strings.HasPrefix(kv, name+"=") }),
		"the sandbox sets %s", name)
}

// serve starts a command that serves, and checks it answers: the
// quickstart, on ports of the sandbox's; caddy run, with the Caddyfile the
// README shows before it, its site on a port of the sandbox's and its
// upstream the sandbox's service.
func (s *sandbox) serve(t *testing.T, line, caddyfileText string) {
	t.Helper()
	switch line {
	case "go run ./examples/quickstart":
		var gateway string
		p, err := freeport.Retry(2, func(ports []int) (*testproc.Process, error) {
			gateway = freeport.Addr(ports[0])
			cmd := exec.Command(s.goBuilt(t, "./examples/quickstart"), "-addr", gateway, "-try-port", strconv.Itoa(ports[1]))
			cmd.Dir, cmd.Env = repo, s.env(line)
			return testproc.Start("quickstart", cmd, func() bool { return unauthorized("http://" + gateway + "/invoices") }, 2*time.Minute)
		})
		require.NoError(t, err)
		defer p.Stop()
		// It prints what to try once its gateway answers.
		require.Eventually(t, func() bool { return strings.Contains(p.Output(), "Press Ctrl+C to stop.") }, time.Minute,
			10*time.Millisecond, "what to try, printed: %s", p.Output())
		assert.Contains(t, p.Output(), "curl -i http://"+gateway+"/invoices -H 'Authorization: Bearer ")
	case "caddy run --config Caddyfile":
		site := strings.Fields(caddyfileText)[0]
		require.Equal(t, strings.TrimPrefix(exampleSite, "https://"), site, "the Caddyfile before it is the gateway's")
		p := caddyproc.Start(s.t, func(ports caddyproc.Ports) string {
			return "{\n\tadmin " + freeport.Addr(ports.Admin) + "\n}\n\n" + strings.NewReplacer(
				site+" {", "http://"+freeport.Addr(ports.HTTP)+" {",
				exampleMachineID, s.gateway.ID,
				exampleUpstream, s.upstream,
			).Replace(caddyfileText)
		}, s.settings(line)...)
		s.gatewayURL = p.URL()
		assert.True(t, unauthorized(s.gatewayURL+"/invoices"), "no token: 401")
	default:
		t.Fatalf("no way to serve %q", line)
	}
}

// goBuilt builds a main package of the repository once, and returns the
// program.
func (s *sandbox) goBuilt(t *testing.T, pkg string) string {
	t.Helper()
	if program, ok := s.built[pkg]; ok {
		return program
	}
	program := filepath.Join(s.dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", program, pkg)
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	s.built[pkg] = program
	return program
}

// echoIdentity is the service behind the README's gateway: it answers
// with the X-Clerk-* headers it got.
func echoIdentity(w http.ResponseWriter, r *http.Request) {
	seen := map[string]string{}
	for name, values := range r.Header {
		if strings.HasPrefix(name, "X-Clerk-") {
			seen[name] = values[0]
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(seen)
}

// unauthorized reports whether a GET of url, with no credential, gets 401.
func unauthorized(url string) bool {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusUnauthorized
}

// TestCaddyfilesAdaptAndValidate: every Caddyfile of the README (a block
// of directives alone in a site of its own) but those whose xcaddy line
// builds in more modules (the Redis suite's) is left as it is by caddy
// fmt, adapts without a warning, and loads as caddy validate loads it,
// with the keys it reads from the environment set; every JSON
// configuration of a handler loads the same way.
func TestCaddyfilesAdaptAndValidate(t *testing.T) {
	blocks, err := readme.Read(filepath.Join(repo, "README.md"))
	require.NoError(t, err)
	s := newSandbox(t)
	for _, kv := range s.settings("") {
		name, value, _ := strings.Cut(kv, "=")
		t.Setenv(name, value)
	}
	t.Setenv("A_MACHINE_SECRET_KEY", s.caller.SecretKey) // the sidecar's example
	secrets := t.TempDir()                               // /run/secrets/, as the JSON example reads it
	require.NoError(t, os.WriteFile(filepath.Join(secrets, "clerk_secret_key"), []byte(s.clerk.SecretKey()), 0o600))
	checked := 0
	for _, block := range blocks {
		text, ok := block.Caddyfile()
		if block.Lang == "json" && strings.Contains(block.Text, `"handler"`) {
			text, ok = handlerConfig(t, strings.ReplaceAll(block.Text, "/run/secrets/", secrets+"/")), true
		}
		if !ok || len(examples.ExtraModules([]byte(block.Text))) > 0 {
			continue // a block built with more modules: the Redis suite checks it
		}
		checked++
		t.Run(fmt.Sprintf("line %d", block.Line), func(t *testing.T) {
			config := []byte(text)
			if block.Lang == "caddyfile" {
				config = examples.Adapt(t, block.Text, text, "")
			}
			examples.Validate(t, config)
		})
	}
	assert.GreaterOrEqual(t, checked, 8, "the README's configurations were found")
}

// handlerConfig is a configuration with the handler of a JSON block in
// the one route of a server on loopback.
func handlerConfig(t *testing.T, handler string) string {
	t.Helper()
	var decoded map[string]any
	require.NoError(t, json.Unmarshal([]byte(handler), &decoded))
	config, err := json.Marshal(map[string]any{"apps": map[string]any{"http": map[string]any{"servers": map[string]any{
		"readme": map[string]any{"listen": []string{"127.0.0.1:0"}, "routes": []any{map[string]any{"handle": []any{decoded}}}},
	}}}})
	require.NoError(t, err)
	return string(config)
}

// markdownLink is a Markdown link, and where it leads: a path, an anchor.
var markdownLink = regexp.MustCompile(`\]\(([^)#\s]*)(?:#([^)\s]+))?\)`)

// TestLinksLead: every relative link of the README and of the documents
// it links to leads to a file of the repository, and every anchor to a
// heading of its document.
func TestLinksLead(t *testing.T) {
	for _, doc := range []string{"README.md", "CONTRIBUTING.md", "docs/verification.md", "examples/monitoring/README.md",
		"conformance/DIFFERENCES.md", "SECURITY.md"} {
		text, err := os.ReadFile(filepath.Join(repo, doc))
		require.NoError(t, err)
		for _, link := range markdownLink.FindAllStringSubmatch(string(text), -1) {
			target, anchor := link[1], link[2]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path := doc
			if target != "" {
				path = filepath.Join(filepath.Dir(doc), target)
				if _, err := os.Stat(filepath.Join(repo, path)); err != nil {
					t.Errorf("%s links to %s, which is not there", doc, target)
					continue
				}
			}
			if anchor != "" && strings.HasSuffix(path, ".md") && !slices.Contains(anchors(t, path), anchor) {
				t.Errorf("%s links to %s#%s, a heading that is not there", doc, target, anchor)
			}
		}
	}
}

// anchors are the anchors of the headings of a Markdown file of the
// repository.
func anchors(t *testing.T, path string) []string {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(repo, path))
	require.NoError(t, err)
	return readme.Anchors(string(text))
}

// TestTablesAreShort: no cell of the README's tables holds more than two
// sentences; what needs more is said in prose.
func TestTablesAreShort(t *testing.T) {
	text, err := os.ReadFile(filepath.Join(repo, "README.md"))
	require.NoError(t, err)
	sentenceEnd := regexp.MustCompile(`[.!?](\s|$)`)
	for i, line := range strings.Split(string(text), "\n") {
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|-") {
			continue
		}
		for _, cell := range strings.Split(strings.Trim(line, "|"), "|") {
			if n := len(sentenceEnd.FindAllString(strings.TrimSpace(cell), -1)); n > 2 {
				t.Errorf("README.md:%d: a cell of %d sentences: %s", i+1, n, strings.TrimSpace(cell))
			}
		}
	}
}

// TestDockerfile: the Dockerfile builds on Caddy's official images, of
// the Caddy this module is built with, and each of its --with lines names
// this module, replaced by the checkout it copies in.
func TestDockerfile(t *testing.T) {
	dockerfile, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	require.NoError(t, err)
	goMod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	require.NoError(t, err)
	module := regexp.MustCompile(`(?m)^module (\S+)$`).FindSubmatch(goMod)
	caddyVersion := regexp.MustCompile(`(?m)^\s+github\.com/caddyserver/caddy/v2 v(\d+\.\d+)\.`).FindSubmatch(goMod)
	require.NotNil(t, module)
	require.NotNil(t, caddyVersion)

	text := string(dockerfile)
	assert.Regexp(t, `(?m)^ARG CADDY_VERSION=`+regexp.QuoteMeta(string(caddyVersion[1]))+`$`, text, "the Caddy of go.mod")
	assert.Regexp(t, `(?m)^FROM caddy:\$\{CADDY_VERSION\}-builder AS builder$`, text)
	assert.Regexp(t, `(?m)^FROM caddy:\$\{CADDY_VERSION\}$`, text)
	copied := regexp.MustCompile(`(?m)^COPY \. (\S+)$`).FindStringSubmatch(text)
	require.NotNil(t, copied, "the checkout is copied in")
	with := regexp.MustCompile(`--with (\S+)`).FindAllStringSubmatch(text, -1)
	require.NotEmpty(t, with)
	for _, w := range with {
		assert.Equal(t, string(module[1])+"="+copied[1], w[1], "the module, built from the checkout")
	}
	assert.Contains(t, text, "COPY --from=builder /usr/bin/caddy /usr/bin/caddy")
}
