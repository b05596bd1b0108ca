package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tcprepl/tcprepl/internal/testenv"
	"github.com/tcprepl/tcprepl/test/cluster"
	"github.com/tcprepl/tcprepl/test/harness"
)

// helmChart runs helm against the chart without a cluster.
type helmChart struct {
	helm, chart, home string
}

func newHelmChart(t *testing.T) helmChart {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	helm, err := cluster.LookBinary("TCPREPL_HELM", filepath.Join(root, "bin", "helm-v"+harness.HelmVersion))
	cluster.SkipOrFail(t, err)
	return helmChart{helm: helm, chart: filepath.Join(root, "charts", "tcprepl"), home: t.TempDir()}
}

func (h helmChart) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.helm, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+h.home, "HELM_CONFIG_HOME="+h.home, "HELM_DATA_HOME="+h.home)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// render runs helm template with --set values and returns the objects.
func (h helmChart) render(t *testing.T, sets ...string) []map[string]any {
	t.Helper()
	args := []string{"template", "tcprepl", h.chart, "--namespace", "tcprepl-system"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := h.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	var objs []map[string]any
	for _, doc := range strings.Split(out, "\n---") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if obj != nil {
			objs = append(objs, obj)
		}
	}
	return objs
}

func kinds(objs []map[string]any) map[string]map[string]any {
	m := map[string]map[string]any{}
	for _, o := range objs {
		name, _ := nested(o, "metadata", "name").(string)
		m[o["kind"].(string)+"/"+name] = o
	}
	return m
}

func nested(obj any, keys ...string) any {
	for _, k := range keys {
		m, ok := obj.(map[string]any)
		if !ok {
			return nil
		}
		obj = m[k]
	}
	return obj
}

func TestChartLintAndTemplate(t *testing.T) {
	h := newHelmChart(t)
	if out, err := h.run("lint", "--strict", h.chart); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	if out, err := h.run("lint", "--strict", h.chart, "--set", "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,rbac.scope=namespace"); err != nil {
		t.Fatalf("helm lint with monitoring and namespace scope: %v\n%s", err, out)
	}

	t.Run("defaults", func(t *testing.T) {
		objs := kinds(h.render(t))
		for _, want := range []string{
			"ServiceAccount/tcprepl", "ClusterRole/tcprepl", "ClusterRoleBinding/tcprepl",
			"Role/tcprepl-leader-election", "RoleBinding/tcprepl-leader-election",
			"Deployment/tcprepl", "Service/tcprepl-metrics",
		} {
			if objs[want] == nil {
				t.Errorf("default render lacks %s (has %v)", want, keys(objs))
			}
		}
		for k := range objs {
			if strings.HasPrefix(k, "ServiceMonitor/") || strings.HasPrefix(k, "PrometheusRule/") {
				t.Errorf("%s rendered although disabled by default", k)
			}
		}
		pod := nested(objs["Deployment/tcprepl"], "spec", "template", "spec").(map[string]any)
		c := pod["containers"].([]any)[0].(map[string]any)
		sc := c["securityContext"].(map[string]any)
		if sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false {
			t.Errorf("operator container securityContext %v: want read-only root fs, no privilege escalation", sc)
		}
		if nested(pod, "securityContext", "runAsNonRoot") != true {
			t.Errorf("operator pod is not runAsNonRoot")
		}
		if c["resources"] == nil {
			t.Errorf("operator container has no resources")
		}
		args := fmt.Sprint(c["args"])
		for _, want := range []string{"--leader-elect", "--leader-election-namespace=tcprepl-system", "--metrics-bind-address=:8080", "--operand-image-policy=pinned", "--operator-pod-labels=app.kubernetes.io/name=tcprepl,app.kubernetes.io/instance=tcprepl,app.kubernetes.io/component=operator"} {
			if !strings.Contains(args, want) {
				t.Errorf("operator args %s lack %s", args, want)
			}
		}
		if strings.Contains(args, "--watch-namespace") {
			t.Errorf("cluster scope must watch every namespace, args %s", args)
		}
		// The selector labels are what --operator-pod-labels names.
		labels := nested(objs["Deployment/tcprepl"], "spec", "selector", "matchLabels").(map[string]any)
		for _, kv := range []string{"app.kubernetes.io/name=tcprepl", "app.kubernetes.io/instance=tcprepl", "app.kubernetes.io/component=operator"} {
			k, v, _ := strings.Cut(kv, "=")
			if labels[k] != v {
				t.Errorf("selector %v lacks %s", labels, kv)
			}
		}
	})

	t.Run("namespace scope", func(t *testing.T) {
		objs := kinds(h.render(t, "rbac.scope=namespace", "rbac.watchNamespace=apps"))
		if objs["ClusterRole/tcprepl"] != nil || objs["ClusterRoleBinding/tcprepl"] != nil {
			t.Errorf("namespace scope renders cluster-wide RBAC")
		}
		role := objs["Role/tcprepl"]
		if role == nil || nested(role, "metadata", "namespace") != "apps" {
			t.Fatalf("namespace scope: Role/tcprepl in apps missing: %v", role)
		}
		args := fmt.Sprint(nested(objs["Deployment/tcprepl"], "spec", "template", "spec", "containers").([]any)[0].(map[string]any)["args"])
		if !strings.Contains(args, "--watch-namespace=apps") {
			t.Errorf("namespace scope args %s lack --watch-namespace=apps", args)
		}
	})

	t.Run("monitoring", func(t *testing.T) {
		objs := kinds(h.render(t, "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true"))
		if objs["ServiceMonitor/tcprepl"] == nil {
			t.Errorf("no ServiceMonitor")
		}
		rule := objs["PrometheusRule/tcprepl"]
		if rule == nil {
			t.Fatal("no PrometheusRule")
		}
		groups := nested(rule, "spec", "groups").([]any)
		var alerts []string
		for _, r := range groups[0].(map[string]any)["rules"].([]any) {
			alerts = append(alerts, r.(map[string]any)["alert"].(string))
		}
		for _, want := range []string{"TcpreplWorkerLagging", "TcpreplWorkerDisconnected", "TcpreplMasterNotReady", "TcpreplHeartbeatStale"} {
			if !strings.Contains(strings.Join(alerts, ","), want) {
				t.Errorf("PrometheusRule lacks alert %s (has %v)", want, alerts)
			}
		}
	})

	t.Run("refused values", func(t *testing.T) {
		for _, sets := range [][]string{
			{"rbac.scope=everywhere"},
			{"operator.replicas=-1"},
			{"operator.replicas=2", "operator.leaderElection.enabled=false"},
			{"image.digest=latest"},
			{"metrics.prometheusRule.workerLagFor=soon"},
			{"operator.typo=1"},
			{"operator.operandImagePolicy=always"},
		} {
			args := []string{"template", "tcprepl", h.chart}
			for _, s := range sets {
				args = append(args, "--set", s)
			}
			if _, err := h.run(args...); err == nil {
				t.Errorf("helm template accepted %v", sets)
			}
		}
	})
}

// rbacRule is one PolicyRule.
type rbacRule struct {
	APIGroups []string `json:"apiGroups"`
	Resources []string `json:"resources"`
	Verbs     []string `json:"verbs"`
}

// TestChartRBACCoversGeneratedRole checks that the chart grants every
// permission controller-gen derives from the controllers' +kubebuilder:rbac
// markers (config/rbac/role.yaml), so the two cannot drift apart silently.
// The end-to-end test then runs the operator with exactly the chart's
// permissions.
func TestChartRBACCoversGeneratedRole(t *testing.T) {
	h := newHelmChart(t)
	root, _ := cluster.RepoRoot()
	b, err := os.ReadFile(filepath.Join(root, "config", "rbac", "role.yaml"))
	if errors.Is(err, os.ErrNotExist) {
		testenv.SkipOrFail(t, "config/rbac/role.yaml not generated yet (make manifests)")
	}
	if err != nil {
		t.Fatal(err)
	}
	var generated struct {
		Rules []rbacRule `json:"rules"`
	}
	if err := yaml.Unmarshal(bytes.TrimPrefix(bytes.TrimSpace(b), []byte("---")), &generated); err != nil {
		t.Fatal(err)
	}
	if len(generated.Rules) == 0 {
		t.Fatal("config/rbac/role.yaml has no rules")
	}
	for _, scope := range []string{"cluster", "namespace"} {
		objs := kinds(h.render(t, "rbac.scope="+scope))
		kind := "ClusterRole/tcprepl"
		if scope == "namespace" {
			kind = "Role/tcprepl"
		}
		rb, err := yaml.Marshal(objs[kind]["rules"])
		if err != nil {
			t.Fatal(err)
		}
		var chart []rbacRule
		if err := yaml.Unmarshal(rb, &chart); err != nil {
			t.Fatal(err)
		}
		grants := map[string]bool{}
		for _, r := range chart {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						grants[g+"|"+res+"|"+v] = true
					}
				}
			}
		}
		for _, r := range generated.Rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						if !grants[g+"|"+res+"|"+v] {
							t.Errorf("%s (%s scope) does not grant %s on %q/%s, which config/rbac/role.yaml requires", kind, scope, v, g, res)
						}
					}
				}
			}
		}
	}
}

func keys(m map[string]map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
