package monitoring

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/test/cluster"
)

// dashboardFile is the dashboard in the chart.
const dashboardFile = "dashboards/tcprepl.json"

// query is one PromQL expression of the dashboard and where it is.
type query struct {
	where string
	expr  string
	// label is the label a label_values() variable reads ("" otherwise).
	label string
}

// grafanaBuiltins are the interval variables Grafana fills in, replaced by
// a duration before parsing.
var grafanaBuiltins = regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`)

// variableRef finds the dashboard's own variables in an expression.
var variableRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)

// dashboardQueries returns every query of the dashboard: each panel's
// targets (rows' nested panels included) and each query variable, with
// Grafana's variables replaced so that Prometheus's parser reads them.
func dashboardQueries(dash map[string]any) ([]query, []error) {
	vars := map[string]bool{}
	var out []query
	var errs []error
	errorf := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, v := range slice(get(dash, "templating", "list")) {
		vm := mapOf(v)
		name := str(vm["name"])
		vars[name] = true
		if vm["type"] != "query" {
			continue
		}
		q := str(get(vm, "query", "query"))
		if q == "" {
			q = str(vm["query"])
		}
		switch mm := labelValues.FindStringSubmatch(q); {
		case mm != nil:
			out = append(out, query{where: "variable " + name, expr: mm[1], label: mm[2]})
		case strings.HasPrefix(strings.TrimSpace(q), "query_result("):
			e := strings.TrimSpace(q)
			out = append(out, query{where: "variable " + name, expr: e[len("query_result(") : len(e)-1]})
		default:
			errorf("variable %s: query %q is neither label_values(selector, label) nor query_result(expr); teach this test about it", name, q)
		}
	}
	var walk func(panels []any)
	ids := map[float64]string{}
	walk = func(panels []any) {
		for _, p := range panels {
			pm := mapOf(p)
			title := str(pm["title"])
			id, _ := pm["id"].(float64)
			if other, dup := ids[id]; dup {
				errorf("panels %q and %q share id %v", other, title, id)
			}
			ids[id] = title
			if pm["type"] == "row" {
				walk(slice(pm["panels"]))
				continue
			}
			targets := slice(pm["targets"])
			if len(targets) == 0 {
				errorf("panel %q has no query", title)
			}
			if uid := str(get(pm, "datasource", "uid")); uid != "${datasource}" {
				errorf("panel %q uses data source %q, want the dashboard's ${datasource}", title, uid)
			}
			for _, tg := range targets {
				e := str(mapOf(tg)["expr"])
				if e == "" {
					errorf("panel %q: a target without expr", title)
					continue
				}
				out = append(out, query{where: fmt.Sprintf("panel %q", title), expr: e})
			}
		}
	}
	walk(slice(dash["panels"]))
	for i, q := range out {
		e := grafanaBuiltins.ReplaceAllString(q.expr, "5m")
		for _, m := range variableRef.FindAllStringSubmatch(e, -1) {
			if !vars[m[1]] {
				errorf("%s: %s refers to $%s, which the dashboard does not define", q.where, q.expr, m[1])
			}
		}
		// Each variable stands for a regular expression (its values, or
		// its allValue) inside a label matcher's string.
		out[i].expr = variableRef.ReplaceAllString(e, ".+")
	}
	return out, errs
}

// selectorResult is promql-selectors' answer for one expression.
type selectorResult struct {
	Expr      string `json:"expr"`
	Error     string `json:"error"`
	Selectors []struct {
		Name     string `json:"name"`
		Matchers []struct {
			Name, Type, Value string
		} `json:"matchers"`
	} `json:"selectors"`
}

// parseQueries runs Prometheus's parser (hack/tools/prometheus/promql-selectors)
// on the expressions.
func parseQueries(t *testing.T, exprs []string) []selectorResult {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := cluster.LookBinary("TCPREPL_PROMQL_SELECTORS", filepath.Join(root, "bin", "promql-selectors-v"+promqlVersion))
	cluster.SkipOrFail(t, err)
	in, err := json.Marshal(exprs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Stdin = bytes.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v: %s", bin, err, errb.String())
	}
	var res []selectorResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%s output: %v", bin, err)
	}
	if len(res) != len(exprs) {
		t.Fatalf("%s answered %d expressions of %d", bin, len(res), len(exprs))
	}
	return res
}

// matchesEmpty says whether a matcher accepts a series without the label.
func matchesEmpty(typ, value string) (bool, error) {
	switch typ {
	case "=":
		return value == "", nil
	case "!=":
		return value != "", nil
	case "=~", "!~":
		re, err := regexp.Compile("^(?:" + value + ")$")
		if err != nil {
			return false, err
		}
		return re.MatchString("") == (typ == "=~"), nil
	}
	return false, fmt.Errorf("unknown matcher type %q", typ)
}

// TestChartGrafanaDashboard: the chart ships dashboards/tcprepl.json as a
// ConfigMap the Grafana sidecar loads, and every query in it parses with
// Prometheus's parser and selects only metrics the operator, master or
// worker registers, by labels those series carry once scraped through the
// chart's ServiceMonitor and PodMonitors.
func TestChartGrafanaDashboard(t *testing.T) {
	c := newChart(t)
	if n := len(ofKind(c.render(t), "ConfigMap")); n != 0 {
		t.Fatalf("%d ConfigMaps by default, want none (the dashboard is opt-in)", n)
	}
	objs := c.render(t, "metrics.serviceMonitor.enabled=true", "metrics.podMonitor.masters.enabled=true",
		"metrics.podMonitor.workers.enabled=true", "metrics.grafanaDashboard.enabled=true", "metrics.grafanaDashboard.folder=Replication")
	cms := ofKind(objs, "ConfigMap")
	if len(cms) != 1 {
		t.Fatalf("%d ConfigMaps, want the dashboard's", len(cms))
	}
	cm := cms[0]
	if got := str(get(cm, "metadata", "labels", "grafana_dashboard")); got != "1" {
		t.Errorf("label grafana_dashboard = %q, want \"1\" (the sidecar's default selector)", got)
	}
	if got := str(get(cm, "metadata", "annotations", "grafana_folder")); got != "Replication" {
		t.Errorf("annotation grafana_folder = %q, want the value of metrics.grafanaDashboard.folder", got)
	}
	shipped := str(get(cm, "data", "tcprepl.json"))
	file, err := os.ReadFile(filepath.Join(c.dir, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(shipped) != strings.TrimSpace(string(file)) {
		t.Fatalf("the ConfigMap's tcprepl.json is not %s", dashboardFile)
	}
	var dash map[string]any
	if err := json.Unmarshal([]byte(shipped), &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if str(dash["uid"]) == "" || str(dash["title"]) == "" {
		t.Errorf("the dashboard needs a uid and a title (uid %q, title %q)", dash["uid"], dash["title"])
	}

	queries, errs := dashboardQueries(dash)
	for _, err := range errs {
		t.Error(err)
	}
	if len(queries) == 0 {
		t.Fatal("no queries in the dashboard")
	}
	exprs := make([]string, len(queries))
	for i, q := range queries {
		exprs[i] = q.expr
	}
	parsed := parseQueries(t, exprs)
	sources := scrapeSources(t, objs)
	metrics := registeredMetrics(t)
	for proc, reg := range metrics {
		if len(reg) == 0 {
			t.Fatalf("no metrics registered by the %s", proc)
		}
	}
	seriesNames := map[string]map[string]string{}
	for proc, reg := range metrics {
		seriesNames[proc] = reg.seriesNames()
	}

	used := map[string]bool{}
	for i, q := range queries {
		res := parsed[i]
		if res.Error != "" {
			t.Errorf("%s: %s: %s", q.where, q.expr, res.Error)
			continue
		}
		if len(res.Selectors) == 0 {
			t.Errorf("%s: %s selects no series", q.where, q.expr)
		}
		for _, sel := range res.Selectors {
			if sel.Name == "" {
				t.Errorf("%s: a selector without a metric name in %s cannot be checked", q.where, q.expr)
				continue
			}
			// Every process that exports the name, with the labels its
			// series carry once scraped.
			available := map[string]bool{}
			var from []string
			for _, proc := range keysOf(metrics) {
				family, ok := seriesNames[proc][sel.Name]
				if !ok {
					continue
				}
				from = append(from, proc)
				for l := range metrics[proc][family].labels {
					available[l] = true
				}
				for l := range sources[proc].targetLabels {
					available[l] = true
				}
			}
			if len(from) == 0 {
				t.Errorf("%s: %s is registered by none of the operator, master and worker", q.where, sel.Name)
				continue
			}
			used[sel.Name] = true
			checkLabel := func(l string) {
				if !available[l] {
					t.Errorf("%s: %s has no label %s once scraped (from %v: labels %v)", q.where, sel.Name, l, from, keysOf(available))
				}
			}
			for _, m := range sel.Matchers {
				empty, err := matchesEmpty(m.Type, m.Value)
				if err != nil {
					t.Errorf("%s: %s: matcher %s%s%q: %v", q.where, sel.Name, m.Name, m.Type, m.Value, err)
					continue
				}
				if !empty {
					checkLabel(m.Name)
				}
			}
			if q.label != "" {
				checkLabel(q.label)
			}
		}
	}
	t.Logf("%d queries over %d metrics: %v", len(queries), len(used), keysOf(used))
}

// TestDashboardQueryChecks: the dashboard's reading catches what it is
// for.
func TestDashboardQueryChecks(t *testing.T) {
	type panel struct {
		id        float64
		uid, expr string
	}
	dash := func(variable string, panels ...panel) map[string]any {
		var ps []any
		for _, p := range panels {
			pm := map[string]any{"type": "timeseries", "id": p.id, "title": fmt.Sprintf("p%v", p.id), "datasource": map[string]any{"uid": p.uid}}
			if p.expr != "" {
				pm["targets"] = []any{map[string]any{"expr": p.expr}}
			}
			ps = append(ps, pm)
		}
		return map[string]any{
			"templating": map[string]any{"list": []any{
				map[string]any{"name": "datasource", "type": "datasource"},
				map[string]any{"name": "namespace", "type": "query", "query": map[string]any{"query": variable}},
			}},
			"panels": []any{map[string]any{"type": "row", "id": 100.0, "panels": ps}},
		}
	}
	const ds = "${datasource}"
	tests := map[string]struct {
		dash    map[string]any
		want    []query
		wantErr string
	}{
		"variables and builtins replaced, rows walked": {
			dash: dash(`label_values(up{job="x"}, namespace)`, panel{1, ds, `rate(a_total{namespace=~"$namespace"}[$__rate_interval])`}),
			want: []query{
				{where: "variable namespace", expr: `up{job="x"}`, label: "namespace"},
				{where: `panel "p1"`, expr: `rate(a_total{namespace=~".+"}[5m])`},
			},
		},
		"an undefined variable": {
			dash:    dash(`label_values(up, namespace)`, panel{1, ds, `a{pod=~"$pod"}`}),
			wantErr: "refers to $pod",
		},
		"a panel without a query": {
			dash:    dash(`label_values(up, namespace)`, panel{1, ds, ""}),
			wantErr: "has no query",
		},
		"a fixed data source": {
			dash:    dash(`label_values(up, namespace)`, panel{1, "prometheus", "a"}),
			wantErr: "uses data source",
		},
		"duplicate panel ids": {
			dash:    dash(`label_values(up, namespace)`, panel{1, ds, "a"}, panel{1, ds, "b"}),
			wantErr: "share id",
		},
		"a variable query of another kind": {
			dash:    dash(`metrics(up)`, panel{1, ds, "a"}),
			wantErr: "neither label_values",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, errs := dashboardQueries(tc.dash)
			if tc.wantErr == "" {
				if len(errs) > 0 {
					t.Fatalf("errors %v", errs)
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("queries = %+v, want %+v", got, tc.want)
				}
				return
			}
			if !slices.ContainsFunc(errs, func(e error) bool { return strings.Contains(e.Error(), tc.wantErr) }) {
				t.Errorf("errors %v, want one saying %q", errs, tc.wantErr)
			}
		})
	}
	for typ, cases := range map[string]map[string]bool{
		"=":  {"": true, "x": false},
		"!=": {"": false, "x": true},
		"=~": {".*": true, ".+": false, "a|": true},
		"!~": {".+": true, ".*": false},
	} {
		for v, want := range cases {
			got, err := matchesEmpty(typ, v)
			if err != nil || got != want {
				t.Errorf("matchesEmpty(%s, %q) = %v, %v; want %v", typ, v, got, err, want)
			}
		}
	}
}
