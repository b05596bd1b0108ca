package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/test/harness"
)

// The chart's PrometheusRule is only useful if every series its alerts
// select exists: an alert on a metric nobody exports never fires, and
// Prometheus says nothing about it. checkAlertMetrics (run by TestEndToEnd
// against a live operator, master and worker) enforces that; the helpers
// below read the rules out of the rendered chart and the metric names out
// of their PromQL.

// alertRule is one alerting rule of the rendered PrometheusRule.
type alertRule struct {
	Alert string `json:"alert"`
	Expr  string `json:"expr"`
}

// chartAlertRules renders the chart with the PrometheusRule enabled and
// returns its alerting rules.
func chartAlertRules(t *testing.T, h helmChart) []alertRule {
	t.Helper()
	out, err := h.run("template", release, h.chart, "--namespace", operatorNS,
		"--set", "metrics.prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Kind string `json:"kind"`
		Spec struct {
			Groups []struct {
				Rules []alertRule `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(out), &rule); err != nil {
		t.Fatalf("the rendered PrometheusRule does not parse: %v\n%s", err, out)
	}
	var rules []alertRule
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				rules = append(rules, r)
			}
		}
	}
	if rule.Kind != "PrometheusRule" || len(rules) == 0 {
		t.Fatalf("no alerting rules in the rendered PrometheusRule:\n%s", out)
	}
	return rules
}

// selector is one instant or range vector selector of a PromQL expression:
// the metric name and its equality label matchers.
type selector struct {
	name   string
	labels map[string]string
}

// PromQL words that are not metric names where they stand.
var (
	promqlKeywords = map[string]bool{
		"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"inf": true, "nan": true, "start": true, "end": true,
	}
	// promqlLabelLists are followed by a parenthesised list of label names.
	promqlLabelLists = map[string]bool{
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	}
	promqlAggregations = map[string]bool{
		"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
		"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
		"limitk": true, "limit_ratio": true,
	}
)

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == ':'
}

func isIdentChar(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string literal starting at i.
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at %d", i)
}

// promqlSelectors returns the vector selectors of a PromQL expression. It is
// a lexer rather than a parser: identifiers are metric names unless they are
// keywords, functions or aggregations (followed by "(", or by "by"/"without"
// for aggregations), or grouping label lists; label matchers attach to the
// name before them; strings, durations and numbers are skipped.
func promqlSelectors(expr string) ([]selector, error) {
	var sels []selector
	s := expr
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j, err := skipString(s, i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unterminated range at %d", i)
			}
			i += j + 1
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isIdentChar(s[i]) || s[i] == '.') {
				i++
			}
		case c == '{':
			// A selector without a name ({__name__="x", ...}).
			sel := selector{labels: map[string]string{}}
			j, err := labelMatchers(s, i, &sel)
			if err != nil {
				return nil, err
			}
			sels = append(sels, sel)
			i = j
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			word := s[i:j]
			next := skipSpace(s, j)
			lower := strings.ToLower(word)
			switch {
			case promqlLabelLists[lower]:
				// by (a, b), on(a), group_left(a): skip the label names.
				if next < len(s) && s[next] == '(' {
					k := strings.IndexByte(s[next:], ')')
					if k < 0 {
						return nil, fmt.Errorf("unterminated label list after %s", word)
					}
					j = next + k + 1
				}
			case promqlKeywords[lower]:
			case next < len(s) && s[next] == '(':
				// A function or an aggregation.
			case promqlAggregations[lower] && next < len(s) && isIdentStart(s[next]):
				// sum by (x) (...), sum without (x) (...).
			default:
				sel := selector{name: word, labels: map[string]string{}}
				if next < len(s) && s[next] == '{' {
					var err error
					if j, err = labelMatchers(s, next, &sel); err != nil {
						return nil, err
					}
				}
				sels = append(sels, sel)
			}
			i = j
		default:
			i++
		}
	}
	for _, sel := range sels {
		if sel.name == "" {
			return nil, fmt.Errorf("a selector without a metric name in %q", expr)
		}
	}
	return sels, nil
}

// labelMatchers reads the {...} starting at i into sel and returns the
// index after it. Equality matchers are recorded; __name__ sets the name.
func labelMatchers(s string, i int, sel *selector) (int, error) {
	i++ // {
	for {
		i = skipSpace(s, i)
		if i >= len(s) {
			return 0, fmt.Errorf("unterminated label matchers")
		}
		if s[i] == '}' {
			return i + 1, nil
		}
		if s[i] == ',' {
			i++
			continue
		}
		j := i
		if s[j] == '"' || s[j] == '\'' || s[j] == '`' {
			return 0, fmt.Errorf("quoted label names are not supported here: %q", s[i:])
		}
		for j < len(s) && isIdentChar(s[j]) {
			j++
		}
		label := s[i:j]
		if label == "" {
			return 0, fmt.Errorf("a label name expected at %d in %q", i, s)
		}
		j = skipSpace(s, j)
		k := j
		for k < len(s) && strings.IndexByte("=!~", s[k]) >= 0 {
			k++
		}
		op := s[j:k]
		k = skipSpace(s, k)
		if k >= len(s) || (s[k] != '"' && s[k] != '\'' && s[k] != '`') {
			return 0, fmt.Errorf("a quoted value expected after %s%s in %q", label, op, s)
		}
		end, err := skipString(s, k)
		if err != nil {
			return 0, err
		}
		value, err := strconv.Unquote(s[k:end])
		if err != nil {
			value = s[k+1 : end-1]
		}
		switch {
		case op == "=" && label == "__name__":
			sel.name = value
		case op == "=":
			sel.labels[label] = value
		case op != "!=" && op != "=~" && op != "!~":
			return 0, fmt.Errorf("label matcher %s%s: unknown operator", label, op)
		}
		i = end
	}
}

func TestPromQLSelectors(t *testing.T) {
	for expr, want := range map[string]string{
		`tcprepl_a{job="j"} == 1 or tcprepl_b{job="j"} > 30`:                    `tcprepl_a{job=j} tcprepl_b{job=j}`,
		`up{job="x"} == 0 or absent(up{job="x"})`:                               `up{job=x} up{job=x}`,
		`sum by (namespace, master) (rate(foo_total{a="1", b=~"x|y"}[5m])) > 0`: `foo_total{a=1}`,
		`sum without(pod)(bar) / on(ns) group_left(master) baz offset 5m`:       `bar baz`,
		`histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m]))) > 1e-3`:     `h_bucket`,
		`{__name__="named", job="j"} unless count(x) > Inf`:                     `named{job=j} x`,
		`max(a) by (b)`: `a`,
		"# comment with fake_metric{x=\"1\"}\nreal": `real`,
	} {
		sels, err := promqlSelectors(expr)
		if err != nil {
			t.Errorf("promqlSelectors(%q): %v", expr, err)
			continue
		}
		var got []string
		for _, s := range sels {
			got = append(got, s.String())
		}
		if g := strings.Join(got, " "); g != want {
			t.Errorf("promqlSelectors(%q) = %s, want %s", expr, g, want)
		}
	}
	for _, bad := range []string{`a{b="c"`, `a{b="c}`, `a{b c}`} {
		if _, err := promqlSelectors(bad); err == nil {
			t.Errorf("promqlSelectors(%q) accepted it", bad)
		}
	}
}

func (s selector) String() string {
	if len(s.labels) == 0 {
		return s.name
	}
	var kv []string
	for k, v := range s.labels {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return s.name + "{" + strings.Join(kv, ",") + "}"
}

// exportedNames returns the metric names in a Prometheus text exposition:
// every family announced by # HELP or # TYPE (an empty vector still has
// one) and every sample's name (a histogram's _bucket, _sum, _count).
func exportedNames(body string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			line = rest
		} else if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			line = rest
		} else if line == "" || line[0] == '#' {
			continue
		}
		end := 0
		for end < len(line) && isIdentChar(line[end]) {
			end++
		}
		if end > 0 {
			names[line[:end]] = true
		}
	}
	return names
}

// prometheusSynthetic are the series Prometheus adds for every scrape
// target itself.
var prometheusSynthetic = map[string]bool{
	"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true,
	"scrape_samples_post_metric_relabeling": true, "scrape_series_added": true,
}

// exporter is one process's scraped /metrics.
type exporter struct {
	what  string
	names map[string]bool
}

// missingAlertMetrics checks every selector of every rule: its name must be
// exported by one of the processes (or be Prometheus' own), and a selector
// on the operator's scrape job must name a metric the operator exports.
func missingAlertMetrics(rules []alertRule, operatorJob string, operator exporter, others ...exporter) []string {
	var problems []string
	all := append([]exporter{operator}, others...)
	for _, r := range rules {
		sels, err := promqlSelectors(r.Expr)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", r.Alert, err))
			continue
		}
		for _, sel := range sels {
			if prometheusSynthetic[sel.name] {
				continue
			}
			var by []string
			for _, e := range all {
				if e.names[sel.name] {
					by = append(by, e.what)
				}
			}
			job, hasJob := sel.labels["job"]
			switch {
			case len(by) == 0:
				problems = append(problems, fmt.Sprintf("%s: %s is exported by none of %s", r.Alert, sel, whats(all)))
			case hasJob && job != operatorJob:
				problems = append(problems, fmt.Sprintf("%s: %s selects job %q, which is not the operator's scrape job %q (the only one the chart's ServiceMonitor makes)", r.Alert, sel, job, operatorJob))
			case hasJob && !operator.names[sel.name]:
				problems = append(problems, fmt.Sprintf("%s: %s selects the operator's job, but the operator does not export it (the %s does)", r.Alert, sel, strings.Join(by, " and ")))
			}
		}
	}
	return problems
}

func whats(es []exporter) string {
	var w []string
	for _, e := range es {
		w = append(w, e.what)
	}
	return strings.Join(w, ", ")
}

func TestMissingAlertMetrics(t *testing.T) {
	op := exporter{"operator", map[string]bool{"tcprepl_operator_master_ready": true}}
	m := exporter{"master", map[string]bool{"tcprepl_master_stream_position": true}}
	for _, c := range []struct {
		expr string
		bad  bool
	}{
		{`tcprepl_operator_master_ready{job="op"} == 0`, false},
		{`up{job="op"} == 0 or absent(up{job="op"})`, false},
		{`rate(tcprepl_master_stream_position[5m]) == 0`, false},
		{`tcprepl_master_ready{job="op"} == 0`, true},
		{`tcprepl_master_stream_position{job="op"} == 0`, true},
		{`tcprepl_operator_master_ready{job="other"} == 0`, true},
	} {
		got := missingAlertMetrics([]alertRule{{Alert: "A", Expr: c.expr}}, "op", op, m)
		if (len(got) > 0) != c.bad {
			t.Errorf("%s: problems %v, want bad=%v", c.expr, got, c.bad)
		}
	}
}

// checkAlertMetrics checks that every metric the chart's PrometheusRule
// alerts select is exported by a running operator, master or worker (their
// real /metrics), and that the selectors on the operator's scrape job (the
// chart's ServiceMonitor scrapes only the operator) name metrics the
// operator itself exports; then that no alert condition holds in the
// healthy topology.
func checkAlertMetrics(t *testing.T, ctx context.Context, env *harness.Env, master string, ports harness.MasterPorts, worker string) {
	t.Helper()
	rules := chartAlertRules(t, newHelmChart(t))
	// The chart's ServiceMonitor scrapes the metrics Service, whose name is
	// the job label Prometheus gives the operator's series.
	operatorJob := release + "-metrics"

	masterIP, err := env.Kubelet.ServiceIP(ns, master)
	if err != nil {
		t.Fatal(err)
	}
	masterURL := "http://" + net.JoinHostPort(masterIP, strconv.Itoa(ports.HTTP)) + "/metrics"
	pods := workerPods(ctx, t, env, worker)
	if len(pods) == 0 {
		t.Fatal("no running worker pod to scrape")
	}
	workerIP, err := env.Kubelet.PodIP(ns, pods[0])
	if err != nil {
		t.Fatal(err)
	}
	workerURL := "http://" + net.JoinHostPort(workerIP, strconv.Itoa(specs.WorkerMetricsPort)) + "/metrics"

	// The per-resource series appear with the first reconcile after the
	// probe has measured; give it a few polls.
	var problems []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		problems = problems[:0]
		var exps []exporter
		for _, src := range []struct{ what, url string }{
			{"operator", env.OperatorMetricsURL}, {"master", masterURL}, {"worker", workerURL},
		} {
			body, err := scrape(src.url)
			if err != nil {
				problems = append(problems, fmt.Sprintf("scrape the %s at %s: %v", src.what, src.url, err))
			}
			exps = append(exps, exporter{src.what, exportedNames(body)})
		}
		if len(problems) == 0 {
			problems = missingAlertMetrics(rules, operatorJob, exps[0], exps[1:]...)
		}
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if len(problems) > 0 {
		// Errorf, not Fatalf: the faults after this are independent of it.
		t.Errorf("the chart's alerts (charts/tcprepl/templates/prometheusrule.yaml) select metrics that are not exported where they look; export them (controllers/metrics.go) or change the rules:\n  %s",
			strings.Join(problems, "\n  "))
		return
	}
	var names []string
	for _, r := range rules {
		sels, _ := promqlSelectors(r.Expr)
		for _, s := range sels {
			if !slices.Contains(names, s.name) {
				names = append(names, s.name)
			}
		}
	}
	t.Logf("every metric of the %d alerts is exported: %s", len(rules), strings.Join(names, ", "))

	// In this healthy state no alert may fire.
	body, err := scrape(env.OperatorMetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{"namespace": ns, "master": master}
	w := map[string]string{"namespace": ns, "master": master, "worker": worker}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"tcprepl_operator_master_ready", m, 1},
		{"tcprepl_operator_master_heartbeat_stale", m, 0},
		{"tcprepl_operator_worker_lagging", w, 0},
		{"tcprepl_operator_worker_connected_replicas", w, 2},
		{"tcprepl_operator_worker_desired_replicas", w, 2},
	} {
		if got, ok := metricValue(body, c.name, c.labels); !ok || got != c.want {
			t.Errorf("operator metric %s%v = %v (present %v), want %v in a healthy topology", c.name, c.labels, got, ok, c.want)
		}
	}
}

// TestChartAlertRulesParse checks, without a cluster, that the lexer reads
// every rendered alert and finds at least one metric in each, so that
// checkAlertMetrics has something to check.
func TestChartAlertRulesParse(t *testing.T) {
	for _, r := range chartAlertRules(t, newHelmChart(t)) {
		sels, err := promqlSelectors(r.Expr)
		if err != nil {
			t.Errorf("%s: %v\n%s", r.Alert, err, r.Expr)
			continue
		}
		if len(sels) == 0 {
			t.Errorf("%s selects no metric: %s", r.Alert, r.Expr)
		}
		for _, s := range sels {
			if !prometheusSynthetic[s.name] && !strings.HasPrefix(s.name, "tcprepl_operator_") {
				t.Errorf("%s selects %s, which is not one of the operator's tcprepl_operator_* metrics (the chart's ServiceMonitor scrapes only the operator)", r.Alert, s)
			}
		}
	}
}
