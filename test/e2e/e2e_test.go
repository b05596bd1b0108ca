// Package e2e tests tcprepl the way a user meets it, on real Kubernetes
// parts: kube-apiserver, etcd and kube-controller-manager built from the Go
// module proxy, the project's test kubelet running pods as local processes,
// and the real helm and kubectl. It is skipped under -short and when the
// binaries are missing (unless TCPREPL_E2E_REQUIRED is set); `make test-e2e`
// builds them first.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tcprepl/tcprepl/test/cluster"
	"github.com/tcprepl/tcprepl/test/harness"
)

const (
	operatorNS = "tcprepl-system"
	release    = "tcprepl"
	ns         = "e2e"
	stream     = "audit_log" // the sample master's custom stream
)

// setup starts the cluster; tweaks adjust the harness options.
func setup(t *testing.T, tweaks ...func(*harness.Options)) (*harness.Env, context.Context) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: end-to-end (not in -short)")
	}
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tools, err := harness.FindTools(root)
	cluster.SkipOrFail(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	t.Cleanup(cancel)
	opts := harness.Options{RepoRoot: root, Tools: tools, Logf: t.Logf, KeepDir: os.Getenv("TCPREPL_KEEP_CLUSTER") != ""}
	for _, tw := range tweaks {
		tw(&opts)
	}
	env, err := harness.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpState(t, env)
		}
		if err := env.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return env, ctx
}

// dumpState logs what a failed run needs to be understood.
func dumpState(t *testing.T, env *harness.Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"get", "rmaster,rworker,srepl,statefulsets,deployments,pods,services", "-A", "-o", "wide"},
		{"get", "rmaster,rworker,srepl", "-A", "-o", "yaml"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
	} {
		out, err := env.Kubectl(ctx, args...)
		t.Logf("kubectl %s:\n%s%v", strings.Join(args, " "), out, errOrEmpty(err))
	}
	t.Logf("operator log (tail):\n%s", env.OperatorLogTail(60))
	logs, _ := filepath.Glob(filepath.Join(env.Kubelet.Dir(), "pods", "*", "*.log"))
	for _, p := range logs {
		lines, err := cluster.TailFile(p, 30)
		if err == nil {
			t.Logf("--- %s:\n%s", p, strings.Join(lines, "\n"))
		}
	}
	t.Logf("control plane:%s", env.Cluster.LogTails(15))
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// eventually polls f every 250ms until it returns nil, failing the test
// with f's last error after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < timeout {
		if err = f(); err == nil {
			d := time.Since(start)
			t.Logf("%s: after %s", what, d.Round(time.Millisecond))
			return d
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
	return 0
}

// The status shapes the test reads (api/v1alpha1), decoded from kubectl's
// JSON so that the test sees exactly what a user sees.
type condition struct {
	Type, Status, Reason, Message string
}

type masterStatus struct {
	Conditions       []condition `json:"conditions"`
	Endpoint         string      `json:"endpoint"`
	ConnectedWorkers int32       `json:"connectedWorkers"`
	Streams          []struct {
		Name  string `json:"name"`
		Token int64  `json:"token"`
	} `json:"streams"`
	Heartbeat *struct {
		Last string `json:"last"`
	} `json:"heartbeat"`
	LastProbeTime *metav1.Time `json:"lastProbeTime"`
}

type workerStatus struct {
	Conditions      []condition `json:"conditions"`
	Ready           string      `json:"ready"`
	Connected       string      `json:"connected"`
	MaxLag          string      `json:"maxLag"`
	MaxTokensBehind int64       `json:"maxTokensBehind"`
	Pods            []struct {
		Name      string `json:"name"`
		Connected bool   `json:"connected"`
		Streams   []struct {
			Name         string `json:"name"`
			Token        int64  `json:"token"`
			TokensBehind int64  `json:"tokensBehind"`
		} `json:"streams"`
	} `json:"pods"`
}

func getStatus(ctx context.Context, env *harness.Env, kind, name string, into any) error {
	return getStatusIn(ctx, env, ns, kind, name, into)
}

func getStatusIn(ctx context.Context, env *harness.Env, namespace, kind, name string, into any) error {
	out, err := env.Kubectl(ctx, "get", kind, name, "--namespace", namespace, "-o", "jsonpath={.status}")
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) == "" {
		return fmt.Errorf("%s %s has no status yet", kind, name)
	}
	return json.Unmarshal([]byte(out), into)
}

func condTrue(conds []condition, typ string) error {
	for _, c := range conds {
		if c.Type == typ {
			if c.Status == "True" {
				return nil
			}
			return fmt.Errorf("%s=%s (%s: %s)", typ, c.Status, c.Reason, c.Message)
		}
	}
	return fmt.Errorf("no %s condition", typ)
}

func masterToken(st masterStatus, stream string) int64 {
	for _, s := range st.Streams {
		if s.Name == stream {
			return s.Token
		}
	}
	return -1
}

// workerCaughtUp checks that every pod of the worker is connected and at
// token on stream.
func workerCaughtUp(st workerStatus, pods int, stream string, token int64) error {
	if len(st.Pods) != pods {
		return fmt.Errorf("%d pods in status, want %d", len(st.Pods), pods)
	}
	for _, p := range st.Pods {
		if !p.Connected {
			return fmt.Errorf("pod %s not connected", p.Name)
		}
		found := false
		for _, s := range p.Streams {
			if s.Name == stream {
				found = true
				if s.Token != token || s.TokensBehind != 0 {
					return fmt.Errorf("pod %s at %s token %d (%d behind), want %d", p.Name, stream, s.Token, s.TokensBehind, token)
				}
			}
		}
		if !found {
			return fmt.Errorf("pod %s: no %s stream in status", p.Name, stream)
		}
	}
	return nil
}

// batch is one publish: the token the master gave it and its rows.
type batch struct {
	token int64
	rows  []any
}

// sinkLine is one line a worker's stdout sink writes.
type sinkLine struct {
	Stream string          `json:"stream"`
	Token  int64           `json:"token"`
	Index  int             `json:"index"`
	Count  int             `json:"count"`
	Row    json.RawMessage `json:"row"`
}

// sinkLines reads the lines for stream that a worker pod's stdout sink
// wrote (its container log, across restarts), in order.
func sinkLines(env *harness.Env, pod, container, stream string) ([]sinkLine, error) {
	f, err := os.Open(env.Kubelet.LogPath(ns, pod, container))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []sinkLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line sinkLine
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Stream != stream || line.Row == nil {
			continue // the worker's own log lines, other streams
		}
		out = append(out, line)
	}
	return out, sc.Err()
}

// checkSinks compares what every pod's sink holds for stream with what was
// published, row by row and in order: each batch's rows once, with the
// token the master gave them, at their index in a batch of their count.
// A lost, repeated, reordered, split or altered row fails. (The stdout sink
// is at least once across a crash that comes before the worker saved its
// position; the faults here strike when every position is saved, so each
// batch must be there exactly once.)
func checkSinks(t *testing.T, env *harness.Env, pods []string, published []batch, when string) {
	t.Helper()
	type want struct {
		token        int64
		index, count int
		row          any
	}
	var wants []want
	for _, b := range published {
		for i, row := range b.rows {
			wants = append(wants, want{token: b.token, index: i, count: len(b.rows), row: jsonValue(t, row)})
		}
	}
	for _, pod := range pods {
		got, err := sinkLines(env, pod, "worker", stream)
		if err != nil {
			t.Fatalf("%s: read the sink of %s: %v", when, pod, err)
		}
		for i := range max(len(got), len(wants)) {
			if i >= len(got) {
				t.Fatalf("%s: worker pod %s sink holds %d rows, want %d: row %d (token %d) and after are lost", when, pod, len(got), len(wants), i, wants[i].token)
			}
			if i >= len(wants) {
				t.Fatalf("%s: worker pod %s sink holds %d rows, want %d: extra row %d: token %d %s", when, pod, len(got), len(wants), i, got[i].Token, got[i].Row)
			}
			g, w := got[i], wants[i]
			var row any
			if err := json.Unmarshal(g.Row, &row); err != nil {
				t.Fatalf("%s: worker pod %s sink row %d: %v", when, pod, i, err)
			}
			if g.Token != w.token || g.Index != w.index || g.Count != w.count || !reflect.DeepEqual(row, w.row) {
				t.Fatalf("%s: worker pod %s sink row %d is token %d [%d/%d] %s; published token %d [%d/%d] %v", when, pod, i, g.Token, g.Index, g.Count, g.Row, w.token, w.index, w.count, w.row)
			}
		}
		t.Logf("%s: worker pod %s sink holds the %d rows of %d batches published, in order", when, pod, len(wants), len(published))
	}
}

// jsonValue is v as encoding/json decodes its encoding (numbers float64),
// to compare with a row decoded from a sink.
func jsonValue(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// publishBatches publishes n batches of two rows tagged with tag and
// returns them with their tokens.
func publishBatches(t *testing.T, ctx context.Context, env *harness.Env, master string, ports harness.MasterPorts, n int, tag string) []batch {
	t.Helper()
	var out []batch
	for i := range n {
		rows := []any{[]any{tag, i, "a"}, []any{tag, i, "b"}}
		tok, err := env.Publish(ctx, ns, master, ports, stream, rows)
		if err != nil {
			t.Fatalf("publish batch %d: %v", i, err)
		}
		if len(out) > 0 && tok <= out[len(out)-1].token {
			t.Fatalf("token %d after %d: tokens must increase", tok, out[len(out)-1].token)
		}
		out = append(out, batch{token: tok, rows: rows})
	}
	return out
}

func workerPods(ctx context.Context, t *testing.T, env *harness.Env, worker string) []string {
	t.Helper()
	out, err := env.Kubectl(ctx, "get", "pods", "--namespace", ns, "-l", "app.kubernetes.io/instance="+worker,
		"-o", `jsonpath={range .items[?(@.status.phase=="Running")]}{.metadata.name}{"\n"}{end}`)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}

func TestEndToEnd(t *testing.T) {
	env, ctx := setup(t)
	samples := filepath.Join(env.RepoRoot, "config", "samples")

	// The chart, as a user installs it: CRDs, ServiceAccount, RBAC, the
	// metrics Service. The operator then runs with that ServiceAccount's
	// token, so missing permissions in the chart fail this test.
	start := time.Now()
	if err := env.InstallChart(ctx, release, operatorNS); err != nil {
		t.Fatal(err)
	}
	t.Logf("helm install: %s", time.Since(start).Round(time.Millisecond))
	if err := env.StartOperator(ctx, operatorNS, release,
		"--status-interval=1s", "--probe-heartbeat-interval=1s", "--probe-poll-interval=250ms"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Kubectl(ctx, "create", "namespace", ns); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "default ServiceAccount in "+ns, func() error {
		_, err := env.Kubectl(ctx, "get", "serviceaccount", "default", "--namespace", ns)
		return err
	})

	// A master and two workers from config/samples.
	master, ports, err := env.ApplyMaster(ctx, ns, filepath.Join(samples, "replication_v1alpha1_replicationmaster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const worker = "synapse-all"
	if err := env.Apply(ctx, ns, filepath.Join(samples, "replication_v1alpha1_replicationworker_all.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "master Ready", func() error {
		var st masterStatus
		if err := getStatus(ctx, env, "rmaster", master, &st); err != nil {
			return err
		}
		return condTrue(st.Conditions, "Ready")
	})

	// The operator gives the masters and workers it creates its own image
	// (the chart's, which is the one `make image` built), and the kubelet
	// ran them from it.
	imageDigest := env.Tools.ImageDigest
	eventually(t, time.Minute, "master and worker pods run the built image", func() error {
		out, err := env.Kubectl(ctx, "get", "pods", "--namespace", ns,
			"-o", `jsonpath={range .items[*]}{.metadata.name}={.spec.containers[0].image}={.status.containerStatuses[0].imageID}{"\n"}{end}`)
		if err != nil {
			return err
		}
		lines := strings.Fields(out)
		if len(lines) < 3 {
			return fmt.Errorf("%d pods, want the master and 2 workers: %q", len(lines), out)
		}
		for _, l := range lines {
			f := strings.Split(l, "=")
			if len(f) != 3 || f[1] != env.Tools.Image || !strings.HasSuffix(f[2], "@"+imageDigest) {
				return fmt.Errorf("pod %s: image and imageID %q, want %s from %s", f[0], f[1:], env.Tools.Image, imageDigest)
			}
		}
		return nil
	})

	// The sample worker subscribes with REPLICATE ALL NOW on its first
	// start: a row published before it is connected is, by design, not
	// its to replicate. Wait until both pods are subscribed at the
	// master's current token.
	eventually(t, 3*time.Minute, "both worker pods subscribed before the first publish", func() error {
		var ms masterStatus
		if err := getStatus(ctx, env, "rmaster", master, &ms); err != nil {
			return err
		}
		cur := masterToken(ms, stream)
		if cur < 0 {
			return fmt.Errorf("no %s stream in the master's status yet", stream)
		}
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		return workerCaughtUp(st, 2, stream, cur)
	})

	// Publish, then see positions, heartbeat and lag in kubectl get.
	published := publishBatches(t, ctx, env, master, ports, 5, "first")
	last := published[len(published)-1].token
	eventually(t, 2*time.Minute, "master status shows the position and a heartbeat", func() error {
		var st masterStatus
		if err := getStatus(ctx, env, "rmaster", master, &st); err != nil {
			return err
		}
		if got := masterToken(st, stream); got != last {
			return fmt.Errorf("status %s token %d, want %d", stream, got, last)
		}
		if st.Heartbeat == nil || st.Heartbeat.Last == "" {
			return fmt.Errorf("no heartbeat in status")
		}
		return nil
	})
	eventually(t, 2*time.Minute, "both worker pods connected and caught up", func() error {
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		return workerCaughtUp(st, 2, stream, last)
	})
	pods := workerPods(ctx, t, env, worker)
	if len(pods) != 2 {
		t.Fatalf("worker pods: %v", pods)
	}
	checkSinks(t, env, pods, published, "before any fault")
	out, err := env.Kubectl(ctx, "get", "rmaster,rworker", "--namespace", ns, "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get rmaster,rworker -o wide:\n%s", out)
	for _, want := range []string{master, worker, "True"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get output lacks %q", want)
		}
	}

	// A SynapseReplication watches an emulated Synapse deployment; its
	// series are among those the alerts select.
	checkSynapseReplication(t, ctx, env)
	checkAlertMetrics(t, ctx, env, master, ports, worker)

	// Fault: a worker process is killed. The status says it is
	// disconnected, the kubelet restarts it, it resumes from its durable
	// position, and its sink has every batch, the ones published while it
	// was down included.
	victim := pods[0]
	pid, ok := env.Kubelet.ContainerPID(ns, victim, "worker")
	if !ok {
		t.Fatalf("no running worker process for %s", victim)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	sawDisconnected := false
	more := publishBatches(t, ctx, env, master, ports, 5, "while-down")
	last = more[len(more)-1].token
	published = append(published, more...)
	eventually(t, 2*time.Minute, "killed worker back and caught up", func() error {
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		for _, p := range st.Pods {
			if p.Name == victim && !p.Connected {
				sawDisconnected = true
			}
		}
		return workerCaughtUp(st, 2, stream, last)
	})
	if !sawDisconnected {
		// The restart can be faster than a status write; the restart count
		// proves the crash happened.
		out, _ := env.Kubectl(ctx, "get", "pod", victim, "--namespace", ns, "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
		if strings.TrimSpace(out) == "0" {
			t.Errorf("worker pod %s was never seen disconnected and did not restart", victim)
		}
		t.Logf("status never showed %s disconnected (restarted within a status interval)", victim)
	}
	checkSinks(t, env, pods, published, "after a worker was killed")

	// Fault: the master restarts (its pod is deleted; the StatefulSet makes
	// a new one on the same volume). Tokens continue after the last one.
	if _, err := env.Kubectl(ctx, "delete", "pod", master+"-0", "--namespace", ns, "--wait=true", "--timeout=60s"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "master Ready again after restart", func() error {
		out, err := env.Kubectl(ctx, "get", "pod", master+"-0", "--namespace", ns, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "True" {
			return fmt.Errorf("master pod Ready=%q", out)
		}
		return nil
	})
	// Until the new master serves, a publish fails at the connection and
	// stores nothing; each attempt carries its own rows, so a publish
	// stored but not acknowledged would show in the sinks as an extra batch.
	var afterRestart batch
	attempt := 0
	eventually(t, time.Minute, "publish after master restart", func() error {
		attempt++
		rows := []any{[]any{"after-restart", attempt, "a"}, []any{"after-restart", attempt, "b"}}
		tok, err := env.Publish(ctx, ns, master, ports, stream, rows)
		if err != nil {
			return err
		}
		afterRestart = batch{token: tok, rows: rows}
		return nil
	})
	if afterRestart.token <= last {
		t.Fatalf("token after master restart = %d, want > %d (tokens must survive restarts)", afterRestart.token, last)
	}
	published = append(published, afterRestart)
	more = publishBatches(t, ctx, env, master, ports, 3, "after-restart-more")
	published = append(published, more...)
	last = more[len(more)-1].token
	eventually(t, 2*time.Minute, "workers caught up after master restart", func() error {
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", worker, &st); err != nil {
			return err
		}
		return workerCaughtUp(st, 2, stream, last)
	})
	checkSinks(t, env, pods, published, "after the master restarted")

	// Deleting the master garbage-collects what the operator made for it.
	if _, err := env.Kubectl(ctx, "delete", "rmaster", master, "--namespace", ns, "--wait=true", "--timeout=60s"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "master's StatefulSet, Services, ConfigMap, Secret, NetworkPolicy and pod garbage-collected", func() error {
		out, err := env.Kubectl(ctx, "get", "statefulsets,services,configmaps,secrets,networkpolicies,pods", "--namespace", ns,
			"-l", "app.kubernetes.io/instance="+master, "-o", "name")
		if err != nil {
			return err
		}
		if s := strings.TrimSpace(out); s != "" {
			return fmt.Errorf("left: %s", strings.ReplaceAll(s, "\n", ", "))
		}
		return nil
	})
}

// metricValue finds the sample of name whose labels include want in the
// Prometheus text format.
func metricValue(body, name string, want map[string]string) (float64, bool) {
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `\{([^}]*)\} (\S+)$`)
	for _, line := range strings.Split(body, "\n") {
		mm := re.FindStringSubmatch(line)
		if mm == nil {
			continue
		}
		match := true
		for k, v := range want {
			if !strings.Contains(mm[1], k+`="`+v+`"`) {
				match = false
			}
		}
		if !match {
			continue
		}
		var f float64
		if _, err := fmt.Sscanf(mm[2], "%g", &f); err != nil {
			return 0, false
		}
		return f, true
	}
	return 0, false
}

func scrape(url string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestNamespaceScopedInstall installs the chart with rbac.scope=namespace
// and lets the chart's own operator Deployment run (two replicas, as pods of
// the test kubelet, authenticated as the chart's ServiceAccount): one takes
// the leader Lease and, with only a Role in namespace "team", runs a
// topology there and leaves a master in another namespace alone.
func TestNamespaceScopedInstall(t *testing.T) {
	env, ctx := setup(t)
	samples := filepath.Join(env.RepoRoot, "config", "samples")
	for _, n := range []string{"team", "other"} {
		if _, err := env.Kubectl(ctx, "create", "namespace", n); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.InstallChart(ctx, release, operatorNS, "rbac.scope=namespace", "rbac.watchNamespace=team",
		"operator.replicas=2", "operator.statusInterval=1s", "operator.heartbeatInterval=1s"); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl(ctx, "get", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/instance="+release, "-o", "name"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("namespace scope installed cluster-wide RBAC: %q %v", out, err)
	}
	start := time.Now()
	if err := env.UseChartOperator(ctx, release, operatorNS); err != nil {
		t.Fatal(err)
	}
	t.Logf("the chart's operator pods are ready and one leads after %s", time.Since(start).Round(time.Millisecond))
	if env.OperatorPods != 2 {
		t.Fatalf("%d operator pods running, want 2 (operator.replicas=2)", env.OperatorPods)
	}
	for _, n := range []string{"team", "other"} {
		eventually(t, time.Minute, "default ServiceAccount in "+n, func() error {
			_, err := env.Kubectl(ctx, "get", "serviceaccount", "default", "--namespace", n)
			return err
		})
	}
	master, ports, err := env.ApplyMaster(ctx, "team", filepath.Join(samples, "replication_v1alpha1_replicationmaster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Apply(ctx, "team", filepath.Join(samples, "replication_v1alpha1_replicationworker_all.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := env.ApplyMaster(ctx, "other", filepath.Join(samples, "replication_v1alpha1_replicationmaster.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "master in team Ready", func() error {
		var st masterStatus
		if err := getStatusIn(ctx, env, "team", "rmaster", master, &st); err != nil {
			return err
		}
		return condTrue(st.Conditions, "Ready")
	})
	tok, err := env.Publish(ctx, "team", master, ports, stream, []any{[]any{"scoped", 1}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "workers in team caught up", func() error {
		var st workerStatus
		if err := getStatusIn(ctx, env, "team", "rworker", "synapse-all", &st); err != nil {
			return err
		}
		return workerCaughtUp(st, 2, stream, tok)
	})
	// The pod's metrics port (the chart's metrics Service targets it).
	eventually(t, 30*time.Second, "the operator pod's /metrics shows the team master ready", func() error {
		body, err := scrape(env.OperatorMetricsURL)
		if err != nil {
			return err
		}
		if v, ok := metricValue(body, "tcprepl_operator_master_ready", map[string]string{"namespace": "team", "master": master}); !ok || v != 1 {
			return fmt.Errorf("tcprepl_operator_master_ready = %v (present %v)", v, ok)
		}
		if _, ok := metricValue(body, "tcprepl_operator_master_ready", map[string]string{"namespace": "other"}); ok {
			return fmt.Errorf("a series for namespace other")
		}
		return nil
	})
	out, err := env.Kubectl(ctx, "get", "statefulsets,services", "--namespace", "other", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "" {
		t.Errorf("the namespace-scoped operator acted in namespace other: %s", out)
	}
	if log := env.OperatorLogTail(400); strings.Contains(log, "forbidden") {
		t.Errorf("the operator was refused something with the namespace-scoped RBAC:\n%s", log)
	}
}
