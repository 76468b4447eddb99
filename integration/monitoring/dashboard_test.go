package monitoring_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"testing"
	"time"
)

// datasourceRef is what every panel, query and variable of the dashboard
// names as its data source: the dashboard's variable, so that it imports
// as is into any Grafana, whatever its Prometheus data source is called.
const datasourceRef = "${datasource}"

// grafanaVariables are the variables Grafana itself defines that the
// dashboard may use.
var grafanaVariables = []string{"__rate_interval", "__interval", "__range"}

type dashboard struct {
	Inputs []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	ID         *int    `json:"id"`
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int            `json:"id"`
	Title      string         `json:"title"`
	Type       string         `json:"type"`
	Datasource *datasource    `json:"datasource"`
	GridPos    map[string]int `json:"gridPos"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Current struct {
		Value string `json:"value"`
	} `json:"current"`
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"` // a string, or {"query": "..."}
	Datasource *datasource     `json:"datasource"`
}

// query is the variable's query, in either of Grafana's two forms.
func (v variable) query() string {
	var text string
	if json.Unmarshal(v.Query, &text) == nil {
		return text
	}
	var object struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &object)
	return object.Query
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels lists the panels, those of collapsed rows included.
func (d dashboard) allPanels() []panel {
	var all []panel
	var walk func([]panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return all
}

var (
	// variableUse is a variable in a query: $name or ${name}.
	variableUse = regexp.MustCompile(`\$(?:\{(\w+)\}|(\w+))`)
	// labelValues is the query of a variable that lists a label's values.
	labelValues = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
)

// substitute replaces the variables in query with their values, as
// Grafana would; a variable without a value is an error.
func substitute(query string, values map[string]string) (string, error) {
	var unknown []string
	out := variableUse.ReplaceAllStringFunc(query, func(use string) string {
		m := variableUse.FindStringSubmatch(use)
		name := m[1] + m[2]
		value, ok := values[name]
		if !ok {
			unknown = append(unknown, name)
		}
		return value
	})
	if unknown != nil {
		return "", fmt.Errorf("variables without a value: %v", unknown)
	}
	return out, nil
}

// TestDashboardIsImportable checks what importing the dashboard as is
// needs: an id left to Grafana, a uid, the data source as a variable used
// by every panel, query and variable, panels laid out with unique ids, and
// queries that use only variables the dashboard or Grafana defines.
func TestDashboardIsImportable(t *testing.T) {
	d := readDashboard(t)
	if d.ID != nil || d.UID == "" || d.Title == "" {
		t.Errorf("id %v, uid %q, title %q: want no id (Grafana assigns one), a uid and a title", d.ID, d.UID, d.Title)
	}
	defined := slices.Clone(grafanaVariables)
	var queries []string
	for _, v := range d.Templating.List {
		defined = append(defined, v.Name)
		queries = append(queries, v.query())
		if v.Type != "query" {
			continue
		}
		if v.Datasource == nil || v.Datasource.UID != datasourceRef {
			t.Errorf("variable %s: data source %v, want %s", v.Name, v.Datasource, datasourceRef)
		}
		if !labelValues.MatchString(v.query()) {
			t.Errorf("variable %s: query %q is not label_values(<selector>, <label>)", v.Name, v.query())
		}
	}
	if !slices.ContainsFunc(d.Templating.List, func(v variable) bool {
		return "${"+v.Name+"}" == datasourceRef && v.Type == "datasource" && v.query() == "prometheus"
	}) {
		t.Errorf("no variable %s of type datasource for Prometheus", datasourceRef)
	}
	panels := d.allPanels()
	if len(panels) == 0 {
		t.Fatal("no panels")
	}
	ids := map[int]bool{}
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		for _, q := range p.Targets {
			queries = append(queries, q.Expr)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || p.GridPos["w"] <= 0 || p.GridPos["h"] <= 0 {
			t.Errorf("panel %d: title %q, gridPos %v: want a title, a width and a height", p.ID, p.Title, p.GridPos)
		}
		if p.Datasource == nil || p.Datasource.UID != datasourceRef {
			t.Errorf("panel %q: data source %v, want %s", p.Title, p.Datasource, datasourceRef)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no query", p.Title)
		}
		refIDs := map[string]bool{}
		for _, q := range p.Targets {
			if q.Expr == "" || q.RefID == "" || refIDs[q.RefID] {
				t.Errorf("panel %q: query %q with refId %q: want an expression and a refId of its own", p.Title, q.Expr, q.RefID)
			}
			refIDs[q.RefID] = true
			if q.Datasource != nil && q.Datasource.UID != datasourceRef {
				t.Errorf("panel %q, query %s: data source %v, want %s", p.Title, q.RefID, q.Datasource, datasourceRef)
			}
		}
	}
	values := map[string]string{}
	for _, name := range defined {
		values[name] = "x"
	}
	for _, q := range queries {
		if _, err := substitute(q, values); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	}
}

// TestDashboardImportAsksForTheDataSource: Grafana's import asks for the
// data sources the dashboard's __inputs name, and puts the one picked
// where ${<input>} stands: the datasource variable's default, which every
// panel uses.
func TestDashboardImportAsksForTheDataSource(t *testing.T) {
	d := readDashboard(t)
	if len(d.Inputs) != 1 || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Fatalf("__inputs %+v: want one, a Prometheus data source", d.Inputs)
	}
	for _, v := range d.Templating.List {
		if "${"+v.Name+"}" == datasourceRef && v.Current.Value != "${"+d.Inputs[0].Name+"}" {
			t.Errorf("the data source variable's default is %q, not the data source picked on import, ${%s}", v.Current.Value, d.Inputs[0].Name)
		}
	}
}

// dashboardChecks are the checks of every query of the dashboard, with the
// variables set to values: each panel's queries return data, and each
// variable's query lists the value given to it.
func (p *prometheusServer) dashboardChecks(d dashboard, start time.Time, values map[string]string) []check {
	var checks []check
	for _, pn := range d.allPanels() {
		for _, q := range pn.Targets {
			name := fmt.Sprintf("panel %q, query %s", pn.Title, q.RefID)
			expr, err := substitute(q.Expr, values)
			if err != nil {
				checks = append(checks, failed(name, err))
				continue
			}
			checks = append(checks, p.hasData(name, expr, start))
		}
	}
	if len(checks) == 0 {
		checks = append(checks, failed("the dashboard", fmt.Errorf("%s has no queries", dashboardFile)))
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			checks = append(checks, p.listsValue(v, values))
		}
	}
	return checks
}

// listsValue checks that the variable's label_values query lists the value
// given to the variable.
func (p *prometheusServer) listsValue(v variable, values map[string]string) check {
	name := "variable " + v.Name
	m := labelValues.FindStringSubmatch(v.query())
	if m == nil {
		return failed(name, fmt.Errorf("query %q is not label_values(<selector>, <label>)", v.query()))
	}
	selector, err := substitute(m[1], values)
	if err != nil {
		return failed(name, err)
	}
	return check{name, func() error {
		result, err := p.instant(selector)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(result, func(s series) bool { return s.Metric[m[2]] == values[v.Name] }) {
			return fmt.Errorf("%s lists no %s %q among %d series", selector, m[2], values[v.Name], len(result))
		}
		return nil
	}}
}
