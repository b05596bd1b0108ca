// Package alerts unit-tests the chart's alerting rules with promtool, the
// way the Prometheus ecosystem tests rules: every *.yaml file beside this
// one is a `promtool test rules` file whose input series are written as the
// operator exports them on /metrics. The test renders the chart, takes the
// rule groups out of its PrometheusRule, labels each input series as a
// scrape through the rendered ServiceMonitor would (job, namespace,
// service, endpoint, pod, container, instance, honoring or not the
// metric's own labels), and runs promtool on the result. Every alert in
// the chart must fire in at least one test.
package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tcprepl/tcprepl/test/cluster"
	"github.com/tcprepl/tcprepl/test/harness"
)

// promtoolVersion is the Prometheus Go module's version that the Makefile
// builds promtool from (PROMETHEUS_VERSION); keep the two in step.
const promtoolVersion = "0.316.0"

const (
	release   = "tcprepl"
	releaseNS = "tcprepl-system"
	// A pod IP and a ReplicaSet hash, as a scrape of the operator's pod
	// would show them.
	podIP       = "10.244.0.7"
	podHashName = "-7c9d8b6f5d-x2x4z"
)

func TestChartAlertRules(t *testing.T) {
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	helm, err := cluster.LookBinary("TCPREPL_HELM", filepath.Join(root, "bin", "helm-v"+harness.HelmVersion))
	cluster.SkipOrFail(t, err)
	promtool, err := cluster.LookBinary("TCPREPL_PROMTOOL", filepath.Join(root, "bin", "promtool-v"+promtoolVersion))
	cluster.SkipOrFail(t, err)

	objs := renderChart(t, helm, filepath.Join(root, "charts", "tcprepl"),
		"metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")
	target, err := scrapeTargetOf(objs)
	if err != nil {
		t.Fatal(err)
	}
	groups, alerts, err := ruleGroupsOf(objs)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	writeJSON(t, rulesFile, map[string]any{"groups": groups})

	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule test files beside alerts_test.go (%v)", err)
	}
	fired := map[string]bool{}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			scraped, firing, err := scrapedTestFile(f, rulesFile, target)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range firing {
				fired[a] = true
			}
			out := filepath.Join(dir, f)
			writeJSON(t, out, scraped)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, promtool, "test", "rules", out)
			var combined bytes.Buffer
			cmd.Stdout, cmd.Stderr = &combined, &combined
			if err := cmd.Run(); err != nil {
				t.Fatalf("promtool test rules %s: %v\n%s", f, err, combined.String())
			}
		})
	}
	for _, a := range alerts {
		if !fired[a] {
			t.Errorf("alert %s fires in no test: add a case to a *.yaml file in test/alerts", a)
		}
	}
}

// renderChart runs helm template with --set values and returns the objects.
func renderChart(t *testing.T, helm, chart string, sets ...string) []map[string]any {
	t.Helper()
	args := []string{"template", release, chart, "--namespace", releaseNS}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	var objs []map[string]any
	for doc := range strings.SplitSeq(out.String(), "\n---") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered chart: %v\n%s", err, doc)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs
}

// scrapeTarget is what a scrape through the ServiceMonitor adds to every
// series: the Prometheus Operator's target labels.
type scrapeTarget struct {
	labels      map[string]string
	honorLabels bool
}

// scrapeTargetOf finds the operator's pod behind the rendered
// ServiceMonitor and returns the labels its scrape gets.
func scrapeTargetOf(objs []map[string]any) (scrapeTarget, error) {
	sms := ofKind(objs, "ServiceMonitor")
	if len(sms) != 1 {
		return scrapeTarget{}, fmt.Errorf("the chart renders %d ServiceMonitors; want 1", len(sms))
	}
	sm := sms[0]
	endpoints := slice(get(sm, "spec", "endpoints"))
	if len(endpoints) != 1 {
		return scrapeTarget{}, fmt.Errorf("the ServiceMonitor has %d endpoints; this test simulates one", len(endpoints))
	}
	ep := mapOf(endpoints[0])
	if len(slice(ep["relabelings"])) > 0 || len(slice(ep["metricRelabelings"])) > 0 {
		return scrapeTarget{}, errors.New("the ServiceMonitor has relabelings by default; teach the scrape simulation about them")
	}
	portName, _ := ep["port"].(string)
	selector := mapOf(get(sm, "spec", "selector", "matchLabels"))
	namespaces := slice(get(sm, "spec", "namespaceSelector", "matchNames"))
	for _, svc := range ofKind(objs, "Service") {
		ns, _ := get(svc, "metadata", "namespace").(string)
		if !matches(mapOf(get(svc, "metadata", "labels")), selector) || !slices.Contains(namespaces, any(ns)) {
			continue
		}
		for _, p := range slice(get(svc, "spec", "ports")) {
			port := mapOf(p)
			if port["name"] != portName {
				continue
			}
			pod, container, containerPort, err := podBehind(objs, mapOf(get(svc, "spec", "selector")), port["targetPort"])
			if err != nil {
				return scrapeTarget{}, err
			}
			svcName, _ := get(svc, "metadata", "name").(string)
			job := svcName
			if jl, ok := get(sm, "spec", "jobLabel").(string); ok && jl != "" {
				job, _ = get(svc, "metadata", "labels", jl).(string)
			}
			honor, _ := ep["honorLabels"].(bool)
			return scrapeTarget{honorLabels: honor, labels: map[string]string{
				"job": job, "namespace": ns, "service": svcName, "endpoint": portName,
				"pod": pod, "container": container, "instance": podIP + ":" + strconv.Itoa(containerPort),
			}}, nil
		}
	}
	return scrapeTarget{}, fmt.Errorf("no rendered Service matches the ServiceMonitor's selector %v with a port named %q", selector, portName)
}

// podBehind names the pod (as its Deployment would), the container and the
// container port a Service's targetPort reaches.
func podBehind(objs []map[string]any, selector map[string]any, targetPort any) (pod, container string, port int, err error) {
	for _, d := range ofKind(objs, "Deployment") {
		if !matches(mapOf(get(d, "spec", "template", "metadata", "labels")), selector) {
			continue
		}
		name, _ := get(d, "metadata", "name").(string)
		for _, c := range slice(get(d, "spec", "template", "spec", "containers")) {
			cm := mapOf(c)
			for _, p := range slice(cm["ports"]) {
				pm := mapOf(p)
				n, _ := pm["containerPort"].(float64)
				if pm["name"] == targetPort || targetPort == n {
					cname, _ := cm["name"].(string)
					return name + podHashName, cname, int(n), nil
				}
			}
		}
	}
	return "", "", 0, fmt.Errorf("no rendered Deployment has a pod matching %v with port %v", selector, targetPort)
}

// ruleGroupsOf returns the rendered PrometheusRule's groups, which are a
// Prometheus rule file's groups as they are, and the names of its alerts.
func ruleGroupsOf(objs []map[string]any) ([]any, []string, error) {
	prs := ofKind(objs, "PrometheusRule")
	if len(prs) != 1 {
		return nil, nil, fmt.Errorf("the chart renders %d PrometheusRules; want 1", len(prs))
	}
	groups := slice(get(prs[0], "spec", "groups"))
	var alerts []string
	for _, g := range groups {
		for _, r := range slice(mapOf(g)["rules"]) {
			if a, ok := mapOf(r)["alert"].(string); ok {
				alerts = append(alerts, a)
			}
		}
	}
	if len(alerts) == 0 {
		return nil, nil, errors.New("the PrometheusRule has no alerts")
	}
	return groups, alerts, nil
}

// scrapedTestFile reads a rule test file, points it at rulesFile, labels
// its input series as the scrape would, and returns it with the alerts
// that some test expects to fire.
func scrapedTestFile(path, rulesFile string, target scrapeTarget) (map[string]any, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var f map[string]any
	// YAML anchors and merge keys (the files share target labels with
	// them) are resolved here; promtool gets plain JSON.
	if err := yaml.Unmarshal(data, &f); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	f["rule_files"] = []string{rulesFile}
	var firing []string
	tests := slice(f["tests"])
	if len(tests) == 0 {
		return nil, nil, fmt.Errorf("%s has no tests", path)
	}
	for i, tc := range tests {
		for j, in := range slice(mapOf(tc)["input_series"]) {
			s := mapOf(in)
			series, _ := s["series"].(string)
			scraped, err := target.scrape(series)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: tests[%d].input_series[%d]: %w", path, i, j, err)
			}
			s["series"] = scraped
		}
		for _, at := range slice(mapOf(tc)["alert_rule_test"]) {
			a := mapOf(at)
			if name, ok := a["alertname"].(string); ok && len(slice(a["exp_alerts"])) > 0 {
				firing = append(firing, name)
			}
		}
	}
	return f, firing, nil
}

// scrape labels one series as Prometheus stores it after a scrape of the
// target: a target label the metric also has is kept from the metric with
// honor_labels, else the metric's moves to exported_<name>.
func (st scrapeTarget) scrape(series string) (string, error) {
	name, labels, err := parseSeries(series)
	if err != nil {
		return "", err
	}
	for k, v := range st.labels {
		if mv, ok := labels[k]; ok {
			if st.honorLabels {
				continue
			}
			labels["exported_"+k] = mv
		}
		labels[k] = v
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + strconv.Quote(labels[k]))
	}
	b.WriteByte('}')
	return b.String(), nil
}

// parseSeries reads `name{a="b",c="d"}`, the form of promtool's input
// series.
func parseSeries(s string) (string, map[string]string, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexByte(s, '{')
	if i < 0 {
		return s, map[string]string{}, validName(s)
	}
	name := strings.TrimSpace(s[:i])
	if err := validName(name); err != nil {
		return "", nil, err
	}
	if !strings.HasSuffix(s, "}") {
		return "", nil, fmt.Errorf("series %q: missing closing brace", s)
	}
	body := s[i+1 : len(s)-1]
	labels := map[string]string{}
	for body = strings.TrimSpace(body); body != ""; {
		eq := strings.IndexByte(body, '=')
		if eq < 0 {
			return "", nil, fmt.Errorf("series %q: label without '='", s)
		}
		key := strings.TrimSpace(body[:eq])
		rest := strings.TrimSpace(body[eq+1:])
		if !strings.HasPrefix(rest, `"`) {
			return "", nil, fmt.Errorf("series %q: label %s: value must be double-quoted", s, key)
		}
		end := 1
		for end < len(rest) && rest[end] != '"' {
			if rest[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(rest) {
			return "", nil, fmt.Errorf("series %q: unterminated value of %s", s, key)
		}
		v, err := strconv.Unquote(rest[:end+1])
		if err != nil {
			return "", nil, fmt.Errorf("series %q: label %s: %w", s, key, err)
		}
		labels[key] = v
		body = strings.TrimSpace(rest[end+1:])
		body = strings.TrimSpace(strings.TrimPrefix(body, ","))
	}
	return name, labels, nil
}

func validName(name string) error {
	for i, c := range name {
		if c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return fmt.Errorf("metric name %q is not valid", name)
	}
	if name == "" {
		return errors.New("series without a metric name")
	}
	return nil
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func ofKind(objs []map[string]any, kind string) []map[string]any {
	var out []map[string]any
	for _, o := range objs {
		if o["kind"] == kind {
			out = append(out, o)
		}
	}
	return out
}

func get(o map[string]any, path ...string) any {
	var cur any = o
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func slice(v any) []any {
	s, _ := v.([]any)
	return s
}

func matches(labels, selector map[string]any) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
