package controllers

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/probe"
)

func TestMetricsFollowStatus(t *testing.T) {
	if err := RegisterMetrics(); err != nil {
		t.Fatal(err)
	}
	if err := RegisterMetrics(); err != nil {
		t.Fatalf("second registration: %v", err)
	}
	m := newMaster(func(m *replv1.ReplicationMaster) { m.Namespace = "metrics-ns" })
	recordMasterMetrics(m, MasterStatus(m, masterObservation{statefulSet: readySTS()}, reachable(), true, nil))
	ml := []string{"metrics-ns", "m1"}
	for name, c := range map[string]struct {
		got, want float64
	}{
		"tcprepl_operator_master_ready":                    {testutil.ToFloat64(masterReady.WithLabelValues(ml...)), 1},
		"tcprepl_operator_master_stream_position{events}":  {testutil.ToFloat64(masterStreamPosition.WithLabelValues("metrics-ns", "m1", "events")), 42},
		"tcprepl_operator_master_connected_workers":        {testutil.ToFloat64(masterConnectedWorkers.WithLabelValues(ml...)), 1},
		"tcprepl_operator_master_heartbeat_seconds (x1e5)": {float64(int(testutil.ToFloat64(masterHeartbeatSeconds.WithLabelValues(ml...))*1e5 + 0.5)), 123},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", name, c.got, c.want)
		}
	}

	w := newWorker(func(w *replv1.ReplicationWorker) { w.Namespace = "metrics-ns"; w.Spec.MaxLagSeconds = 5 })
	snap := reachable()
	snap.Connections = []probe.Connection{conn("w1-a", "10.0.0.1:1", t0, 7.5, 10)}
	recordWorkerMetrics(w, WorkerStatus(w, m, observe(workerPod("w1-a", "10.0.0.1", true)), snap, true, nil))
	wl := []string{"metrics-ns", "w1", "m1"}
	for name, c := range map[string]struct {
		got, want float64
	}{
		"tcprepl_operator_worker_max_lag_seconds":    {testutil.ToFloat64(workerMaxLagSeconds.WithLabelValues(wl...)), 7.5},
		"tcprepl_operator_worker_lagging":            {testutil.ToFloat64(workerLagging.WithLabelValues(wl...)), 1},
		"tcprepl_operator_worker_connected_replicas": {testutil.ToFloat64(workerConnectedReplicas.WithLabelValues(wl...)), 1},
		"tcprepl_operator_worker_ready_replicas":     {testutil.ToFloat64(workerReadyReplicas.WithLabelValues(wl...)), 1},
		"tcprepl_operator_worker_desired_replicas":   {testutil.ToFloat64(workerDesiredReplicas.WithLabelValues(wl...)), 2},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", name, c.got, c.want)
		}
	}

	// A masterRef change moves the series; nothing stays under the old
	// master.
	w.Spec.MasterRef.Name = "m2"
	recordWorkerMetrics(w, WorkerStatus(w, nil, observe(), emptySnapshot, false, nil))
	if workerDesiredReplicas.DeleteLabelValues(wl...) {
		t.Error("series under the old master survived a masterRef change")
	}

	forgetWorkerMetrics("metrics-ns", "w1")
	forgetMasterMetrics("metrics-ns", "m1")
	if workerDesiredReplicas.DeleteLabelValues("metrics-ns", "w1", "m2") || masterReady.DeleteLabelValues(ml...) {
		t.Error("series survived forget")
	}
}

// TestDeletedWorkerMetricsGoAway reconciles a ReplicationWorker that no
// longer exists, after its series were published: every series of that
// worker goes, and another worker's stay.
func TestDeletedWorkerMetricsGoAway(t *testing.T) {
	if err := RegisterMetrics(); err != nil {
		t.Fatal(err)
	}
	const ns = "deleted-worker-ns"
	m := newMaster(func(m *replv1.ReplicationMaster) { m.Namespace = ns })
	snap := reachable()
	snap.Connections = []probe.Connection{conn("w1-a", "10.0.0.1:1", t0, 7.5, 10)}
	for _, name := range []string{"w1", "kept"} {
		w := newWorker(func(w *replv1.ReplicationWorker) { w.Namespace = ns; w.Name = name })
		recordWorkerMetrics(w, WorkerStatus(w, m, observe(workerPod("w1-a", "10.0.0.1", true)), snap, true, nil))
	}
	gauges := map[string]*prometheus.GaugeVec{
		"desired_replicas": workerDesiredReplicas, "ready_replicas": workerReadyReplicas, "connected_replicas": workerConnectedReplicas,
		"max_lag_seconds": workerMaxLagSeconds, "lagging": workerLagging,
	}
	for name, g := range gauges {
		if n := seriesOf(t, g, ns, "w1"); n != 1 {
			t.Fatalf("before the deletion %s has %d series of the worker, want 1", name, n)
		}
	}

	r := &ReplicationWorkerReconciler{ReconcilerBase: ReconcilerBase{Client: fake.NewClientBuilder().WithScheme(NewScheme()).Build(), Scheme: NewScheme()}}
	r.setupStatusLimiter()
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "w1"}}); err != nil {
		t.Fatal(err)
	}
	for name, g := range gauges {
		if n := seriesOf(t, g, ns, "w1"); n != 0 {
			t.Errorf("%s still has %d series of the deleted worker", name, n)
		}
		if n := seriesOf(t, g, ns, "kept"); n != 1 {
			t.Errorf("%s has %d series of the other worker, want 1", name, n)
		}
	}
	forgetWorkerMetrics(ns, "kept")
}

// seriesOf counts a gauge's series labelled with the worker.
func seriesOf(t *testing.T, g *prometheus.GaugeVec, namespace, worker string) int {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	go func() { g.Collect(ch); close(ch) }()
	n := 0
	for metric := range ch {
		var pb dto.Metric
		if err := metric.Write(&pb); err != nil {
			t.Fatal(err)
		}
		labels := map[string]string{}
		for _, l := range pb.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["namespace"] == namespace && labels["worker"] == worker {
			n++
		}
	}
	return n
}
