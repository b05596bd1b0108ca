// Package monitoring tests what the chart gives Prometheus and Grafana
// beyond the operator's ServiceMonitor and alerts (test/alerts): the
// PodMonitors of masters and workers, checked against the pods the
// operator's builders make, and the Grafana dashboard, whose every query is
// parsed with Prometheus's parser and checked against the metrics the
// operator, master and worker really register.
package monitoring

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tcprepl/tcprepl/test/cluster"
	"github.com/tcprepl/tcprepl/test/harness"
)

// promqlVersion is the Prometheus Go module's version the Makefile builds
// promql-selectors from (PROMETHEUS_VERSION); keep the two in step.
const promqlVersion = "0.316.0"

const (
	release   = "tcprepl"
	releaseNS = "tcprepl-system"
)

type object = map[string]any

// chart renders the chart with helm.
type chart struct{ helm, dir string }

func newChart(t *testing.T) chart {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	helm, err := cluster.LookBinary("TCPREPL_HELM", filepath.Join(root, "bin", "helm-v"+harness.HelmVersion))
	cluster.SkipOrFail(t, err)
	return chart{helm: helm, dir: filepath.Join(root, "charts", "tcprepl")}
}

// render runs helm template with --set values and returns the objects.
func (c chart) render(t *testing.T, sets ...string) []object {
	t.Helper()
	out, err := c.template(t, sets...)
	if err != nil {
		t.Fatal(err)
	}
	var objs []object
	for doc := range strings.SplitSeq(out, "\n---") {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered chart: %v\n%s", err, doc)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs
}

func (c chart) template(t *testing.T, sets ...string) (string, error) {
	t.Helper()
	args := []string{"template", release, c.dir, "--namespace", releaseNS}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, c.helm, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", &helmError{args: args, err: err, stderr: errb.String()}
	}
	return out.String(), nil
}

type helmError struct {
	args   []string
	err    error
	stderr string
}

func (e *helmError) Error() string {
	return "helm " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + e.stderr
}

func ofKind(objs []object, kind string) []object {
	var out []object
	for _, o := range objs {
		if o["kind"] == kind {
			out = append(out, o)
		}
	}
	return out
}

func get(o any, keys ...string) any {
	for _, k := range keys {
		m, ok := o.(map[string]any)
		if !ok {
			return nil
		}
		o = m[k]
	}
	return o
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func slice(v any) []any {
	s, _ := v.([]any)
	return s
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
