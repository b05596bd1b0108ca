package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
)

// minimalMaster is the smallest master a user can write.
func minimalMaster(ns, name string) *replv1.ReplicationMaster {
	return &replv1.ReplicationMaster{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: replv1.ReplicationMasterSpec{
			ServerName: "matrix.example.org",
			Storage:    replv1.StorageSpec{Size: ptr.To(resource.MustParse("1Gi"))},
		},
	}
}

func minimalWorker(ns, name, master string) *replv1.ReplicationWorker {
	return &replv1.ReplicationWorker{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       replv1.ReplicationWorkerSpec{MasterRef: replv1.MasterReference{Name: master}},
	}
}

func TestAPIServerAppliesDefaults(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	m := minimalMaster(ns, "m")
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	s := m.Spec
	if s.ReplicationPort != 9092 || s.HTTPPort != 9093 {
		t.Errorf("ports = %d/%d", s.ReplicationPort, s.HTTPPort)
	}
	if s.KeepAlive.PingInterval == nil || s.KeepAlive.PingTimeout == nil || s.KeepAlive.PingInterval.Duration != 5*time.Second || s.KeepAlive.PingTimeout.Duration != 25*time.Second {
		t.Errorf("keep-alive = %+v", s.KeepAlive)
	}
	if s.Limits.MaxPendingCommands != 10000 || s.Limits.MaxLineLength != 16384 {
		t.Errorf("limits = %+v", s.Limits)
	}
	if !s.NetworkPolicy.IsEnabled() || s.NetworkPolicy.Enabled == nil {
		t.Errorf("network policy default = %v", s.NetworkPolicy.Enabled)
	}
	w := minimalWorker(ns, "w", "m")
	if err := k8s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	if ptr.Deref(w.Spec.Replicas, -1) != 1 || len(w.Spec.Streams) != 1 || w.Spec.Streams[0] != "ALL" || w.Spec.MaxLagSeconds != 30 {
		t.Errorf("worker defaults = %+v", w.Spec)
	}
}

func TestAPIServerRefusesInvalidResources(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	masters := map[string]struct {
		mutate func(*replv1.ReplicationMaster)
		want   string
	}{
		"custom stream shadows a standard stream": {
			mutate: func(m *replv1.ReplicationMaster) {
				m.Spec.Streams.Custom = []replv1.CustomStream{{Name: "events"}}
			},
			want: "must not reuse the name of a standard stream",
		},
		"custom stream name with capitals": {
			mutate: func(m *replv1.ReplicationMaster) { m.Spec.Streams.Custom = []replv1.CustomStream{{Name: "Audit"}} },
			want:   "spec.streams.custom[0].name",
		},
		"storage size missing": {
			mutate: func(m *replv1.ReplicationMaster) { m.Spec.Storage = replv1.StorageSpec{} },
			want:   "storage.size is required unless storage.ephemeral is true",
		},
		"storage class with ephemeral": {
			mutate: func(m *replv1.ReplicationMaster) {
				m.Spec.Storage = replv1.StorageSpec{Ephemeral: true, StorageClassName: ptr.To("fast")}
			},
			want: "storageClassName has no effect",
		},
		"same port twice": {
			mutate: func(m *replv1.ReplicationMaster) { m.Spec.ReplicationPort, m.Spec.HTTPPort = 9000, 9000 },
			want:   "replicationPort and httpPort must differ",
		},
		"ping timeout not above interval": {
			mutate: func(m *replv1.ReplicationMaster) {
				m.Spec.KeepAlive = replv1.KeepAliveSpec{PingInterval: &metav1.Duration{Duration: 10 * time.Second}, PingTimeout: &metav1.Duration{Duration: 10 * time.Second}}
			},
			want: "pingTimeout must be at least twice keepAlive.pingInterval",
		},
		"ping timeout under twice the interval": {
			mutate: func(m *replv1.ReplicationMaster) {
				m.Spec.KeepAlive = replv1.KeepAliveSpec{PingInterval: &metav1.Duration{Duration: 10 * time.Second}, PingTimeout: &metav1.Duration{Duration: 19 * time.Second}}
			},
			want: "pingTimeout must be at least twice keepAlive.pingInterval",
		},
		"millisecond keep-alive": {
			mutate: func(m *replv1.ReplicationMaster) {
				m.Spec.KeepAlive = replv1.KeepAliveSpec{PingInterval: &metav1.Duration{Duration: time.Millisecond}, PingTimeout: &metav1.Duration{Duration: 2 * time.Millisecond}}
			},
			want: "keepAlive.pingInterval must be at least 1s",
		},
		"zero ping interval": {
			mutate: func(m *replv1.ReplicationMaster) {
				m.Spec.KeepAlive.PingInterval = &metav1.Duration{}
			},
			want: "keepAlive.pingInterval must be at least 1s",
		},
		"zero ping timeout": {
			mutate: func(m *replv1.ReplicationMaster) {
				m.Spec.KeepAlive = replv1.KeepAliveSpec{PingInterval: &metav1.Duration{Duration: time.Second}, PingTimeout: &metav1.Duration{}}
			},
			want: "keepAlive.pingTimeout must be at least 2s",
		},
		"zero max age": {
			mutate: func(m *replv1.ReplicationMaster) { m.Spec.Retention.MaxAge = &metav1.Duration{} },
			want:   "retention.maxAge must be at least 1m",
		},
		"zero max age for one stream": {
			mutate: func(m *replv1.ReplicationMaster) {
				m.Spec.Retention.Streams = []replv1.StreamRetention{{Name: "events", MaxAge: &metav1.Duration{}}}
			},
			want: "retention.streams[].maxAge must be at least 1m",
		},
		"zero storage size": {
			mutate: func(m *replv1.ReplicationMaster) { m.Spec.Storage.Size = ptr.To(resource.MustParse("0")) },
			want:   "storage.size must be at least 64Mi",
		},
		"negative storage size": {
			mutate: func(m *replv1.ReplicationMaster) { m.Spec.Storage.Size = ptr.To(resource.MustParse("-1Gi")) },
			want:   "storage.size must be at least 64Mi",
		},
		"storage size of a few kilobytes": {
			mutate: func(m *replv1.ReplicationMaster) { m.Spec.Storage.Size = ptr.To(resource.MustParse("4Ki")) },
			want:   "storage.size must be at least 64Mi",
		},
		"retention for an undeclared stream": {
			mutate: func(m *replv1.ReplicationMaster) {
				m.Spec.Retention.Streams = []replv1.StreamRetention{{Name: "nosuch", MaxRows: ptr.To[int64](5)}}
			},
			want: "retention.streams names a stream the master does not publish",
		},
		"retention for federation without federation": {
			mutate: func(m *replv1.ReplicationMaster) {
				m.Spec.Retention.Streams = []replv1.StreamRetention{{Name: "federation", MaxRows: ptr.To[int64](5)}}
			},
			want: "retention.streams names a stream the master does not publish",
		},
		"server name with a space": {
			mutate: func(m *replv1.ReplicationMaster) { m.Spec.ServerName = "a b" },
			want:   "spec.serverName",
		},
		"line limit below 1024": {
			mutate: func(m *replv1.ReplicationMaster) { m.Spec.Limits.MaxLineLength = 100 },
			want:   "spec.limits.maxLineLength",
		},
	}
	for name, tc := range masters {
		t.Run("master/"+name, func(t *testing.T) {
			m := minimalMaster(ns, "bad")
			tc.mutate(m)
			expectInvalid(t, k8s.Create(ctx, m), tc.want)
		})
	}

	workers := map[string]struct {
		mutate func(*replv1.ReplicationWorker)
		want   string
	}{
		"ALL with named streams": {
			mutate: func(w *replv1.ReplicationWorker) { w.Spec.Streams = []string{"ALL", "events"} },
			want:   "ALL cannot be combined with named streams",
		},
		"sink with a custom command": {
			mutate: func(w *replv1.ReplicationWorker) { w.Spec.Command = []string{"/bin/x"}; w.Spec.Sink = "stdout" },
			want:   "cannot be combined with a custom command",
		},
		"unknown sink": {
			mutate: func(w *replv1.ReplicationWorker) { w.Spec.Sink = "kafka:topic" },
			want:   "spec.sink",
		},
		"negative replicas": {
			mutate: func(w *replv1.ReplicationWorker) { w.Spec.Replicas = ptr.To[int32](-1) },
			want:   "spec.replicas",
		},
		"bad stream name": {
			mutate: func(w *replv1.ReplicationWorker) { w.Spec.Streams = []string{"Events"} },
			want:   "spec.streams[0]",
		},
		"missing master name": {
			mutate: func(w *replv1.ReplicationWorker) { w.Spec.MasterRef.Name = "" },
			want:   "spec.masterRef.name",
		},
		"state size with ephemeral": {
			mutate: func(w *replv1.ReplicationWorker) {
				w.Spec.State = replv1.WorkerStateSpec{Ephemeral: true, Size: ptr.To(resource.MustParse("1Gi"))}
			},
			want: "state.size and state.storageClassName have no effect when state.ephemeral is true",
		},
		"unknown log change policy": {
			mutate: func(w *replv1.ReplicationWorker) { w.Spec.OnLogChange = "Ignore" },
			want:   "spec.onLogChange",
		},
	}
	for name, tc := range workers {
		t.Run("worker/"+name, func(t *testing.T) {
			w := minimalWorker(ns, "bad", "m")
			tc.mutate(w)
			expectInvalid(t, k8s.Create(ctx, w), tc.want)
		})
	}
}

func TestAPIServerRefusesImmutableChanges(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	m := minimalMaster(ns, "m")
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		mutate func(*replv1.ReplicationMaster)
		want   string
	}{
		"server name":     {func(m *replv1.ReplicationMaster) { m.Spec.ServerName = "other.example.org" }, "serverName is immutable"},
		"storage shrinks": {func(m *replv1.ReplicationMaster) { m.Spec.Storage.Size = ptr.To(resource.MustParse("512Mi")) }, "storage.size can only grow"},
		"storage made ephemeral": {func(m *replv1.ReplicationMaster) {
			m.Spec.Storage = replv1.StorageSpec{Ephemeral: true}
		}, "storage.ephemeral is immutable"},
		"storage class set": {func(m *replv1.ReplicationMaster) { m.Spec.Storage.StorageClassName = ptr.To("fast") }, "storage.storageClassName is immutable"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var live replv1.ReplicationMaster
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(m), &live); err != nil {
				t.Fatal(err)
			}
			tc.mutate(&live)
			expectInvalid(t, k8s.Update(ctx, &live), tc.want)
		})
	}
	// Mutable fields still change, storage size included when it grows
	// (written as a plain byte count, to compare quantities, not strings).
	var live replv1.ReplicationMaster
	if err := updateRetrying(ctx, client.ObjectKeyFromObject(m), &live, func() {
		live.Spec.Retention.MaxRows = ptr.To[int64](100)
		live.Spec.Storage.Size = ptr.To(resource.MustParse("2147483648"))
	}); err != nil {
		t.Errorf("a mutable change was refused: %v", err)
	}

	// A worker's state volume is a claim template: it cannot change
	// either, whether it was given or defaulted.
	w := minimalWorker(ns, "w", "m")
	if err := k8s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	workerTests := map[string]func(*replv1.ReplicationWorker){
		"state size":      func(w *replv1.ReplicationWorker) { w.Spec.State.Size = ptr.To(resource.MustParse("2Gi")) },
		"state ephemeral": func(w *replv1.ReplicationWorker) { w.Spec.State = replv1.WorkerStateSpec{Ephemeral: true} },
	}
	for name, mutate := range workerTests {
		t.Run("worker/"+name, func(t *testing.T) {
			var live replv1.ReplicationWorker
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(w), &live); err != nil {
				t.Fatal(err)
			}
			mutate(&live)
			expectInvalid(t, k8s.Update(ctx, &live), "state is immutable")
		})
	}
	var liveWorker replv1.ReplicationWorker
	if err := updateRetrying(ctx, client.ObjectKeyFromObject(w), &liveWorker, func() {
		liveWorker.Spec.OnLogChange = replv1.LogChangeResync
	}); err != nil {
		t.Errorf("a mutable worker change was refused: %v", err)
	}
}

func expectInvalid(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the API server accepted it; want an error containing %q", want)
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("error is not Invalid: %v", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err.Error(), want)
	}
}

// TestSamplesAreAccepted applies config/samples as a user would and checks
// the API server takes every object.
func TestSamplesAreAccepted(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	files, err := filepath.Glob(filepath.Join("..", "config", "samples", "replication_*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("samples: %v %v", files, err)
	}
	kinds := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		u.SetNamespace(ns)
		if err := k8s.Create(ctx, u); err != nil {
			t.Errorf("%s refused: %v", f, err)
		}
		kinds[u.GetKind()]++
	}
	if kinds["ReplicationMaster"] != 1 || kinds["ReplicationWorker"] != 2 {
		t.Errorf("samples hold %v; want a master and two workers", kinds)
	}
}

// TestPrinterColumnsAndShortNames checks what `kubectl get` shows: the
// columns and short names the issue asks for, served by the API server.
func TestPrinterColumnsAndShortNames(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	if err := k8s.Create(ctx, minimalMaster(ns, "cols")); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, minimalWorker(ns, "cols", "cols")); err != nil {
		t.Fatal(err)
	}
	httpClient, err := rest.HTTPClientFor(testCfg)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		resource  string
		columns   []string
		shortName string
	}{
		"master": {"replicationmasters", []string{"Name", "Ready", "Endpoint", "Active", "Standbys", "Streams", "Workers", "Heartbeat", "Age"}, "rmaster"},
		"worker": {"replicationworkers", []string{"Name", "Master", "Ready", "Connected", "Max Lag", "Age"}, "rworker"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			url := fmt.Sprintf("%s/apis/replication.tcprepl.io/v1alpha1/namespaces/%s/%s", strings.TrimSuffix(testCfg.Host, "/"), ns, tc.resource)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			var table metav1.Table
			if err := json.Unmarshal(body, &table); err != nil {
				t.Fatalf("HTTP %d: %v: %.300s", resp.StatusCode, err, body)
			}
			var got []string
			for _, c := range table.ColumnDefinitions {
				got = append(got, c.Name)
			}
			if strings.Join(got, ",") != strings.Join(tc.columns, ",") {
				t.Errorf("columns = %v, want %v", got, tc.columns)
			}
			if len(table.Rows) != 1 {
				t.Errorf("rows = %d", len(table.Rows))
			}

			crd := &unstructured.Unstructured{}
			crd.SetAPIVersion("apiextensions.k8s.io/v1")
			crd.SetKind("CustomResourceDefinition")
			if err := k8s.Get(ctx, client.ObjectKey{Name: tc.resource + ".replication.tcprepl.io"}, crd); err != nil {
				t.Fatal(err)
			}
			short, _, _ := unstructured.NestedStringSlice(crd.Object, "spec", "names", "shortNames")
			if len(short) != 1 || short[0] != tc.shortName {
				t.Errorf("short names = %v, want [%s]", short, tc.shortName)
			}
		})
	}
}
