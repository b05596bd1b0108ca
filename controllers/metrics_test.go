package controllers

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"

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
	recordWorkerMetrics(w, WorkerStatus(w, m, readyDeploy(1), []corev1.Pod{workerPod("w1-a", "10.0.0.1", true)}, snap, true, nil))
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
	recordWorkerMetrics(w, WorkerStatus(w, nil, nil, nil, emptySnapshot, false, nil))
	if workerDesiredReplicas.DeleteLabelValues(wl...) {
		t.Error("series under the old master survived a masterRef change")
	}

	forgetWorkerMetrics("metrics-ns", "w1")
	forgetMasterMetrics("metrics-ns", "m1")
	if workerDesiredReplicas.DeleteLabelValues("metrics-ns", "w1", "m2") || masterReady.DeleteLabelValues(ml...) {
		t.Error("series survived forget")
	}
}
