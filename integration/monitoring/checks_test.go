package monitoring_test

import (
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkTimeout bounds how long the checks may take to pass once Prometheus
// has scraped the load: a rule evaluation or two, on a busy machine.
const checkTimeout = 30 * time.Second

// notBroughtAboutByTheLoad are the alerts that a test of a minute cannot
// make fire, and why. Each must compare a series selector with a number:
// the test checks that the selector returns data, and the rules' unit tests
// (clerk-m2m.rules.test.yml) check the threshold. Every other alert must go
// pending or firing under the load.
var notBroughtAboutByTheLoad = map[string]string{
	"ClerkM2MSigningKeysStale":    "the keys would have to be 15 minutes old",
	"ClerkM2MSigningKeysExpiring": "the keys would have to be 45 minutes old",
}

// firesFor lists, for the alerts that fire once per value of a label, the
// values the load must make them fire for.
var firesFor = map[string]map[string][]string{
	"ClerkM2MRefusalsJump": {"outcome": {"token_missing", "token_invalid", "token_expired", "token_type_not_accepted", "insufficient_scope"}},
}

// thresholdCondition is an alert expression that compares a series
// selector with a number; the first group is the selector.
var thresholdCondition = regexp.MustCompile(`^\s*([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^{}]*\})?)\s*(?:>|<|>=|<=|==|!=)\s*[0-9.eE+-]+\s*$`)

// ruleInFile matches each rule of a rules file, alert or record.
var ruleInFile = regexp.MustCompile(`(?m)^\s*-\s*(?:alert|record):`)

// check is one thing asked of Prometheus: run returns nil when it holds.
type check struct {
	name string
	run  func() error
}

// failed is a check that cannot pass.
func failed(name string, err error) check { return check{name, func() error { return err }} }

// allPass runs the checks until every one has passed once, failing the
// test with those that still do not after checkTimeout.
func (p *prometheusServer) allPass(t *testing.T, checks []check) {
	t.Helper()
	pending := checks
	until(t, "every check to pass", checkTimeout, func() error {
		var errs []error
		pending = slices.DeleteFunc(pending, func(c check) bool {
			err := c.run()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
			}
			return err == nil
		})
		return errors.Join(errs...)
	})
}

// ruleChecks are the checks of every rule Prometheus loaded from
// rulesPath: the file was loaded whole and evaluates without error, every
// recording rule and every alert's condition returns data, every alert the
// load can bring about went pending or firing.
func (p *prometheusServer) ruleChecks(t *testing.T, rulesPath string, start time.Time) []check {
	t.Helper()
	text, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := p.rules()
	if err != nil {
		t.Fatal(err)
	}
	checks := []check{{"the rules file is loaded whole and evaluates", func() error {
		return p.rulesHealthy(len(ruleInFile.FindAll(text, -1)))
	}}}
	alerts := map[string]bool{}
	for _, r := range loaded {
		switch r.Type {
		case "recording":
			checks = append(checks, p.hasData("record "+r.Name+", its expression", r.Query, start),
				p.hasData("record "+r.Name+", the recorded series", r.Name, start))
		case "alerting":
			alerts[r.Name] = true
			checks = append(checks, p.alertChecks(r, start)...)
		default:
			checks = append(checks, failed(r.Name, fmt.Errorf("a rule of unknown type %q", r.Type)))
		}
	}
	for name := range notBroughtAboutByTheLoad {
		if !alerts[name] {
			t.Errorf("notBroughtAboutByTheLoad names %s, which the rules file does not have", name)
		}
	}
	for name := range firesFor {
		if !alerts[name] {
			t.Errorf("firesFor names %s, which the rules file does not have", name)
		}
	}
	return checks
}

// rulesHealthy checks that Prometheus holds as many rules as the file has
// (at least one), each evaluated without error.
func (p *prometheusServer) rulesHealthy(inFile int) error {
	rules, err := p.rules()
	switch {
	case err != nil:
		return err
	case inFile == 0 || len(rules) != inFile:
		return fmt.Errorf("prometheus loaded %d rules, the file has %d", len(rules), inFile)
	}
	for _, r := range rules {
		if r.Health != "ok" {
			return fmt.Errorf("%s: health %q %s", r.Name, r.Health, r.LastError)
		}
	}
	return nil
}

func (p *prometheusServer) alertChecks(r loadedRule, start time.Time) []check {
	name := "alert " + r.Name
	why, notByLoad := notBroughtAboutByTheLoad[r.Name]
	if !notByLoad {
		return []check{p.hasData(name+", its condition met by the load", r.Query, start), p.fired(r.Name, start)}
	}
	operand := thresholdCondition.FindStringSubmatch(r.Query)
	if operand == nil {
		return []check{failed(name, fmt.Errorf("the load cannot make it fire (%s), so it must compare a series selector with a number; it is %q", why, r.Query))}
	}
	evaluates := check{name + ", its expression", func() error { _, err := p.overRange(r.Query, start); return err }}
	return []check{evaluates, p.hasData(name+", its operand", operand[1], start)}
}

// fired checks that the alert went pending or firing during the load, for
// each of the label values firesFor lists.
func (p *prometheusServer) fired(alert string, start time.Time) check {
	return check{"alert " + alert + " went pending or firing", func() error {
		result, err := p.overRange(`ALERTS{alertname="`+alert+`"}`, start)
		if err != nil {
			return err
		}
		if len(result) == 0 {
			return errors.New("it did not")
		}
		for label, values := range firesFor[alert] {
			for _, value := range values {
				if !slices.ContainsFunc(result, func(s series) bool { return s.Metric[label] == value }) {
					return fmt.Errorf("not for %s=%q", label, value)
				}
			}
		}
		return nil
	}}
}

// hasData checks that query, evaluated every second since start, returns
// at least one value that is neither zero nor NaN nor infinite: it parses,
// names series that exist, and sees the load.
func (p *prometheusServer) hasData(name, query string, start time.Time) check {
	return check{name, func() error {
		result, err := p.overRange(query, start)
		if err != nil {
			return err
		}
		for _, s := range result {
			for _, v := range s.Values {
				if v.value != 0 && !math.IsNaN(v.value) && !math.IsInf(v.value, 0) {
					return nil
				}
			}
		}
		if len(result) == 0 {
			return fmt.Errorf("no series: %s", query)
		}
		return fmt.Errorf("%d series, none with a value other than 0, NaN or ±Inf: %s", len(result), query)
	}}
}

// waitFor waits until query returns something.
func (p *prometheusServer) waitFor(t *testing.T, what, query string) {
	t.Helper()
	until(t, what, prometheusReadyTimeout, func() error {
		result, err := p.instant(query)
		if err == nil && len(result) == 0 {
			err = fmt.Errorf("no series for %s", query)
		}
		return err
	})
}

// waitScrapedAfter waits until Prometheus has scraped Caddy after moment:
// that scrape holds every count made before it.
func (p *prometheusServer) waitScrapedAfter(t *testing.T, moment time.Time) {
	t.Helper()
	// timestamp() of a plain selector is the time of the sample, the
	// start of the scrape (of any other expression, the time it is
	// evaluated at).
	query := `timestamp(up{job="` + scrapeJob + `"})`
	until(t, "a scrape after "+moment.Format(time.StampMilli), prometheusReadyTimeout, func() error {
		result, err := p.instant(query)
		switch {
		case err != nil:
			return err
		case len(result) != 1:
			return fmt.Errorf("%d series for %s", len(result), query)
		case result[0].Value.value*1000 <= float64(moment.UnixMilli()):
			return errors.New("the last scrape is older")
		}
		return nil
	})
}

// until polls cond until it returns nil, failing the test with its last
// error after timeout.
func until(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s:\n%s", timeout, what, strings.ReplaceAll(err.Error(), "\n", "\n\t"))
		}
		<-tick.C
	}
}
