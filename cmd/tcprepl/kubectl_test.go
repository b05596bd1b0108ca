package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers"
	"github.com/tcprepl/tcprepl/internal/probe"
)

// kubectlNow is the fake clock of the plugin's tests.
var kubectlNow = time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)

const testNS = "demo"

func testMaster() *replv1.ReplicationMaster {
	return &replv1.ReplicationMaster{
		ObjectMeta: metav1.ObjectMeta{Name: "synapse", Namespace: testNS, Generation: 2},
		Spec: replv1.ReplicationMasterSpec{
			ServerName: "matrix.example.org", ReplicationPort: 9092, HTTPPort: 9093,
			Storage: replv1.StorageSpec{Size: ptr.To(resource.MustParse("1Gi"))},
		},
		Status: replv1.ReplicationMasterStatus{
			ObservedGeneration: 2,
			Endpoint:           "synapse.demo.svc:9092",
			HTTPEndpoint:       "http://synapse.demo.svc:9093",
			PublishTokenSecret: "synapse-publish-token",
			LogID:              "log-1234",
			ConnectedWorkers:   2,
			Conditions: []metav1.Condition{
				{Type: replv1.ConditionReady, Status: metav1.ConditionTrue, Reason: replv1.ReasonMasterReady, Message: "the master pod is ready\nand the probe is connected", LastTransitionTime: metav1.NewTime(kubectlNow.Add(-5 * time.Minute))},
				{Type: replv1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: replv1.ReasonAsExpected, LastTransitionTime: metav1.NewTime(kubectlNow.Add(-5 * time.Minute))},
			},
			Streams: []replv1.StreamStatus{
				{Name: "audit_log", Token: 42, OldestToken: ptr.To(int64(7)), RowsPerSecond: "1.5"},
				{Name: "events", Token: 0},
			},
			Heartbeat:     &replv1.HeartbeatStatus{Last: "2.48ms", P50: "2.1ms", P99: "4ms", Max: "5ms"},
			LastProbeTime: &metav1.Time{Time: kubectlNow.Add(-3 * time.Second)},
		},
	}
}

func testPod(name, instance, component, ip string, ready bool, restarts int32) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, CreationTimestamp: metav1.NewTime(kubectlNow.Add(-2 * time.Hour)),
			Labels: map[string]string{"app.kubernetes.io/name": "tcprepl", "app.kubernetes.io/component": component, "app.kubernetes.io/instance": instance}},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: ip,
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: component, RestartCount: restarts}},
		},
	}
}

func testWorker(name, master string) *replv1.ReplicationWorker {
	return &replv1.ReplicationWorker{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS},
		Spec:       replv1.ReplicationWorkerSpec{MasterRef: replv1.MasterReference{Name: master}, Replicas: ptr.To(int32(2)), Streams: []string{"ALL"}},
		Status: replv1.ReplicationWorkerStatus{
			Ready: "2/2", Connected: "1/2", MaxLag: "3.2s", MaxTokensBehind: 17, ReadyReplicas: 2, ConnectedReplicas: 1, LaggingReplicas: 1,
			Conditions: []metav1.Condition{{Type: replv1.ConditionReady, Status: metav1.ConditionFalse, Reason: "ReplicasNotConnected", LastTransitionTime: metav1.NewTime(kubectlNow.Add(-time.Minute))}},
			Pods: []replv1.WorkerPodStatus{
				{Name: name + "-0", Connected: false, Ready: true, Reason: "sink failing: connection refused"},
				{Name: name + "-1", Connected: true, Ready: true, Streams: []replv1.WorkerStreamStatus{{Name: "audit_log", Token: 42, TokensBehind: 17, SecondsBehind: "3.200"}}},
			},
		},
	}
}

func testEvent(name, kind, obj, reason, msg string, ago time.Duration) *corev1.Event {
	return &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: name, Namespace: testNS},
		InvolvedObject: corev1.ObjectReference{Kind: kind, Name: obj, Namespace: testNS},
		Type:           corev1.EventTypeNormal, Reason: reason, Message: msg,
		EventTime: metav1.NewMicroTime(kubectlNow.Add(-ago)),
	}
}

// testObjects is a master with its pod, two workers of its own and one of
// another master, and Events about each.
func testObjects() []client.Object {
	return []client.Object{
		testMaster(),
		testPod("synapse-0", "synapse", "master", "127.5.0.3", true, 1),
		testPod("synapse-all-0", "synapse-all", "worker", "127.5.0.4", true, 0),
		testPod("synapse-all-1", "synapse-all", "worker", "127.5.0.5", true, 3),
		testWorker("synapse-all", "synapse"),
		testWorker("synapse-events", "synapse"),
		testWorker("elsewhere", "other-master"),
		testEvent("e1", "ReplicationMaster", "synapse", "MasterReady", "the master is ready", time.Minute),
		testEvent("e2", "Pod", "synapse-0", "Started", "started container master", 2*time.Minute),
		testEvent("e3", "ReplicationMaster", "other-master", "Unrelated", "not this master", 30*time.Second),
		testEvent("e4", "ReplicationWorker", "synapse-all", "ReplicasNotConnected", "1 of 2 pods is not connected", 10*time.Second),
	}
}

// fakeProbe records the config it was given and returns snap and err.
type fakeProbe struct {
	calls []probe.Config
	snap  probe.Snapshot
	err   error
}

func (f *fakeProbe) once(_ context.Context, cfg probe.Config, _ time.Duration) (probe.Snapshot, error) {
	f.calls = append(f.calls, cfg)
	return f.snap, f.err
}

func reachableSnapshot() probe.Snapshot {
	return probe.Snapshot{
		MeasuredAt: kubectlNow, Reachable: true, ServerName: "matrix.example.org", Address: "127.5.0.3:9092", LogID: "log-1234",
		Streams:              []probe.StreamPosition{{Name: "audit_log", Token: 42}},
		Heartbeat:            probe.HeartbeatStats{Last: 2 * time.Millisecond, Samples: 1, LastSeen: kubectlNow},
		ConnectionsAvailable: true,
		Connections:          []probe.Connection{{ID: 7, Name: "synapse-all-1", RemoteAddr: "127.5.0.5:40000", State: "streaming"}},
	}
}

func newTestDeps(c client.Client, fp *fakeProbe) kubectlDeps {
	return kubectlDeps{
		newClient: func(kf *kubeFlags) (client.Client, string, error) {
			ns := kf.namespace
			if ns == "" {
				ns = testNS
			}
			return c, ns, nil
		},
		now:       func() time.Time { return kubectlNow },
		probeOnce: fp.once,
		getenv:    func(string) string { return "" },
	}
}

// runKubectl runs `kubectl tcprepl ARGS` against c and returns its stdout.
func runKubectl(t *testing.T, c client.Client, fp *fakeProbe, args ...string) (string, error) {
	t.Helper()
	cmd := newKubectlCommand(newTestDeps(c, fp), true)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// squash collapses runs of spaces, so that a check does not depend on
// how wide tabwriter made a column.
func squash(s string) string { return spaces.ReplaceAllString(s, " ") }

var spaces = regexp.MustCompile(`[ \t]+`)

func fakeClient(objs ...client.Object) client.Client {
	return fake.NewClientBuilder().WithScheme(controllers.NewScheme()).WithObjects(objs...).Build()
}

func TestKubectlStatusMasterTable(t *testing.T) {
	fp := &fakeProbe{snap: reachableSnapshot()}
	out, err := runKubectl(t, fakeClient(testObjects()...), fp, "status", "synapse")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{
		"ReplicationMaster demo/synapse",
		"Ready:                   True",
		"Server name:             matrix.example.org",
		"Publish token:           Secret synapse-publish-token, key token",
		"Log id:                  log-1234",
		"PersistentVolumeClaim of 1Gi",
		"Heartbeat:               last 2.48ms, p50 2.1ms, p99 4ms, max 5ms",
		"Operator's last probe:   3s ago",
		// Conditions, the message on one line.
		"Ready     True    MasterReady  5m     the master pod is ready and the probe is connected",
		// Streams with the oldest token held.
		"audit_log  42     7            1.5",
		"events     0      -            -",
		// Pods: ready, restarts, age, the probed one marked.
		"synapse-0 (probed)  true   Running  1         120m  127.5.0.3",
		// Its workers, not the other master's.
		"synapse-all     2/2    1/2        3.2s     17             1             False (ReplicasNotConnected)",
		"synapse-events",
		// Events about the master and its pod, newest first.
		"60s ago     Normal  MasterReady  ReplicationMaster/synapse  the master is ready",
		"2m ago     Normal  Started      Pod/synapse-0              started container master",
		// The live probe, from the pod's IP.
		"Live probe of synapse-0 at 127.5.0.3:9092 (from the pod synapse-0 IP)",
		"  Master\n    Address:      127.5.0.3:9092",
		"synapse-all-1",
	} {
		if !strings.Contains(squash(out), squash(want)) {
			t.Errorf("status lacks %q", want)
		}
	}
	for _, notWant := range []string{"elsewhere", "not this master", "ReplicasNotConnected  ReplicationWorker", "Not reachable from here"} {
		if strings.Contains(squash(out), squash(notWant)) {
			t.Errorf("status shows %q, which is not about this master", notWant)
		}
	}
	if strings.Index(out, "MasterReady  ReplicationMaster") > strings.Index(out, "Started      Pod/synapse-0") {
		t.Errorf("events are not newest first")
	}
	if len(fp.calls) != 1 {
		t.Fatalf("probe ran %d times, want 1", len(fp.calls))
	}
	if c := fp.calls[0]; c.Address != "127.5.0.3:9092" || c.ServerName != "matrix.example.org" || c.HTTPURL != "http://127.5.0.3:9093" || c.Dial != nil {
		t.Errorf("probe config = %+v; want the pod IP, the server name and no TLS", c)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

func TestKubectlStatusMasterJSON(t *testing.T) {
	fp := &fakeProbe{snap: reachableSnapshot()}
	out, err := runKubectl(t, fakeClient(testObjects()...), fp, "status", "master", "synapse", "-o", "json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var got struct {
		Kind   string `json:"kind"`
		Master struct {
			Resource replv1.ReplicationMaster `json:"resource"`
			Pods     []podReport              `json:"pods"`
			Workers  []workerSummary          `json:"workers"`
			Events   []eventReport            `json:"events"`
			Probe    struct {
				Target   probeTarget `json:"target"`
				Snapshot struct {
					Reachable bool `json:"reachable"`
					Streams   []struct {
						Name  string `json:"name"`
						Token int64  `json:"token"`
					} `json:"streams"`
				} `json:"snapshot"`
				Error string `json:"error"`
			} `json:"probe"`
		} `json:"master"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	m := got.Master
	if got.Kind != kindMaster || m.Resource.Name != "synapse" || m.Resource.Status.Streams[0].Name != "audit_log" || *m.Resource.Status.Streams[0].OldestToken != 7 {
		t.Errorf("resource = %+v", m.Resource)
	}
	if len(m.Pods) != 1 || m.Pods[0].Name != "synapse-0" || !m.Pods[0].Ready || m.Pods[0].Restarts != 1 || !m.Pods[0].Probed {
		t.Errorf("pods = %+v", m.Pods)
	}
	if len(m.Workers) != 2 || m.Workers[0].Name != "synapse-all" || m.Workers[0].MaxTokensBehind != 17 || m.Workers[1].Name != "synapse-events" {
		t.Errorf("workers = %+v", m.Workers)
	}
	if len(m.Events) != 2 || m.Events[0].Reason != "MasterReady" || m.Events[1].Object != "Pod/synapse-0" {
		t.Errorf("events = %+v", m.Events)
	}
	if p := m.Probe; p.Target.Address != "127.5.0.3:9092" || p.Target.Pod != "synapse-0" || !p.Snapshot.Reachable || len(p.Snapshot.Streams) != 1 || p.Snapshot.Streams[0].Token != 42 || p.Error != "" {
		t.Errorf("probe = %+v", p)
	}
}

func TestKubectlStatusProbe(t *testing.T) {
	unreachable := probe.Snapshot{MeasuredAt: kubectlNow, Address: "127.5.0.3:9092"}
	tests := map[string]struct {
		args  []string
		probe *fakeProbe
		// wantCalls is how often the probe runs.
		wantCalls int
		want      []string
		notWant   []string
	}{
		"unreachable in JSON": {
			args:      []string{"status", "synapse", "-o", "json"},
			probe:     &fakeProbe{snap: unreachable, err: fmt.Errorf("%w: connection refused", probe.ErrUnreachable)},
			wantCalls: 1,
			want:      []string{`"reachable": false`, `"error": "master unreachable: connection refused"`},
		},
		"unreachable is shown, not an error": {
			args:      []string{"status", "synapse"},
			probe:     &fakeProbe{snap: unreachable, err: fmt.Errorf("%w: dial tcp 127.5.0.3:9092: connection refused", probe.ErrUnreachable)},
			wantCalls: 1,
			want:      []string{"Status:       UNREACHABLE", "connection refused", "Use --probe-address HOST:PORT (e.g. through `kubectl port-forward pod/synapse-0`), or --no-probe."},
		},
		"a probe that cannot start says why": {
			args:      []string{"status", "synapse"},
			probe:     &fakeProbe{err: errors.New("probe: master address is bad")},
			wantCalls: 1,
			want:      []string{"Live probe of synapse-0 at 127.5.0.3:9092", "Not run: probe: master address is bad"},
		},
		"--no-probe": {
			args:      []string{"status", "synapse", "--no-probe"},
			probe:     &fakeProbe{snap: reachableSnapshot()},
			wantCalls: 0,
			want:      []string{"ReplicationMaster demo/synapse", "Events (newest first)"},
			notWant:   []string{"Live probe"},
		},
		"--probe-address": {
			args:      []string{"status", "synapse", "--probe-address", "127.0.0.1:19092"},
			probe:     &fakeProbe{snap: reachableSnapshot()},
			wantCalls: 1,
			want:      []string{"Live probe of synapse-0 at 127.0.0.1:19092 (from the --probe-address)"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := runKubectl(t, fakeClient(testObjects()...), tc.probe, tc.args...)
			if err != nil {
				t.Fatalf("status: %v\n%s", err, out)
			}
			if len(tc.probe.calls) != tc.wantCalls {
				t.Errorf("probe ran %d times, want %d", len(tc.probe.calls), tc.wantCalls)
			}
			for _, w := range tc.want {
				if !strings.Contains(squash(out), squash(w)) {
					t.Errorf("output lacks %q", w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(squash(out), squash(w)) {
					t.Errorf("output has %q", w)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

func TestKubectlStatusWorker(t *testing.T) {
	tests := map[string]struct {
		args    []string
		objs    []client.Object
		want    []string
		notWant []string
	}{
		"a name that is only a worker": {
			args: []string{"status", "synapse-all"},
			objs: testObjects(),
			want: []string{
				"ReplicationWorker demo/synapse-all",
				"Ready:                   False (ReplicasNotConnected)",
				"Master:                  synapse (Ready: True, synapse.demo.svc:9092)",
				"Replicas:                2 desired, 2 ready, 1 connected, 1 lagging",
				"Max lag:                 3.2s (17 tokens)",
				// Each pod: the API's readiness and restarts, the master's view.
				"synapse-all-0  true   false      0         120m  -                       sink failing: connection refused",
				"synapse-all-1  true   true       3         120m  audit_log:17(3.200s)    -",
				"10s ago    Normal  ReplicasNotConnected  ReplicationWorker/synapse-all  1 of 2 pods is not connected",
			},
			notWant: []string{"MasterReady", "Live probe"},
		},
		"an explicit kind": {
			args: []string{"status", "rworker", "synapse-events"},
			objs: testObjects(),
			want: []string{"ReplicationWorker demo/synapse-events", "Pods\n  None."},
		},
		"a worker whose master is gone": {
			args: []string{"status", "worker", "elsewhere"},
			objs: testObjects(),
			want: []string{"Master:                  other-master (DOES NOT EXIST in demo)"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fp := &fakeProbe{}
			out, err := runKubectl(t, fakeClient(tc.objs...), fp, tc.args...)
			if err != nil {
				t.Fatalf("status: %v\n%s", err, out)
			}
			if len(fp.calls) != 0 {
				t.Errorf("a worker's status probed the master")
			}
			for _, w := range tc.want {
				if !strings.Contains(squash(out), squash(w)) {
					t.Errorf("output lacks %q", w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(squash(out), squash(w)) {
					t.Errorf("output has %q", w)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

func TestKubectlStatusWorkerJSON(t *testing.T) {
	out, err := runKubectl(t, fakeClient(testObjects()...), &fakeProbe{}, "status", "synapse-all", "-o", "json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var got statusReport
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if got.Kind != kindWorker || got.Master != nil || got.Worker == nil {
		t.Fatalf("report = %+v", got)
	}
	w := got.Worker
	if w.Resource.Name != "synapse-all" || w.Master == nil || w.Master.Ready != "True" || len(w.Pods) != 2 || w.Pods[1].Restarts != 3 || len(w.Events) != 1 {
		t.Errorf("worker report = %+v", w)
	}
}

func TestKubectlStatusErrors(t *testing.T) {
	getFails := interceptor.Funcs{Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
		return apierrors.NewForbidden(schema.GroupResource{Group: "replication.tcprepl.io", Resource: "replicationmasters"}, "synapse", errors.New("no RBAC"))
	}}
	listFails := interceptor.Funcs{List: func(_ context.Context, _ client.WithWatch, list client.ObjectList, _ ...client.ListOption) error {
		if _, ok := list.(*corev1.EventList); ok {
			return errors.New("events unavailable")
		}
		return nil
	}}
	tests := map[string]struct {
		args    []string
		funcs   *interceptor.Funcs
		wantErr string
	}{
		"no such resource":            {args: []string{"status", "nothing"}, wantErr: "no ReplicationMaster or ReplicationWorker nothing in namespace demo"},
		"no such master":              {args: []string{"status", "master", "synapse-all"}, wantErr: "no ReplicationMaster synapse-all in namespace demo"},
		"no such worker":              {args: []string{"status", "worker", "synapse"}, wantErr: "no ReplicationWorker synapse in namespace demo"},
		"another namespace":           {args: []string{"status", "synapse", "-n", "elsewhere"}, wantErr: "in namespace elsewhere"},
		"unknown kind":                {args: []string{"status", "deployment", "synapse"}, wantErr: `unknown kind "deployment"`},
		"no name":                     {args: []string{"status"}, wantErr: "accepts between 1 and 2 arg(s)"},
		"bad output":                  {args: []string{"status", "synapse", "-o", "yaml"}, wantErr: "use table or json"},
		"bad probe wait":              {args: []string{"status", "synapse", "--probe-wait", "0s"}, wantErr: "--probe-wait must be a positive duration"},
		"the API refuses":             {args: []string{"status", "synapse"}, funcs: &getFails, wantErr: "read ReplicationMaster demo/synapse: replicationmasters.replication.tcprepl.io \"synapse\" is forbidden"},
		"events cannot be listed":     {args: []string{"status", "synapse", "--no-probe"}, funcs: &listFails, wantErr: "list events in demo: events unavailable"},
		"the API refuses the probe":   {args: []string{"probe", "synapse"}, funcs: &getFails, wantErr: "read ReplicationMaster demo/synapse"},
		"probe of a missing master":   {args: []string{"probe", "nothing"}, wantErr: "no ReplicationMaster nothing in namespace demo"},
		"probe with a bad address":    {args: []string{"probe", "synapse", "--probe-address", "nohost"}, wantErr: `--probe-address "nohost"`},
		"probe with a bad output":     {args: []string{"probe", "synapse", "-o", "wide"}, wantErr: "use table or json"},
		"probe with no name":          {args: []string{"probe"}, wantErr: "accepts 1 arg(s)"},
		"probe with a bad interval":   {args: []string{"probe", "synapse", "--interval", "0s"}, wantErr: "must be positive durations"},
		"probe with a missing CA":     {args: []string{"probe", "synapse", "--tls-ca-file", "/nonexistent/ca.pem"}, wantErr: "--tls-ca-file"},
		"status with a bad address":   {args: []string{"status", "synapse", "--probe-address", "nohost", "-o", "json"}, wantErr: ""},
		"status with a missing CA":    {args: []string{"status", "synapse", "--tls-ca-file", "/nonexistent/ca.pem"}, wantErr: ""},
		"no client from the flags":    {args: []string{"status", "synapse", "--context", "broken"}, wantErr: "no context broken"},
		"no client for the probe too": {args: []string{"probe", "synapse", "--context", "broken"}, wantErr: "no context broken"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := fake.NewClientBuilder().WithScheme(controllers.NewScheme()).WithObjects(testObjects()...)
			if tc.funcs != nil {
				b = b.WithInterceptorFuncs(*tc.funcs)
			}
			fp := &fakeProbe{snap: reachableSnapshot()}
			deps := newTestDeps(b.Build(), fp)
			inner := deps.newClient
			deps.newClient = func(kf *kubeFlags) (client.Client, string, error) {
				if kf.context == "broken" {
					return nil, "", errors.New("no context broken in the kubeconfig")
				}
				return inner(kf)
			}
			cmd := newKubectlCommand(deps, true)
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(tc.args)
			err := cmd.ExecuteContext(context.Background())
			if tc.wantErr == "" {
				// The probe's own failures are shown in status, not
				// returned, and the probe does not run.
				if err != nil {
					t.Fatalf("err = %v, want the failure shown in the output", err)
				}
				if len(fp.calls) != 0 || !strings.Contains(out.String(), "error") && !strings.Contains(out.String(), "Not run") {
					t.Fatalf("probe calls %d; output does not show the failure:\n%s", len(fp.calls), out.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q\n%s", err, tc.wantErr, out.String())
			}
		})
	}
}

func TestResolveProbeTarget(t *testing.T) {
	withAnnotations := testMaster()
	withAnnotations.Annotations = map[string]string{"tcprepl.io/probe-address": "127.9.0.1:9092", "tcprepl.io/probe-http-url": "http://127.9.0.1:9093"}
	terminating := testPod("synapse-0", "synapse", "master", "127.5.0.3", true, 0)
	terminating.DeletionTimestamp = &metav1.Time{Time: kubectlNow}
	terminating.Finalizers = []string{"test/keep"}
	tests := map[string]struct {
		master *replv1.ReplicationMaster
		pods   []client.Object
		flags  probeTargetFlags
		want   probeTarget
	}{
		"the pod's IP": {
			master: testMaster(), pods: []client.Object{testPod("synapse-0", "synapse", "master", "127.5.0.3", true, 0)},
			want: probeTarget{Address: "127.5.0.3:9092", HTTPURL: "http://127.5.0.3:9093", ServerName: "matrix.example.org", Pod: "synapse-0", Source: "pod synapse-0 IP"},
		},
		"no pod yet: the Service": {
			master: testMaster(),
			want:   probeTarget{Address: "synapse.demo.svc:9092", HTTPURL: "http://synapse.demo.svc:9093", ServerName: "matrix.example.org", Pod: "synapse-0", Source: "Service DNS name (the pod has no IP)"},
		},
		"a terminating pod: the Service": {
			master: testMaster(), pods: []client.Object{terminating},
			want: probeTarget{Address: "synapse.demo.svc:9092", HTTPURL: "http://synapse.demo.svc:9093", ServerName: "matrix.example.org", Pod: "synapse-0", Source: "Service DNS name (the pod has no IP)"},
		},
		"the master's probe annotations, as the operator": {
			master: withAnnotations, pods: []client.Object{testPod("synapse-0", "synapse", "master", "127.5.0.3", true, 0)},
			want: probeTarget{Address: "127.9.0.1:9092", HTTPURL: "http://127.9.0.1:9093", ServerName: "matrix.example.org", Pod: "synapse-0", Source: "annotation tcprepl.io/probe-address"},
		},
		"--probe-address, the HTTP port beside it": {
			master: withAnnotations, pods: []client.Object{testPod("synapse-0", "synapse", "master", "127.5.0.3", true, 0)},
			flags: probeTargetFlags{address: "localhost:19092"},
			want:  probeTarget{Address: "localhost:19092", HTTPURL: "http://localhost:9093", ServerName: "matrix.example.org", Pod: "synapse-0", Source: "--probe-address"},
		},
		"--probe-address and --probe-http-url": {
			master: testMaster(),
			flags:  probeTargetFlags{address: "localhost:19092", httpURL: "http://localhost:19093"},
			want:   probeTarget{Address: "localhost:19092", HTTPURL: "http://localhost:19093", ServerName: "matrix.example.org", Pod: "synapse-0", Source: "--probe-address"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := resolveProbeTarget(context.Background(), fakeClient(tc.pods...), tc.master, &tc.flags)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("target =\n %+v, want\n %+v", got, tc.want)
			}
		})
	}
}

func TestKubectlProbeTLSServerName(t *testing.T) {
	tests := map[string]struct {
		args []string
		want string
	}{
		"the Service's name by default": {args: []string{"--tls"}, want: "synapse.demo.svc"},
		"--tls-server-name":             {args: []string{"--tls", "--tls-server-name", "master.example.org"}, want: "master.example.org"},
		"no TLS":                        {want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var f probeTargetFlags
			fs := pflag.NewFlagSet("probe", pflag.ContinueOnError)
			f.addFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			tgt := probeTarget{Address: "127.5.0.3:9092", ServerName: "matrix.example.org"}
			cfg, err := f.probeConfig(testMaster(), &tgt, func(string) string { return "" }, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if tgt.TLSServerName != tc.want || (cfg.Dial != nil) != (tc.want != "") {
				t.Errorf("TLS server name %q (dial set %v), want %q", tgt.TLSServerName, cfg.Dial != nil, tc.want)
			}
		})
	}
}

func TestKubectlProbeCommand(t *testing.T) {
	tests := map[string]struct {
		args    []string
		probe   *fakeProbe
		wantErr string
		want    string
	}{
		"reachable, a table": {
			args: []string{"probe", "synapse"}, probe: &fakeProbe{snap: reachableSnapshot()},
			want: "Address:      127.5.0.3:9092",
		},
		"reachable, JSON": {
			args: []string{"probe", "synapse", "-o", "json"}, probe: &fakeProbe{snap: reachableSnapshot()},
			want: `"address": "127.5.0.3:9092"`,
		},
		"unreachable: shown, then exit 1 naming the master": {
			args:    []string{"probe", "synapse"},
			probe:   &fakeProbe{snap: probe.Snapshot{MeasuredAt: kubectlNow}, err: fmt.Errorf("%w: connection refused", probe.ErrUnreachable)},
			want:    "UNREACHABLE",
			wantErr: "probe of ReplicationMaster demo/synapse at 127.5.0.3:9092 (pod synapse-0 IP): master unreachable: connection refused",
		},
		"refused before probing": {
			args:    []string{"probe", "synapse"},
			probe:   &fakeProbe{err: errors.New("probe: bad config")},
			wantErr: "probe: bad config",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := runKubectl(t, fakeClient(testObjects()...), tc.probe, tc.args...)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if !strings.Contains(squash(out), squash(tc.want)) {
				t.Errorf("output lacks %q:\n%s", tc.want, out)
			}
			if len(tc.probe.calls) != 1 || tc.probe.calls[0].ServerName != "matrix.example.org" || tc.probe.calls[0].Address != "127.5.0.3:9092" {
				t.Errorf("probe calls = %+v", tc.probe.calls)
			}
		})
	}
}

func TestRootCommandFor(t *testing.T) {
	tests := map[string]struct {
		argv0    string
		wantPath string
	}{
		"kubectl-tcprepl on PATH":       {argv0: "/home/u/.local/bin/kubectl-tcprepl", wantPath: "kubectl tcprepl status"},
		"kubectl-tcprepl.exe (Windows)": {argv0: `kubectl-tcprepl.exe`, wantPath: "kubectl tcprepl status"},
		"tcprepl":                       {argv0: "/usr/local/bin/tcprepl", wantPath: "tcprepl kubectl status"},
		"another name":                  {argv0: "./tcprepl-dev", wantPath: "tcprepl kubectl status"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			root := rootCommandFor(tc.argv0)
			args := []string{"status"}
			if strings.HasPrefix(tc.wantPath, "tcprepl kubectl") {
				args = []string{"kubectl", "status"}
			}
			cmd, _, err := root.Find(args)
			if err != nil {
				t.Fatal(err)
			}
			if got := cmd.CommandPath(); got != tc.wantPath {
				t.Errorf("command path %q, want %q", got, tc.wantPath)
			}
		})
	}
}

// TestKubeFlagsClient loads a kubeconfig as kubectl does: --kubeconfig,
// --context and its namespace, -n over it.
func TestKubeFlagsClient(t *testing.T) {
	dir := t.TempDir()
	kc := dir + "/config"
	const config = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: t}
contexts:
- name: a
  context: {cluster: c, user: u, namespace: team-a}
- name: b
  context: {cluster: c, user: u}
current-context: a
`
	if err := os.WriteFile(kc, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		flags   kubeFlags
		wantNS  string
		wantErr string
	}{
		"the current context's namespace": {flags: kubeFlags{kubeconfig: kc}, wantNS: "team-a"},
		"--namespace":                     {flags: kubeFlags{kubeconfig: kc, namespace: "x"}, wantNS: "x"},
		"--context without a namespace":   {flags: kubeFlags{kubeconfig: kc, context: "b"}, wantNS: "default"},
		"an unknown --context":            {flags: kubeFlags{kubeconfig: kc, context: "nope"}, wantErr: "context was not found for specified context: nope"},
		"a missing kubeconfig":            {flags: kubeFlags{kubeconfig: dir + "/missing"}, wantErr: "missing"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, ns, err := tc.flags.client()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c == nil || ns != tc.wantNS {
				t.Errorf("namespace %q, want %q", ns, tc.wantNS)
			}
		})
	}
}
