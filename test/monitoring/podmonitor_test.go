package monitoring

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

// The resources whose pods the PodMonitors must find, built by the
// operator's own builders.
func testResources() (*replv1.ReplicationMaster, *replv1.ReplicationWorker) {
	m := &replv1.ReplicationMaster{
		ObjectMeta: metav1.ObjectMeta{Name: "hs-master", Namespace: "apps"},
		Spec: replv1.ReplicationMasterSpec{
			ServerName: "matrix.example.org", ReplicationPort: 9092, HTTPPort: 9093,
			Storage: replv1.StorageSpec{Size: ptr.To(resource.MustParse("1Gi"))},
		},
	}
	w := &replv1.ReplicationWorker{
		ObjectMeta: metav1.ObjectMeta{Name: "hs-events", Namespace: "apps"},
		Spec:       replv1.ReplicationWorkerSpec{MasterRef: replv1.MasterReference{Name: m.Name}, Replicas: ptr.To[int32](2), Streams: []string{"events"}},
	}
	return m, w
}

// pods returns the pod templates of a master, a worker and the chart's
// operator, by role.
func pods(t *testing.T, objs []object) map[string]corev1.PodTemplateSpec {
	t.Helper()
	m, w := testResources()
	o := specs.BuildOptions{DefaultImage: "ghcr.io/tcprepl/tcprepl:test"}
	out := map[string]corev1.PodTemplateSpec{
		"masters": specs.BuildMasterStatefulSet(m, o, "hash").Spec.Template,
		"workers": specs.BuildWorkerStatefulSet(w, m, o).Spec.Template,
	}
	deps := ofKind(objs, "Deployment")
	if len(deps) != 1 {
		t.Fatalf("the chart renders %d Deployments; want the operator's", len(deps))
	}
	var op corev1.PodTemplateSpec
	op.Labels = map[string]string{}
	for k, v := range mapOf(get(deps[0], "spec", "template", "metadata", "labels")) {
		op.Labels[k] = str(v)
	}
	out["operator"] = op
	return out
}

// scrapeSource is one kind of scrape target the dashboard's series come
// from, with the labels a scrape adds to the process's own.
type scrapeSource struct {
	name string
	// targetLabels are the labels a scrape sets (Prometheus Operator
	// target labels and relabelings).
	targetLabels map[string]bool
	// honorLabels: the process's labels win over the target's.
	honorLabels bool
}

// podTargetLabels are what the Prometheus Operator gives every PodMonitor
// target; a ServiceMonitor adds service.
var podTargetLabels = []string{"job", "instance", "namespace", "pod", "container", "endpoint"}

// relabelPod applies a PodMonitor endpoint's relabelings to the discovery
// labels of pod, the way Prometheus does for the actions the chart uses
// (replace, with the default regex and replacement), and returns the target
// labels they set.
func relabelPod(t *testing.T, ep map[string]any, pod corev1.PodTemplateSpec) map[string]string {
	t.Helper()
	meta := map[string]string{}
	for k, v := range pod.Labels {
		meta["__meta_kubernetes_pod_label_"+sanitizeLabelName(k)] = v
	}
	out := map[string]string{}
	for _, r := range slice(ep["relabelings"]) {
		rl := mapOf(r)
		if a := str(rl["action"]); a != "" && a != "replace" {
			t.Fatalf("relabeling %v: action %q; teach this test about it", rl, a)
		}
		if rl["regex"] != nil || rl["replacement"] != nil || rl["separator"] != nil {
			t.Fatalf("relabeling %v: regex, replacement or separator set; teach this test about them", rl)
		}
		var vals []string
		for _, s := range slice(rl["sourceLabels"]) {
			vals = append(vals, meta[str(s)])
		}
		if v := strings.Join(vals, ";"); v != "" {
			out[str(rl["targetLabel"])] = v
		}
	}
	return out
}

var invalidLabelChars = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// sanitizeLabelName is Kubernetes service discovery's mapping of a label
// key to a meta label name.
func sanitizeLabelName(k string) string { return invalidLabelChars.ReplaceAllString(k, "_") }

func matchesLabels(labels map[string]string, selector map[string]any) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != str(v) {
			return false
		}
	}
	return true
}

// TestChartPodMonitors renders the masters' and workers' PodMonitors and
// checks them against the pods the operator builds: each selects its own
// role's pods only, scrapes a port the pod has, and labels the series with
// the resource names the dashboard joins on.
func TestChartPodMonitors(t *testing.T) {
	c := newChart(t)
	if n := len(ofKind(c.render(t), "PodMonitor")); n != 0 {
		t.Fatalf("%d PodMonitors by default, want none (opt-in)", n)
	}
	objs := c.render(t, "metrics.podMonitor.masters.enabled=true", "metrics.podMonitor.workers.enabled=true",
		"metrics.podMonitor.labels.release=prom")
	pms := ofKind(objs, "PodMonitor")
	if len(pms) != 2 {
		t.Fatalf("%d PodMonitors, want 2", len(pms))
	}
	m, w := testResources()
	podsByRole := pods(t, objs)
	wantLabels := map[string]map[string]string{
		"masters": {"master": m.Name},
		"workers": {"worker": w.Name, "master": m.Name},
	}
	for _, pm := range pms {
		name := str(get(pm, "metadata", "name"))
		role := name[strings.LastIndex(name, "-")+1:]
		t.Run(role, func(t *testing.T) {
			if _, ok := wantLabels[role]; !ok {
				t.Fatalf("PodMonitor %s: not one of masters, workers", name)
			}
			if got := str(get(pm, "metadata", "labels", "release")); got != "prom" {
				t.Errorf("metadata.labels.release = %q, want the value of metrics.podMonitor.labels", got)
			}
			if str(get(pm, "metadata", "namespace")) != releaseNS {
				t.Errorf("namespace %v, want the release's", get(pm, "metadata", "namespace"))
			}
			if get(pm, "spec", "namespaceSelector", "any") != true {
				t.Errorf("namespaceSelector %v, want any: true with rbac.scope=cluster", get(pm, "spec", "namespaceSelector"))
			}
			sel := mapOf(get(pm, "spec", "selector", "matchLabels"))
			for r, pod := range podsByRole {
				if got := matchesLabels(pod.Labels, sel); got != (r == role) {
					t.Errorf("selector %v selects the %s pod (labels %v): %v", sel, r, pod.Labels, got)
				}
			}
			eps := slice(get(pm, "spec", "podMetricsEndpoints"))
			if len(eps) != 1 {
				t.Fatalf("%d endpoints, want 1", len(eps))
			}
			ep := mapOf(eps[0])
			pod := podsByRole[role]
			var ports []string
			for _, ctr := range pod.Spec.Containers {
				for _, p := range ctr.Ports {
					ports = append(ports, p.Name)
				}
			}
			if !slices.Contains(ports, str(ep["port"])) {
				t.Errorf("endpoint port %q; the pod's ports are %v", ep["port"], ports)
			}
			if ep["path"] != "/metrics" {
				t.Errorf("path %v, want /metrics", ep["path"])
			}
			if ep["honorLabels"] != false {
				t.Errorf("honorLabels %v, want false: the scrape's namespace and pod are the truth", ep["honorLabels"])
			}
			if diff := cmp.Diff(wantLabels[role], relabelPod(t, ep, pod)); diff != "" {
				t.Errorf("labels the relabelings set (-want +got):\n%s", diff)
			}
		})
	}
}

// TestChartPodMonitorNamespaces: the PodMonitors look where the operator
// works.
func TestChartPodMonitorNamespaces(t *testing.T) {
	c := newChart(t)
	tests := map[string]struct {
		sets []string
		want map[string]any
	}{
		"every namespace with a cluster-scoped operator": {want: map[string]any{"any": true}},
		"the listed namespaces": {
			sets: []string{"metrics.podMonitor.namespaces={apps,infra}"},
			want: map[string]any{"matchNames": []any{"apps", "infra"}},
		},
		"the watched namespace with a namespace-scoped operator": {
			sets: []string{"rbac.scope=namespace", "rbac.watchNamespace=apps", "metrics.podMonitor.namespaces={infra}"},
			want: map[string]any{"matchNames": []any{"apps"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			objs := c.render(t, append(tc.sets, "metrics.podMonitor.masters.enabled=true", "metrics.podMonitor.workers.enabled=true")...)
			for _, pm := range ofKind(objs, "PodMonitor") {
				if diff := cmp.Diff(tc.want, get(pm, "spec", "namespaceSelector")); diff != "" {
					t.Errorf("%s namespaceSelector (-want +got):\n%s", get(pm, "metadata", "name"), diff)
				}
			}
		})
	}
}

// TestChartMonitoringValuesValidated: the schema refuses what Prometheus
// or the sidecar would choke on later.
func TestChartMonitoringValuesValidated(t *testing.T) {
	c := newChart(t)
	for _, set := range []string{
		"metrics.podMonitor.masters.interval=soon",
		"metrics.podMonitor.workers.scrapeTimeout=10",
		"metrics.podMonitor.workers.enable=true",
		"metrics.podMonitor.masters.scheme=ftp",
		"metrics.grafanaDashboard.label=",
	} {
		t.Run(set, func(t *testing.T) {
			if _, err := c.template(t, set); err == nil {
				t.Errorf("helm template accepted %s", set)
			}
		})
	}
}

// TestChartPodMonitorTLS: masters with spec.tls serve /metrics over HTTPS;
// the masters' PodMonitor takes a scheme and a tlsConfig for them, and
// renders neither when they are not set.
func TestChartPodMonitorTLS(t *testing.T) {
	c := newChart(t)
	endpoint := func(objs []object) map[string]any {
		t.Helper()
		for _, pm := range ofKind(objs, "PodMonitor") {
			if strings.HasSuffix(str(get(pm, "metadata", "name")), "-masters") {
				return mapOf(slice(get(pm, "spec", "podMetricsEndpoints"))[0])
			}
		}
		t.Fatal("no masters PodMonitor")
		return nil
	}
	plain := endpoint(c.render(t, "metrics.podMonitor.masters.enabled=true"))
	if _, ok := plain["scheme"]; ok {
		t.Errorf("scheme %v rendered without metrics.podMonitor.masters.scheme", plain["scheme"])
	}
	if _, ok := plain["tlsConfig"]; ok {
		t.Errorf("tlsConfig %v rendered without metrics.podMonitor.masters.tlsConfig", plain["tlsConfig"])
	}
	tls := endpoint(c.render(t, "metrics.podMonitor.masters.enabled=true", "metrics.podMonitor.masters.scheme=https",
		"metrics.podMonitor.masters.tlsConfig.serverName=synapse.matrix.svc",
		"metrics.podMonitor.masters.tlsConfig.ca.secret.name=synapse-tls", "metrics.podMonitor.masters.tlsConfig.ca.secret.key=ca.crt"))
	if tls["scheme"] != "https" {
		t.Errorf("scheme = %v, want https", tls["scheme"])
	}
	if got := str(get(tls, "tlsConfig", "serverName")); got != "synapse.matrix.svc" {
		t.Errorf("tlsConfig.serverName = %q, want the value set", got)
	}
	if got := str(get(tls, "tlsConfig", "ca", "secret", "name")); got != "synapse-tls" {
		t.Errorf("tlsConfig.ca.secret.name = %q, want the value set", got)
	}
}

// scrapeSources returns the scrape sources of the rendered chart: the
// operator behind the ServiceMonitor, masters and workers behind their
// PodMonitors.
func scrapeSources(t *testing.T, objs []object) map[string]scrapeSource {
	t.Helper()
	out := map[string]scrapeSource{}
	sms := ofKind(objs, "ServiceMonitor")
	if len(sms) != 1 {
		t.Fatalf("%d ServiceMonitors, want the operator's", len(sms))
	}
	ep := mapOf(slice(get(sms[0], "spec", "endpoints"))[0])
	op := scrapeSource{name: "operator", targetLabels: map[string]bool{"service": true}, honorLabels: ep["honorLabels"] == true}
	for _, l := range podTargetLabels {
		op.targetLabels[l] = true
	}
	out["operator"] = op
	podsByRole := pods(t, objs)
	for _, pm := range ofKind(objs, "PodMonitor") {
		name := str(get(pm, "metadata", "name"))
		role := name[strings.LastIndex(name, "-")+1:]
		ep := mapOf(slice(get(pm, "spec", "podMetricsEndpoints"))[0])
		s := scrapeSource{name: strings.TrimSuffix(role, "s"), targetLabels: map[string]bool{}, honorLabels: ep["honorLabels"] == true}
		for _, l := range podTargetLabels {
			s.targetLabels[l] = true
		}
		for l := range relabelPod(t, ep, podsByRole[role]) {
			s.targetLabels[l] = true
		}
		out[s.name] = s
	}
	if len(out) != 3 {
		t.Fatalf("scrape sources %v, want operator, master, worker", keysOf(out))
	}
	return out
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
