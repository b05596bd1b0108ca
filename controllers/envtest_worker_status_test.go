package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/probe"
	"github.com/tcprepl/tcprepl/internal/workerapi"
)

// workerReportServer is a worker's GET /v1/status on 127.0.0.1, answering
// what the test sets: the operator reads it the way it reads real worker
// pods.
type workerReportServer struct {
	mu     sync.Mutex
	report workerapi.Status
	port   int
}

func newWorkerReportServer(t *testing.T) *workerReportServer {
	t.Helper()
	s := &workerReportServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != workerapi.StatusPath {
			http.NotFound(rw, r)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		_ = json.NewEncoder(rw).Encode(s.report)
	}))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s.port, _ = strconv.Atoi(port)
	return s
}

func (s *workerReportServer) set(r workerapi.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.report = r
}

// TestWorkerStatusTellsTheTruth is issue 15 items 1 to 3 through the
// controller: unknown streams, pods that are neither ready nor connected,
// the worker's own reason, a worker stalled behind what the master sent,
// and READY following the pods after the master is deleted.
func TestWorkerStatusTellsTheTruth(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	fp := newFakeProbes()
	reports := newWorkerReportServer(t)
	startOperator(t, ns, OperatorOptions{Observer: fp, ProbeController: fp, WorkerReader: &HTTPWorkerReader{Port: reports.port}})

	m := minimalMaster(ns, "m5")
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	mkey := client.ObjectKeyFromObject(m)
	w := minimalWorker(ns, "w5", "m5")
	w.Spec.Replicas = ptr.To[int32](2)
	w.Spec.MaxLagSeconds = 5
	w.Spec.Streams = []string{"events", "nosuch_stream"}
	if err := k8s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	wkey := client.ObjectKeyFromObject(w)
	status := func() (replv1.ReplicationWorkerStatus, error) {
		var live replv1.ReplicationWorker
		err := k8s.Get(ctx, wkey, &live)
		return live.Status, err
	}

	eventually(t, waitFor, "UnknownStream", func() error {
		st, err := status()
		if err != nil {
			return err
		}
		if err := conditionIs(st.Conditions, replv1.ConditionConnected, "False", replv1.ReasonUnknownStream); err != nil {
			return err
		}
		return conditionIs(st.Conditions, replv1.ConditionReady, "False", replv1.ReasonUnknownStream)
	})
	var live replv1.ReplicationWorker
	if err := updateRetrying(ctx, wkey, &live, func() {
		live.Spec.Streams = []string{"events"}
	}); err != nil {
		t.Fatal(err)
	}

	// Stand in for the kubelet: two pods on 127.0.0.1, where the report
	// server answers, neither ready; the sink is unreachable.
	reports.set(workerapi.Status{State: "caught-up", Reason: "sink failing: sink unavailable: connection refused", Positions: map[string]int64{"events": 100}})
	snap := probe.Snapshot{MeasuredAt: time.Now(), Reachable: true, ConnectionsAvailable: true,
		Streams: []probe.StreamPosition{{Name: "events", Token: 100}}}
	fp.setSnapshot(mkey, snap)
	var pods []string
	for i := range 2 {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("w5-%d", i), Namespace: ns, Labels: specs.WorkerPodLabels(&live)},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "x"}}},
		}
		if err := k8s.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		pod.Status.PodIP = "127.0.0.1"
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
		if err := k8s.Status().Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, pod.Name)
	}
	eventually(t, waitFor, "nothing ready, nothing connected", func() error {
		st, err := status()
		if err != nil {
			return err
		}
		if st.Ready != "0/2" || st.Connected != "0/2" || len(st.Pods) != 2 || !strings.Contains(st.Pods[0].Reason, "sink failing") {
			return fmt.Errorf("status = %+v", st)
		}
		if err := conditionIs(st.Conditions, replv1.ConditionConnected, "False", replv1.ReasonNotConnected); err != nil {
			return err
		}
		if c := conditionIs(st.Conditions, replv1.ConditionLagging, "False", replv1.ReasonLagWithinThreshold); c == nil {
			return fmt.Errorf("Lagging=False for pods that are not connected")
		}
		return nil
	})

	// Both pods ready and connected; the master's table says they have
	// everything (the socket buffers took it), but the workers' durable
	// position stands at 100 while the master moves on.
	reports.set(workerapi.Status{State: "caught-up", Ready: true, Positions: map[string]int64{"events": 100}})
	for i, name := range pods {
		var p corev1.Pod
		if err := get(ctx, ns, name, &p); err != nil {
			t.Fatal(err)
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		if err := k8s.Status().Update(ctx, &p); err != nil {
			t.Fatal(err)
		}
		snap.Connections = append(snap.Connections, probe.Connection{Name: name, RemoteAddr: "127.0.0.1:" + strconv.Itoa(5000+i), Since: time.Now(),
			Streams: []probe.ConnectionStream{{Name: "events", Token: 5000}}})
	}
	snap.MeasuredAt = time.Now()
	snap.Streams = []probe.StreamPosition{{Name: "events", Token: 5000}}
	fp.setSnapshot(mkey, snap)
	eventually(t, waitFor, "connected and lagging by position", func() error {
		st, err := status()
		if err != nil {
			return err
		}
		if st.Ready != "2/2" || st.Connected != "2/2" || st.MaxTokensBehind != 4900 {
			return fmt.Errorf("status = %+v", st)
		}
		if err := conditionIs(st.Conditions, replv1.ConditionConnected, "True", replv1.ReasonAllConnected); err != nil {
			return err
		}
		// The master's token 5000 was first seen when the snapshot
		// above was set; the stalled workers fall behind by the clock.
		return conditionIs(st.Conditions, replv1.ConditionLagging, "True", replv1.ReasonLagAboveThreshold)
	})

	// The master goes and the pods stop being ready: READY follows the
	// pods, not a stale count.
	if err := k8s.Delete(ctx, m); err != nil {
		t.Fatal(err)
	}
	for _, name := range pods {
		var p corev1.Pod
		if err := get(ctx, ns, name, &p); err != nil {
			t.Fatal(err)
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
		if err := k8s.Status().Update(ctx, &p); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, waitFor, "READY follows the pods without a master", func() error {
		st, err := status()
		if err != nil {
			return err
		}
		if st.Ready != "0/2" || st.ReadyReplicas != 0 {
			return fmt.Errorf("ready %s (%d)", st.Ready, st.ReadyReplicas)
		}
		return conditionIs(st.Conditions, replv1.ConditionReady, "False", replv1.ReasonMasterNotFound)
	})
}
