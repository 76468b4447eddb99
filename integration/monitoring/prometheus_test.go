package monitoring_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/caddy-clerk/clerk-m2m/internal/freeport"
	"github.com/caddy-clerk/clerk-m2m/internal/testproc"
)

// prometheusReadyTimeout bounds how long a started Prometheus may take to
// say it is ready.
const prometheusReadyTimeout = 60 * time.Second

// prometheusConfig scrapes one target every second and evaluates the rules
// every second, so that a load of a few seconds shows in rates and alerts.
const prometheusConfig = `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: %s
    static_configs:
      - targets: [%q]
`

// prometheusServer is a running Prometheus.
type prometheusServer struct {
	url    string
	client *http.Client
	proc   *testproc.Process
}

// startPrometheus runs the prometheus binary with rulesFile, scraping
// target (host:port, path /metrics) as job, and waits until it is ready.
// The process is stopped when the test ends; its output is in the test log
// if the test failed.
func startPrometheus(t *testing.T, binary, rulesFile, job, target string) *prometheusServer {
	t.Helper()
	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, fmt.Appendf(nil, prometheusConfig, rulesFile, job, target), 0o600); err != nil {
		t.Fatal(err)
	}
	attempt := 0
	p, err := freeport.Retry(1, func(ports []int) (*prometheusServer, error) {
		attempt++
		listen := freeport.Addr(ports[0])
		cmd := exec.Command(binary, "--config.file="+config, "--web.listen-address="+listen,
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data-%d", attempt)), "--log.level=warn")
		p := &prometheusServer{url: "http://" + listen, client: &http.Client{Timeout: 10 * time.Second}}
		var err error
		p.proc, err = testproc.Start("prometheus", cmd, testproc.Answers(p.url+"/-/ready"), prometheusReadyTimeout)
		return p, err
	})
	if err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	t.Cleanup(func() {
		p.proc.Stop()
		if t.Failed() {
			t.Logf("prometheus output:\n%s", p.proc.Output())
		}
	})
	return p
}

// apiResponse is the envelope of every answer of Prometheus's HTTP API.
type apiResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

// api calls GET /api/v1/<endpoint> and decodes its data into out; an
// answer with status "error" (a query that does not parse, say) is an
// error that quotes Prometheus.
func (p *prometheusServer) api(endpoint string, params url.Values, out any) error {
	resp, err := p.client.Get(p.url + "/api/v1/" + endpoint + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var answer apiResponse
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		return fmt.Errorf("%s: HTTP %d, undecodable answer: %v", endpoint, resp.StatusCode, err)
	}
	if answer.Status != "success" {
		return fmt.Errorf("%s: %s: %s", endpoint, answer.ErrorType, answer.Error)
	}
	return json.Unmarshal(answer.Data, out)
}

// series is one series of a query's answer: its labels and its values
// (one for an instant query, many for a range query).
type series struct {
	Metric map[string]string `json:"metric"`
	Value  sample            `json:"value"`
	Values []sample          `json:"values"`
}

// sample is a [timestamp, "value"] pair; only the value is kept.
type sample struct{ value float64 }

func (s *sample) UnmarshalJSON(b []byte) error {
	var pair [2]any
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	text, ok := pair[1].(string)
	if !ok {
		return fmt.Errorf("sample value %v is not a string", pair[1])
	}
	v, err := strconv.ParseFloat(text, 64)
	s.value = v
	return err
}

// queryResult is the data of a query answer.
type queryResult struct {
	Result []series `json:"result"`
}

// instant evaluates query now.
func (p *prometheusServer) instant(query string) ([]series, error) {
	var data queryResult
	err := p.api("query", url.Values{"query": {query}}, &data)
	return data.Result, err
}

// overRange evaluates query every second from start to now.
func (p *prometheusServer) overRange(query string, start time.Time) ([]series, error) {
	var data queryResult
	err := p.api("query_range", url.Values{
		"query": {query},
		"start": {unixSeconds(start)},
		"end":   {unixSeconds(time.Now())},
		"step":  {"1s"},
	}, &data)
	return data.Result, err
}

func unixSeconds(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// loadedRule is a rule as Prometheus loaded it.
type loadedRule struct {
	Type      string `json:"type"` // "alerting" or "recording"
	Name      string `json:"name"`
	Query     string `json:"query"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// rules lists the rules Prometheus loaded, in the order of the file.
func (p *prometheusServer) rules() ([]loadedRule, error) {
	var data struct {
		Groups []struct {
			Rules []loadedRule `json:"rules"`
		} `json:"groups"`
	}
	if err := p.api("rules", nil, &data); err != nil {
		return nil, err
	}
	var all []loadedRule
	for _, g := range data.Groups {
		all = append(all, g.Rules...)
	}
	return all, nil
}
