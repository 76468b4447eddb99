// Package conformance holds Caddy with this module to Clerk's own SDK,
// @clerk/backend at the version sdk/package.json pins: both are given the
// same corpus of requests (JWTs of every kind and shape, opaque credentials
// and the answers Clerk may give about them, cookies, Authorization
// headers), each configured alike, and their verdicts and the identities
// they read are compared case by case. What each asks Clerk is compared
// too. Every disagreement must be listed, with its reason, in
// DIFFERENCES.md; NOTES.md cites the SDK's code for each rule the corpus
// probes.
//
// The module runs as a user runs it: the Caddy that ./cmd/caddy builds,
// configured by a Caddyfile. The suite depends on nothing else of the
// module's.
package conformance

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
)

// reportPath, when set, is where the verdict of every case is written.
var reportPath = flag.String("report", "", "write every case's verdicts to this file")

func TestConformance(t *testing.T) {
	requireSDK(t)
	if raceEnabled {
		t.Skip("the comparison with Clerk's SDK runs once, without -race: it tests a separate Caddy process, " +
			"which the race detector does not instrument")
	}
	rows, err := readDifferences()
	if err != nil {
		t.Fatal(err)
	}
	readmeText, err := readme()
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		if err := row.validate(readmeText); err != nil {
			t.Error(err)
		}
	}

	clerk := backendtest.New()
	defer clerk.Close()
	other := backendtest.New()
	defer other.Close()
	in := &instance{clerk: clerk, gateway: clerk.NewMachine("gateway"), publishableKey: publishableKeyOf()}
	corpus := newCorpus(in, other)
	cases, mints := corpus.build(), corpus.mints()
	env := in.caddyEnv()
	for _, m := range mints {
		env = append(env, m.envKey()+"="+m.minter.SecretKey)
	}

	caddy := caddyproc.Start(t, func(p caddyproc.Ports) string {
		return caddyfile(p.Admin, p.HTTP, profilesOf(cases), mints)
	}, env...)
	sdk := runSDK(t, in, cases, mints)
	module := runModule(t, caddy.URL(), cases)
	mintWithModule(t, caddy.URL(), mints)

	var found []disagreement
	for _, tc := range cases {
		found = append(found, compareCase(tc, sdk[tc.id], module[tc.id])...)
	}
	w := sortWire(clerk.Requests())
	if !w.jwksFetched() {
		t.Error("the corpus made neither side fetch the key set: the comparison of that fetch compares nothing")
	}
	found = append(found, w.compare(cases, mints)...)
	calls := w.comparedCalls(cases)
	if calls == 0 {
		t.Error("no case made both sides ask Clerk about a credential: the comparison of those calls compares nothing")
	}

	classes := explain(t, rows, found)
	agreeing := len(cases) - countCases(found)
	t.Logf("%d cases: %d agree; the others differ as DIFFERENCES.md says: %s. Calls to Clerk compared: "+
		"%d cases' credentials, %d mints, the key set.", len(cases), agreeing, classes, calls, len(mints))
	if *reportPath != "" {
		writeReport(t, cases, sdk, module, found)
	}
}

// explain checks every disagreement against the table, and every row
// against the disagreements, and counts the cases of each class.
func explain(t *testing.T, rows []*difference, found []disagreement) string {
	t.Helper()
	used := make(map[*difference]bool)
	casesOf := make(map[string]map[string]bool)
	for _, d := range found {
		i := indexOf(rows, d)
		if i < 0 {
			t.Errorf("not in %s: %s", differencesFile, d)
			continue
		}
		used[rows[i]] = true
		if casesOf[rows[i].class] == nil {
			casesOf[rows[i].class] = make(map[string]bool)
		}
		casesOf[rows[i].class][d.caseID] = true
	}
	for _, row := range rows {
		if !used[row] {
			t.Errorf("%s:%d: no case differs this way any more: remove the row", differencesFile, row.line)
		}
	}
	var counts []string
	for class, ids := range casesOf {
		counts = append(counts, fmt.Sprintf("%d %s", len(ids), class))
	}
	sort.Strings(counts)
	return strings.Join(counts, ", ")
}

func indexOf(rows []*difference, d disagreement) int {
	for i, row := range rows {
		if row.explains(d) {
			return i
		}
	}
	return -1
}

func countCases(found []disagreement) int {
	ids := make(map[string]bool)
	for _, d := range found {
		if !strings.HasPrefix(d.caseID, "wire/") {
			ids[d.caseID] = true
		}
	}
	return len(ids)
}

// profilesOf lists the profiles the cases use, in order of first use.
func profilesOf(cases []*testCase) []*profile {
	var used []*profile
	seen := make(map[*profile]bool)
	for _, tc := range cases {
		if !seen[tc.profile] {
			seen[tc.profile] = true
			used = append(used, tc.profile)
		}
	}
	return used
}

// writeReport writes one line per case: its id, each side's verdict, and
// how they differ.
func writeReport(t *testing.T, cases []*testCase, sdk map[string]sdkResult, module map[string]moduleResult, found []disagreement) {
	t.Helper()
	differ := make(map[string][]string)
	for _, d := range found {
		differ[d.caseID] = append(differ[d.caseID], d.aspect+": SDK "+d.sdk+"; module "+d.module)
	}
	var b strings.Builder
	for _, tc := range cases {
		fmt.Fprintf(&b, "%s\tSDK %s\tmodule %s\t%s\n", tc.id, sdk[tc.id], module[tc.id], strings.Join(differ[tc.id], "; "))
	}
	if err := os.WriteFile(*reportPath, []byte(b.String()), 0o644); err != nil {
		t.Error(err)
	}
}
