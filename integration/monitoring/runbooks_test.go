package monitoring_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/caddy-clerk/clerk-m2m/internal/readme"
)

// runbooks is where the alerts' runbooks are: the module's README, by its
// address on GitHub.
const (
	runbooks   = "https://github.com/caddy-clerk/clerk-m2m#"
	readmeFile = "../../README.md"
)

var (
	alertRule  = regexp.MustCompile(`(?m)^\s*- alert: (\w+)$`)
	runbookURL = regexp.MustCompile(`(?m)^\s*runbook_url: (\S+)$`)
)

// TestEveryAlertHasARunbook: every alert of the rules has a runbook_url,
// the README's section named after the alert, which exists.
func TestEveryAlertHasARunbook(t *testing.T) {
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	readmeText, err := os.ReadFile(readmeFile)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, anchor := range readme.Anchors(string(readmeText)) {
		anchors[anchor] = true
	}
	alerts := alertRule.FindAllStringSubmatchIndex(string(rules), -1)
	if len(alerts) == 0 {
		t.Fatal("no alerts")
	}
	for i, alert := range alerts {
		name := string(rules[alert[2]:alert[3]])
		end := len(rules)
		if i+1 < len(alerts) {
			end = alerts[i+1][0]
		}
		urls := runbookURL.FindAllStringSubmatch(string(rules[alert[1]:end]), -1)
		if len(urls) != 1 {
			t.Errorf("%s: %d runbook_url, want one", name, len(urls))
			continue
		}
		anchor, ok := strings.CutPrefix(urls[0][1], runbooks)
		switch {
		case !ok:
			t.Errorf("%s: runbook_url %s is not a section of %s", name, urls[0][1], runbooks)
		case anchor != strings.ToLower(name):
			t.Errorf("%s: runbook_url %s is not the section named after the alert", name, urls[0][1])
		case !anchors[anchor]:
			t.Errorf("%s: the README has no section #%s", name, anchor)
		}
	}
}
