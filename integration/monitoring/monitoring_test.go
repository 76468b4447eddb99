// Package monitoring_test checks the Prometheus rules and the Grafana
// dashboard of examples/monitoring (kept apart from them, so that the
// folder users copy holds only what they copy): the rules with promtool's
// unit tests and their runbooks in the README, the dashboard for what an
// import needs, and every expression of both against a real Prometheus
// scraping a real Caddy under load.
package monitoring_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

const (
	rulesFile     = "../../examples/monitoring/clerk-m2m.rules.yml"
	rulesTestFile = "../../examples/monitoring/clerk-m2m.rules.test.yml"
	dashboardFile = "../../examples/monitoring/clerk-m2m.dashboard.json"

	// scrapeJob is the job name Prometheus gives the Caddy it scrapes.
	scrapeJob = "caddy"

	// loadSize is how many requests of each kind the second round of the
	// load sends: enough for every refusal reason to pass the 0.1/s floor
	// of ClerkM2MRefusalsJump over 5 minutes (30), with room.
	loadSize = 60
)

// prometheusTool returns the path of one of the binaries of Debian's
// prometheus package. Without it the test is skipped, except in CI
// (CI=true), which installs the package and must not pass without it.
func prometheusTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	const why = " is not installed: install Debian's prometheus package (apt-get install prometheus) to run this test"
	if os.Getenv("CI") == "true" {
		t.Fatal(name + why)
	}
	t.Skip(name + why)
	return ""
}

// TestRulesPassPromtool checks the rules file and runs its unit tests.
func TestRulesPassPromtool(t *testing.T) {
	promtool := prometheusTool(t, "promtool")
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

// TestRulesAndDashboardOnARealPrometheus runs a real Prometheus with the
// rules file, scraping a real Caddy with the module through a mixed load,
// and checks every expression of the rules and of the dashboard: each
// parses and returns data, each alert the load can bring about goes
// pending or firing, and the others watch series that exist.
func TestRulesAndDashboardOnARealPrometheus(t *testing.T) {
	binary := prometheusTool(t, "prometheus")
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	dash := readDashboard(t)
	f := startFixture(t)
	target := f.caddy.URL()[len("http://"):]
	prom := startPrometheus(t, binary, rules, scrapeJob, target)
	prom.waitFor(t, "a first scrape of the module's series", `caddy_clerk_m2m_jwks_age_seconds{job="`+scrapeJob+`"}`)

	start := time.Now()
	for round := 1; round <= rounds; round++ {
		n := loadSize
		if round == 1 {
			n = 2 // enough to create the series, cache hits included
		}
		f.runLoad(round, n)
		prom.waitScrapedAfter(t, time.Now())
	}
	t.Logf("load and scrapes took %v", time.Since(start).Round(time.Millisecond))

	checks := append(prom.ruleChecks(t, rules, start), prom.dashboardChecks(dash, start, map[string]string{
		"job":             scrapeJob,
		"instance":        target,
		"__rate_interval": "10s", // Grafana's would be 4s for a 1s scrape interval; 10s spares the test a late scrape
	})...)
	prom.allPass(t, checks)
	t.Logf("%d checks passed", len(checks))
}
