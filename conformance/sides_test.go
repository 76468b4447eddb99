package conformance

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// sdkDir holds the pinned SDK (package.json, package-lock.json) and the
// program that drives it.
const sdkDir = "sdk"

// pinnedSDK is the version of @clerk/backend that package.json pins.
func pinnedSDK(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(sdkDir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal(data, &pkg); err != nil {
		t.Fatalf("sdk/package.json: %v", err)
	}
	return pkg.Dependencies["@clerk/backend"]
}

// requireSDK skips the test when Node or the installed SDK is missing, with
// what to do about it, and fails instead under CI=true, where .ci/run
// installs them: the suite must never be skipped there unnoticed. Tests
// never install anything themselves (that would reach the network).
func requireSDK(t *testing.T) {
	t.Helper()
	problem := ""
	if _, err := exec.LookPath("node"); err != nil {
		problem = "node is not installed (Node 20 or later runs Clerk's SDK)"
	} else if _, err := os.Stat(filepath.Join(sdkDir, "node_modules", "@clerk", "backend", "package.json")); err != nil {
		problem = "Clerk's SDK is not installed: run `npm ci --prefix conformance/sdk` (bash .ci/run does)"
	}
	if problem == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("the conformance suite cannot run: %s", problem)
	}
	t.Skipf("skipping the comparison with Clerk's SDK: %s", problem)
}

// sdkResult is Clerk's SDK's verdict on a case.
type sdkResult struct {
	ID       string         `json:"id"`
	Accepted bool           `json:"accepted"`
	Status   string         `json:"status"` // signed-in, signed-out, handshake, or threw
	Reason   string         `json:"reason"`
	Message  string         `json:"message"`
	Identity map[string]any `json:"identity"`
}

func (r sdkResult) String() string {
	if r.Accepted {
		return "accepts"
	}
	return strings.TrimSpace("refuses (" + r.Status + " " + r.Reason + ")")
}

// runSDK has Clerk's SDK authenticate every case, one after the other, and
// mint every token.
func runSDK(t *testing.T, in *instance, cases []*testCase, mints []*mintCase) map[string]sdkResult {
	t.Helper()
	type sdkCase struct {
		ID      string         `json:"id"`
		Keys    map[string]any `json:"keys"`
		Options map[string]any `json:"options"`
		Headers [][2]string    `json:"headers"`
	}
	type sdkMint struct {
		ID     string         `json:"id"`
		Params map[string]any `json:"params"`
	}
	input := struct {
		APIURL string    `json:"apiUrl"`
		Cases  []sdkCase `json:"cases"`
		Mints  []sdkMint `json:"mints"`
	}{APIURL: in.clerk.URL}
	for _, tc := range cases {
		input.Cases = append(input.Cases, sdkCase{tc.id, in.sdkKeys(tc.profile), sdkOptions(tc.profile), tc.headers})
	}
	for _, m := range mints {
		input.Mints = append(input.Mints, sdkMint{m.id, m.sdkParams()})
	}
	data, err := json.Marshal(input)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "run.cjs")
	cmd.Dir = sdkDir
	cmd.Env = append(os.Environ(), "CLERK_TELEMETRY_DISABLED=1")
	cmd.Stdin = bytes.NewReader(data)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("running Clerk's SDK: %v\n%s", err, stderr.String())
	}
	var output struct {
		SDKVersion string      `json:"sdkVersion"`
		Results    []sdkResult `json:"results"`
		Mints      []struct {
			ID      string `json:"id"`
			OK      bool   `json:"ok"`
			Message string `json:"message"`
		} `json:"mints"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &output); err != nil {
		t.Fatalf("reading the SDK's results: %v\n%s", err, stderr.String())
	}
	if pinned := pinnedSDK(t); output.SDKVersion != pinned {
		t.Fatalf("the installed @clerk/backend is %s, package.json pins %s: run `npm ci --prefix conformance/sdk`", output.SDKVersion, pinned)
	}
	for _, m := range output.Mints {
		if !m.OK {
			t.Errorf("mint/%s: the SDK could not mint: %s", m.ID, m.Message)
		}
	}
	results := make(map[string]sdkResult, len(output.Results))
	for _, r := range output.Results {
		if r.Status == "handshake" {
			t.Fatalf("%s: the SDK answered with a handshake, not a verdict: the case's request is not one a server answers alone", r.ID)
		}
		results[r.ID] = r
	}
	return results
}

// moduleResult is the module's verdict on a case: Caddy's answer.
type moduleResult struct {
	status    int
	challenge string         // WWW-Authenticate of a refusal
	identity  map[string]any // of an accepted request
}

func (r moduleResult) accepted() bool { return r.status == http.StatusOK }

func (r moduleResult) String() string {
	if r.accepted() {
		return "accepts"
	}
	return strings.TrimSpace(http.StatusText(r.status) + " " + r.challenge)
}

// runModule sends every case to Caddy, a few at a time; those Clerk
// answers 429 after all the others, since the module then makes no call
// to Clerk until the 429's Retry-After has passed.
func runModule(t *testing.T, baseURL string, cases []*testCase) map[string]moduleResult {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	results := make(map[string]moduleResult, len(cases))
	var failures []error
	run := func(cases []*testCase) {
		work := make(chan *testCase)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for tc := range work {
					r, err := askModule(client, baseURL, tc)
					mu.Lock()
					results[tc.id] = r
					if err != nil {
						failures = append(failures, err)
					}
					mu.Unlock()
				}
			})
		}
		for _, tc := range cases {
			work <- tc
		}
		close(work)
		wg.Wait()
	}
	pausing := func(tc *testCase) bool { return tc.pausesClerk }
	run(slices.DeleteFunc(slices.Clone(cases), pausing))
	run(slices.DeleteFunc(slices.Clone(cases), func(tc *testCase) bool { return !pausing(tc) }))
	if err := errors.Join(failures...); err != nil {
		t.Fatal(err)
	}
	return results
}

// mintWithModule has Caddy mint every token, through a route of
// clerk_m2m_token.
func mintWithModule(t *testing.T, baseURL string, mints []*mintCase) {
	t.Helper()
	for _, m := range mints {
		resp, err := http.Get(baseURL + "/mint/" + m.id)
		if err != nil {
			t.Fatalf("mint/%s: %v", m.id, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("mint/%s: the module could not mint: %s", m.id, resp.Status)
		}
	}
}

func askModule(client *http.Client, baseURL string, tc *testCase) (moduleResult, error) {
	req, err := http.NewRequest(http.MethodGet, baseURL+"/"+tc.profile.name, nil)
	if err != nil {
		return moduleResult{}, err
	}
	for _, h := range tc.headers {
		req.Header.Add(h[0], h[1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return moduleResult{}, errors.New(tc.id + ": " + err.Error())
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return moduleResult{}, errors.New(tc.id + ": " + err.Error())
	}
	r := moduleResult{status: resp.StatusCode, challenge: resp.Header.Get("WWW-Authenticate")}
	if r.accepted() {
		if err := json.Unmarshal(body, &r.identity); err != nil {
			return r, errors.New(tc.id + ": the identity Caddy answered is not JSON: " + string(body))
		}
	}
	return r, nil
}
