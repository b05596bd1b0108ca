package controllers

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/probe"
)

// podLagValues reads the per-pod lag series of one worker as
// "pod/stream" -> [seconds, tokens].
func podLagValues(t *testing.T, namespace, worker string) map[string][2]float64 {
	t.Helper()
	out := map[string][2]float64{}
	for i, g := range []*prometheus.GaugeVec{workerPodLagSeconds, workerPodLagTokens} {
		ch := make(chan prometheus.Metric, 1024)
		go func() { g.Collect(ch); close(ch) }()
		for metric := range ch {
			var pb dto.Metric
			if err := metric.Write(&pb); err != nil {
				t.Fatal(err)
			}
			l := map[string]string{}
			for _, lp := range pb.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if len(l) != 4 {
				t.Errorf("series labels %v, want namespace, worker, pod, stream", l)
			}
			if l["namespace"] != namespace || l["worker"] != worker {
				continue
			}
			k := l["pod"] + "/" + l["stream"]
			v := out[k]
			v[i] = pb.GetGauge().GetValue()
			out[k] = v
		}
	}
	return out
}

// TestWorkerPodLagMetrics: each pod's lag per stream is exported, from
// the master's view of its connection and from its own durable position,
// and a pod's series go as soon as the pod does (scaled down, terminating,
// master gone).
func TestWorkerPodLagMetrics(t *testing.T) {
	if err := RegisterMetrics(); err != nil {
		t.Fatal(err)
	}
	const ns = "pod-lag-ns"
	m := newMaster(func(m *replv1.ReplicationMaster) { m.Namespace = ns })
	w := newWorker(func(w *replv1.ReplicationWorker) { w.Namespace = ns })
	snap := reachable() // events at 42, caches at 7
	snap.Connections = []probe.Connection{conn("w1-a", "10.0.0.1:1", t0, 7.5, 10), conn("w1-b", "10.0.0.2:1", t0, 0, 0)}
	podA, podB := workerPod("w1-a", "10.0.0.1", true), workerPod("w1-b", "10.0.0.2", true)
	terminating := podB
	terminating.DeletionTimestamp = &metav1.Time{Time: t0}
	// Pod b's own durable position on events is 30: 12 behind, whatever
	// the master sent it.
	reports := map[string]WorkerReport{"w1-b": {Ready: true, Positions: map[string]int64{"events": 30}}}

	tests := []struct {
		name   string
		master *replv1.ReplicationMaster
		obs    WorkerObservation
		want   map[string][2]float64
	}{
		{
			name: "two connected pods", master: m,
			obs: WorkerObservation{Pods: []corev1.Pod{podA, podB}, Now: t0, Reports: reports},
			want: map[string][2]float64{
				"w1-a/events": {7.5, 10}, "w1-a/caches": {0, 0},
				"w1-b/events": {0, 12}, "w1-b/caches": {0, 0},
			},
		},
		{
			name: "pod b scaled away", master: m,
			obs:  WorkerObservation{Pods: []corev1.Pod{podA}, Now: t0},
			want: map[string][2]float64{"w1-a/events": {7.5, 10}, "w1-a/caches": {0, 0}},
		},
		{
			name: "pod b back, then terminating", master: m,
			obs:  WorkerObservation{Pods: []corev1.Pod{podA, terminating}, Now: t0},
			want: map[string][2]float64{"w1-a/events": {7.5, 10}, "w1-a/caches": {0, 0}},
		},
		{
			name: "master gone", master: nil,
			obs:  WorkerObservation{Pods: []corev1.Pod{podA, podB}, Now: t0},
			want: map[string][2]float64{},
		},
	}
	// Pod b's series exist between the steps that drop them, so each
	// deletion is a deletion.
	for _, tc := range tests {
		_, before := workerStatus(w, m, WorkerObservation{Pods: []corev1.Pod{podA, podB}, Now: t0}, snap, true, nil)
		recordWorkerPodLags(ns, w.Name, before)
		if got := len(podLagValues(t, ns, w.Name)); got != 4 {
			t.Fatalf("%s: %d series before the step, want 4", tc.name, got)
		}
		_, lags := workerStatus(w, tc.master, tc.obs, snap, true, nil)
		recordWorkerPodLags(ns, w.Name, lags)
		if diff := cmp.Diff(tc.want, podLagValues(t, ns, w.Name)); diff != "" {
			t.Errorf("%s: per-pod lag series (-want +got):\n%s", tc.name, diff)
		}
	}
	forgetWorkerMetrics(ns, w.Name)
	if got := podLagValues(t, ns, w.Name); len(got) != 0 {
		t.Errorf("series survived forget: %v", got)
	}
}

// TestWorkerPodLagMetricsAtScale: a thousand pods on the streams of the
// master give one series per pod and stream, and all of them go with the
// worker.
func TestWorkerPodLagMetricsAtScale(t *testing.T) {
	if err := RegisterMetrics(); err != nil {
		t.Fatal(err)
	}
	const ns, pods = "pod-lag-scale-ns", 1000
	m := newMaster(func(m *replv1.ReplicationMaster) { m.Namespace = ns })
	w := newWorker(func(w *replv1.ReplicationWorker) { w.Namespace = ns; w.Spec.Replicas = ptr.To[int32](pods) })
	snap := reachable()
	obs := WorkerObservation{Now: t0, Reports: map[string]WorkerReport{}}
	for i := range pods {
		name, ip := fmt.Sprintf("w1-%d", i), fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)
		obs.Pods = append(obs.Pods, workerPod(name, ip, true))
		// Every reconnect gets a new id; the series do not follow it.
		for id := range 3 {
			c := conn(name, ip+":1", t0, float64(i), int64(i))
			c.ID = uint64(i*3 + id)
			snap.Connections = append(snap.Connections, c)
		}
	}
	st, lags := workerStatus(w, m, obs, snap, true, nil)
	recordWorkerPodLags(ns, w.Name, lags)
	if len(st.Pods) >= pods {
		t.Fatalf("status lists %d pods; the cap did not apply", len(st.Pods))
	}
	got := podLagValues(t, ns, w.Name)
	if len(got) != 2*pods {
		t.Fatalf("%d series, want %d (one per pod and stream)", len(got), 2*pods)
	}
	if v := got["w1-999/events"]; v != [2]float64{999, 999} {
		t.Errorf("w1-999/events = %v, want [999 999]", v)
	}
	forgetWorkerMetrics(ns, w.Name)
	if got := podLagValues(t, ns, w.Name); len(got) != 0 {
		t.Errorf("%d series survived forget", len(got))
	}
}

// TestDeletedWorkerPodLagsGoAway: reconciling a deleted worker drops its
// pods' series and leaves another worker's.
func TestDeletedWorkerPodLagsGoAway(t *testing.T) {
	if err := RegisterMetrics(); err != nil {
		t.Fatal(err)
	}
	const ns = "pod-lag-deleted-ns"
	m := newMaster(func(m *replv1.ReplicationMaster) { m.Namespace = ns })
	snap := reachable()
	snap.Connections = []probe.Connection{conn("w1-a", "10.0.0.1:1", t0, 7.5, 10)}
	for _, name := range []string{"w1", "kept"} {
		w := newWorker(func(w *replv1.ReplicationWorker) { w.Namespace = ns; w.Name = name })
		_, lags := workerStatus(w, m, observe(workerPod("w1-a", "10.0.0.1", true)), snap, true, nil)
		recordWorkerPodLags(ns, name, lags)
		if n := len(podLagValues(t, ns, name)); n != 2 {
			t.Fatalf("worker %s has %d pod lag series, want 2", name, n)
		}
	}
	r := &ReplicationWorkerReconciler{ReconcilerBase: ReconcilerBase{Client: fake.NewClientBuilder().WithScheme(NewScheme()).Build(), Scheme: NewScheme()}}
	r.setupStatusLimiter()
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "w1"}}); err != nil {
		t.Fatal(err)
	}
	if got := podLagValues(t, ns, "w1"); len(got) != 0 {
		t.Errorf("the deleted worker's pod lag series survived: %v", got)
	}
	if n := len(podLagValues(t, ns, "kept")); n != 2 {
		t.Errorf("the other worker has %d pod lag series, want 2", n)
	}
	forgetWorkerMetrics(ns, "kept")
}

// BenchmarkRecordWorkerPodLags: one reconcile's metric update for a worker
// of 1000 pods on 16 streams (32,000 series), all pods present again.
func BenchmarkRecordWorkerPodLags(b *testing.B) {
	if err := RegisterMetrics(); err != nil {
		b.Fatal(err)
	}
	const ns, pods, streams = "pod-lag-bench-ns", 1000, 16
	lags := make([]podLag, pods)
	for i := range lags {
		lags[i].pod = fmt.Sprintf("w1-%d", i)
		for s := range streams {
			lags[i].streams = append(lags[i].streams, podStreamLag{stream: fmt.Sprintf("stream%02d", s), seconds: float64(i), tokens: int64(i)})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		recordWorkerPodLags(ns, "w1", lags)
	}
	b.StopTimer()
	forgetWorkerMetrics(ns, "w1")
}
