package controllers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/probe"
)

var t0 = time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC)

func readySTS() *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Generation: 1},
		Status:     appsv1.StatefulSetStatus{ObservedGeneration: 1, Replicas: 1, ReadyReplicas: 1, UpdatedReplicas: 1, CurrentRevision: "r1", UpdateRevision: "r1"},
	}
}

func reachable() probe.Snapshot {
	return probe.Snapshot{
		MeasuredAt: t0, Reachable: true, ServerName: "matrix.example.org",
		Streams:              []probe.StreamPosition{{Name: "caches", Token: 7, RowsPerSecond: 0.2}, {Name: "events", Token: 42, OldestToken: 5, RowsPerSecond: 12.345}},
		Heartbeat:            probe.HeartbeatStats{Last: 1234567 * time.Nanosecond, P50: time.Millisecond, P99: 2 * time.Millisecond, Max: 3 * time.Millisecond, Samples: 4},
		ConnectionsAvailable: true,
		Connections:          []probe.Connection{{Name: "w1-a", RemoteAddr: "10.0.0.1:5555"}},
	}
}

func cond(conds []metav1.Condition, t string) metav1.Condition {
	c := meta.FindStatusCondition(conds, t)
	if c == nil {
		return metav1.Condition{Type: t, Status: "missing"}
	}
	return *c
}

func TestMasterStatus(t *testing.T) {
	t.Parallel()
	type want struct{ status, reason string }
	tests := map[string]struct {
		obs       masterObservation
		snap      probe.Snapshot
		haveSnap  bool
		err       error
		ready     want
		available want
		degraded  want
		progress  want
	}{
		"ready": {
			obs: masterObservation{statefulSet: readySTS()}, snap: reachable(), haveSnap: true,
			ready: want{"True", replv1.ReasonMasterReady}, available: want{"True", replv1.ReasonPodReady},
			degraded: want{"False", replv1.ReasonAsExpected}, progress: want{"False", replv1.ReasonRolloutComplete},
		},
		"no StatefulSet yet": {
			ready: want{"False", replv1.ReasonPodNotReady}, available: want{"False", replv1.ReasonPodNotReady},
			degraded: want{"False", replv1.ReasonAsExpected}, progress: want{"True", replv1.ReasonRollingOut},
		},
		"pod ready, probe not reported": {
			obs:   masterObservation{statefulSet: readySTS()},
			ready: want{"False", replv1.ReasonProbePending}, available: want{"True", replv1.ReasonPodReady},
			degraded: want{"False", replv1.ReasonAsExpected}, progress: want{"False", replv1.ReasonRolloutComplete},
		},
		"wrong server name": {
			obs: masterObservation{statefulSet: readySTS()}, haveSnap: true,
			snap:  probe.Snapshot{MeasuredAt: t0, Error: fmt.Errorf("%w: got other", probe.ErrWrongServerName), ErrorMessage: "wrong server name: got other"},
			ready: want{"False", replv1.ReasonWrongServerName}, available: want{"True", replv1.ReasonPodReady},
			degraded: want{"True", replv1.ReasonWrongServerName}, progress: want{"False", replv1.ReasonRolloutComplete},
		},
		"protocol error": {
			obs: masterObservation{statefulSet: readySTS()}, haveSnap: true,
			snap:  probe.Snapshot{MeasuredAt: t0, Error: fmt.Errorf("%w: line too long", probe.ErrProtocol), ErrorMessage: "protocol error: line too long"},
			ready: want{"False", replv1.ReasonProtocolError}, available: want{"True", replv1.ReasonPodReady},
			degraded: want{"True", replv1.ReasonProtocolError}, progress: want{"False", replv1.ReasonRolloutComplete},
		},
		"unreachable": {
			obs: masterObservation{statefulSet: readySTS()}, haveSnap: true,
			snap:  probe.Snapshot{MeasuredAt: t0, Error: fmt.Errorf("%w: refused", probe.ErrUnreachable), ErrorMessage: "master unreachable: refused"},
			ready: want{"False", replv1.ReasonMasterUnreachable}, available: want{"True", replv1.ReasonPodReady},
			degraded: want{"True", replv1.ReasonMasterUnreachable}, progress: want{"False", replv1.ReasonRolloutComplete},
		},
		"connection table unreadable is degraded, not unready": {
			obs: masterObservation{statefulSet: readySTS()}, haveSnap: true,
			snap: func() probe.Snapshot {
				s := reachable()
				s.ConnectionsAvailable, s.Connections = false, nil
				s.Error = fmt.Errorf("%w: 500", probe.ErrHTTPUnreachable)
				s.ErrorMessage = s.Error.Error()
				return s
			}(),
			ready: want{"True", replv1.ReasonMasterReady}, available: want{"True", replv1.ReasonPodReady},
			degraded: want{"True", replv1.ReasonHTTPUnreachable}, progress: want{"False", replv1.ReasonRolloutComplete},
		},
		"stale heartbeat": {
			obs: masterObservation{statefulSet: readySTS()}, haveSnap: true,
			snap:  func() probe.Snapshot { s := reachable(); s.Heartbeat.Stale = true; return s }(),
			ready: want{"True", replv1.ReasonMasterReady}, available: want{"True", replv1.ReasonPodReady},
			degraded: want{"True", replv1.ReasonHeartbeatStale}, progress: want{"False", replv1.ReasonRolloutComplete},
		},
		"rolling": {
			obs: masterObservation{statefulSet: func() *appsv1.StatefulSet {
				s := readySTS()
				s.Status.UpdateRevision = "r2"
				return s
			}()}, snap: reachable(), haveSnap: true,
			ready: want{"True", replv1.ReasonMasterReady}, available: want{"True", replv1.ReasonPodReady},
			degraded: want{"False", replv1.ReasonAsExpected}, progress: want{"True", replv1.ReasonRollingOut},
		},
		"reconcile failed": {
			obs: masterObservation{statefulSet: readySTS()}, snap: reachable(), haveSnap: true, err: fmt.Errorf("update StatefulSet: boom"),
			ready: want{"True", replv1.ReasonMasterReady}, available: want{"True", replv1.ReasonPodReady},
			degraded: want{"True", replv1.ReasonReconcileFailed}, progress: want{"False", replv1.ReasonRolloutComplete},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := newMaster(func(m *replv1.ReplicationMaster) { m.Generation = 3 })
			st := MasterStatus(m, tc.obs, tc.snap, tc.haveSnap, tc.err)
			for typ, w := range map[string]want{replv1.ConditionReady: tc.ready, replv1.ConditionAvailable: tc.available, replv1.ConditionDegraded: tc.degraded, replv1.ConditionProgressing: tc.progress} {
				c := cond(st.Conditions, typ)
				if string(c.Status) != w.status || c.Reason != w.reason {
					t.Errorf("%s = %s/%s (%s), want %s/%s", typ, c.Status, c.Reason, c.Message, w.status, w.reason)
				}
				if c.ObservedGeneration != 3 {
					t.Errorf("%s observedGeneration = %d", typ, c.ObservedGeneration)
				}
			}
			wantGen := int64(3)
			if tc.err != nil {
				wantGen = 0
			}
			if st.ObservedGeneration != wantGen {
				t.Errorf("observedGeneration = %d, want %d", st.ObservedGeneration, wantGen)
			}
			if st.Endpoint != "m1.ns.svc:9092" || st.HTTPEndpoint != "http://m1.ns.svc:9093" {
				t.Errorf("endpoints = %s %s", st.Endpoint, st.HTTPEndpoint)
			}
		})
	}
}

func TestMasterStatusMeasurements(t *testing.T) {
	t.Parallel()
	st := MasterStatus(newMaster(), masterObservation{statefulSet: readySTS(), tokenSecret: "m1-publish-token"}, reachable(), true, nil)
	// The oldest token the master holds shows where the probe knows it.
	wantStreams := []replv1.StreamStatus{{Name: "caches", Token: 7, RowsPerSecond: "0.2"}, {Name: "events", Token: 42, OldestToken: ptr.To[int64](5), RowsPerSecond: "12.3"}}
	if diff := cmp.Diff(wantStreams, st.Streams); diff != "" || st.StreamCount != 2 {
		t.Errorf("streams (count %d, want 2) (-want +got):\n%s", st.StreamCount, diff)
	}
	if st.ConnectedWorkers != 1 {
		t.Errorf("connected workers = %d", st.ConnectedWorkers)
	}
	wantHeartbeat := &replv1.HeartbeatStatus{Last: "1.23ms", P50: "1ms", P99: "2ms", Max: "3ms"}
	if diff := cmp.Diff(wantHeartbeat, st.Heartbeat); diff != "" {
		t.Errorf("heartbeat (-want +got):\n%s", diff)
	}
	if st.PublishTokenSecret != "m1-publish-token" || st.LastProbeTime == nil || !st.LastProbeTime.Time.Equal(t0) {
		t.Errorf("secret %q probe time %v", st.PublishTokenSecret, st.LastProbeTime)
	}
}

func TestMasterConditionTransitionTimeKeptWhenUnchanged(t *testing.T) {
	t.Parallel()
	m := newMaster()
	first := MasterStatus(m, masterObservation{statefulSet: readySTS()}, reachable(), true, nil)
	m.Status = first
	before := cond(first.Conditions, replv1.ConditionReady).LastTransitionTime
	time.Sleep(1100 * time.Millisecond)
	second := MasterStatus(m, masterObservation{statefulSet: readySTS()}, reachable(), true, nil)
	if after := cond(second.Conditions, replv1.ConditionReady).LastTransitionTime; !after.Equal(&before) {
		t.Errorf("transition time moved from %v to %v without a transition", before, after)
	}
	if masterStatusSignificant(first, second) {
		t.Error("identical statuses called significant")
	}
}

func workerPod(name, ip string, ready bool) corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
		Status:     corev1.PodStatus{PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

// observe is a worker observation of pods at t0, with no reports.
func observe(pods ...corev1.Pod) WorkerObservation {
	return WorkerObservation{Pods: pods, Now: t0}
}

func conn(name, addr string, since time.Time, secondsBehind float64, tokensBehind int64) probe.Connection {
	return probe.Connection{Name: name, RemoteAddr: addr, Since: since, MaxSecondsBehind: secondsBehind,
		Streams: []probe.ConnectionStream{
			{Name: "events", Token: 40, TokensBehind: tokensBehind, SecondsBehind: secondsBehind},
			{Name: "caches", Token: 7},
		}}
}

func TestWorkerStatus(t *testing.T) {
	t.Parallel()
	type want struct{ status, reason string }
	snapWith := func(conns ...probe.Connection) probe.Snapshot {
		s := reachable()
		s.Connections = conns
		return s
	}
	tests := map[string]struct {
		master    *replv1.ReplicationMaster
		pods      []corev1.Pod
		snap      probe.Snapshot
		haveSnap  bool
		ready     want
		connected want
		lagging   want
		counts    string // ready connected maxLag
		worker    func(*replv1.ReplicationWorker)
		reports   map[string]WorkerReport
		message   string // in the Ready or Connected condition's message
	}{
		"master not found": {
			ready: want{"False", replv1.ReasonMasterNotFound}, connected: want{"False", replv1.ReasonMasterNotFound}, lagging: want{"Unknown", replv1.ReasonMasterNotFound},
			counts: "0/2 0/2 ",
		},
		"all connected by name": {
			master:   newMaster(),
			pods:     []corev1.Pod{workerPod("w1-a", "10.0.0.1", true), workerPod("w1-b", "10.0.0.2", true)},
			snap:     snapWith(conn("w1-a", "10.9.9.9:1", t0, 0.5, 3), conn("w1-b", "10.9.9.9:2", t0, 0.25, 1)),
			haveSnap: true,
			ready:    want{"True", replv1.ReasonAllReplicasReady}, connected: want{"True", replv1.ReasonAllConnected}, lagging: want{"False", replv1.ReasonLagWithinThreshold},
			counts: "2/2 2/2 500ms",
		},
		"matched by pod IP when the name differs": {
			master:   newMaster(),
			pods:     []corev1.Pod{workerPod("w1-a", "10.0.0.1", true), workerPod("w1-b", "10.0.0.2", true)},
			snap:     snapWith(conn("synapse.app.generic_worker", "10.0.0.1:40000", t0, 0, 0), conn("other", "10.0.0.2:40001", t0, 0, 0)),
			haveSnap: true,
			ready:    want{"True", replv1.ReasonAllReplicasReady}, connected: want{"True", replv1.ReasonAllConnected}, lagging: want{"False", replv1.ReasonLagWithinThreshold},
			counts: "2/2 2/2 0s",
		},
		"one ready pod not connected": {
			master:   newMaster(),
			pods:     []corev1.Pod{workerPod("w1-a", "10.0.0.1", true), workerPod("w1-b", "10.0.0.2", true)},
			snap:     snapWith(conn("w1-a", "10.0.0.1:1", t0, 0, 0)),
			haveSnap: true,
			ready:    want{"True", replv1.ReasonAllReplicasReady}, connected: want{"False", replv1.ReasonNotConnected}, lagging: want{"Unknown", replv1.ReasonLagUnknown},
			counts: "2/2 1/2 0s",
		},
		"lagging": {
			master:   newMaster(),
			pods:     []corev1.Pod{workerPod("w1-a", "10.0.0.1", true), workerPod("w1-b", "", false)},
			snap:     snapWith(conn("w1-a", "10.0.0.1:1", t0, 45.25, 900)),
			haveSnap: true,
			ready:    want{"False", replv1.ReasonReplicasNotReady}, connected: want{"False", replv1.ReasonNotConnected}, lagging: want{"True", replv1.ReasonLagAboveThreshold},
			counts: "1/2 1/2 45.25s",
		},
		"no connection table": {
			master: newMaster(),
			pods:   []corev1.Pod{workerPod("w1-a", "10.0.0.1", true)},
			ready:  want{"False", replv1.ReasonReplicasNotReady}, connected: want{"Unknown", replv1.ReasonConnectionsUnknown}, lagging: want{"Unknown", replv1.ReasonConnectionsUnknown},
			counts: "1/2 0/2 ",
		},
		// Issue 15 item 1: nothing ready, nothing connected is neither
		// connected nor "not lagging".
		"no pod ready or connected": {
			master:   newMaster(),
			pods:     []corev1.Pod{workerPod("w1-a", "10.0.0.1", false), workerPod("w1-b", "10.0.0.2", false)},
			snap:     snapWith(),
			haveSnap: true,
			ready:    want{"False", replv1.ReasonReplicasNotReady}, connected: want{"False", replv1.ReasonNotConnected}, lagging: want{"Unknown", replv1.ReasonLagUnknown},
			counts: "0/2 0/2 ",
		},
		"no pods at all": {
			master:   newMaster(),
			snap:     snapWith(),
			haveSnap: true,
			ready:    want{"False", replv1.ReasonReplicasNotReady}, connected: want{"False", replv1.ReasonNotConnected}, lagging: want{"Unknown", replv1.ReasonLagUnknown},
			counts: "0/2 0/2 ",
		},
		"the sink is unreachable: the worker says so": {
			master:   newMaster(),
			pods:     []corev1.Pod{workerPod("w1-a", "10.0.0.1", false)},
			reports:  map[string]WorkerReport{"w1-a": {State: "caught-up", Reason: "sink failing: sink unavailable: dial tcp: connection refused", Positions: map[string]int64{"events": 42}}},
			snap:     snapWith(),
			haveSnap: true,
			ready:    want{"False", replv1.ReasonReplicasNotReady}, connected: want{"False", replv1.ReasonNotConnected}, lagging: want{"Unknown", replv1.ReasonLagUnknown},
			counts:  "0/2 0/2 0s",
			message: "w1-a: sink failing: sink unavailable",
		},
		"a stream the master does not have": {
			worker:   func(w *replv1.ReplicationWorker) { w.Spec.Streams = []string{"events", "nosuch_stream"} },
			master:   newMaster(),
			pods:     []corev1.Pod{workerPod("w1-a", "10.0.0.1", false)},
			snap:     snapWith(),
			haveSnap: true,
			ready:    want{"False", replv1.ReasonUnknownStream}, connected: want{"False", replv1.ReasonUnknownStream}, lagging: want{"Unknown", replv1.ReasonLagUnknown},
			counts:  "0/2 0/2 ",
			message: "nosuch_stream",
		},
		"federation on a master without it": {
			worker:   func(w *replv1.ReplicationWorker) { w.Spec.Streams = []string{"federation"} },
			master:   newMaster(),
			snap:     snapWith(),
			haveSnap: true,
			ready:    want{"False", replv1.ReasonUnknownStream}, connected: want{"False", replv1.ReasonUnknownStream}, lagging: want{"Unknown", replv1.ReasonLagUnknown},
			counts:  "0/2 0/2 ",
			message: "federation",
		},
		"federation and a custom stream the master declares": {
			worker: func(w *replv1.ReplicationWorker) { w.Spec.Streams = []string{"federation", "audit"} },
			master: newMaster(func(m *replv1.ReplicationMaster) {
				m.Spec.Streams.Federation = true
				m.Spec.Streams.Custom = []replv1.CustomStream{{Name: "audit"}}
			}),
			pods:     []corev1.Pod{workerPod("w1-a", "10.0.0.1", true), workerPod("w1-b", "10.0.0.2", true)},
			snap:     snapWith(conn("w1-a", "10.0.0.1:1", t0, 0, 0), conn("w1-b", "10.0.0.2:1", t0, 0, 0)),
			haveSnap: true,
			ready:    want{"True", replv1.ReasonAllReplicasReady}, connected: want{"True", replv1.ReasonAllConnected}, lagging: want{"False", replv1.ReasonLagWithinThreshold},
			counts: "2/2 2/2 0s",
		},
		// Issue 15 item 3: with the master gone, READY still follows the
		// pods.
		"master not found, pods not ready": {
			pods:  []corev1.Pod{workerPod("w1-a", "10.0.0.1", false), workerPod("w1-b", "10.0.0.2", true)},
			ready: want{"False", replv1.ReasonMasterNotFound}, connected: want{"False", replv1.ReasonMasterNotFound}, lagging: want{"Unknown", replv1.ReasonMasterNotFound},
			counts: "1/2 0/2 ",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := newWorker()
			if tc.worker != nil {
				tc.worker(w)
			}
			obs := observe(tc.pods...)
			obs.Reports = tc.reports
			st := WorkerStatus(w, tc.master, obs, tc.snap, tc.haveSnap, nil)
			if msgs := cond(st.Conditions, replv1.ConditionReady).Message + " | " + cond(st.Conditions, replv1.ConditionConnected).Message; !strings.Contains(msgs, tc.message) {
				t.Errorf("messages %q lack %q", msgs, tc.message)
			}
			for typ, wnt := range map[string]want{replv1.ConditionReady: tc.ready, replv1.ConditionConnected: tc.connected, replv1.ConditionLagging: tc.lagging} {
				c := cond(st.Conditions, typ)
				if string(c.Status) != wnt.status || c.Reason != wnt.reason {
					t.Errorf("%s = %s/%s (%s), want %s/%s", typ, c.Status, c.Reason, c.Message, wnt.status, wnt.reason)
				}
			}
			if got := st.Ready + " " + st.Connected + " " + st.MaxLag; got != tc.counts {
				t.Errorf("ready/connected/maxLag = %q, want %q", got, tc.counts)
			}
		})
	}
}

func TestWorkerStatusPerPod(t *testing.T) {
	t.Parallel()
	older, newer := t0.Add(-time.Minute), t0
	snap := reachable()
	snap.Connections = []probe.Connection{
		conn("w1-a", "10.0.0.1:1", older, 9, 90),
		conn("w1-a", "10.0.0.1:2", newer, 1.5, 15), // a reconnect: the newest counts
	}
	st := WorkerStatus(newWorker(), newMaster(), observe(workerPod("w1-b", "10.0.0.2", false), workerPod("w1-a", "10.0.0.1", true)), snap, true, nil)
	// The worst first: the pod that is not ready.
	wantPods := []replv1.WorkerPodStatus{
		{Name: "w1-b", PodIP: "10.0.0.2", Reason: "no connection to the master"},
		{Name: "w1-a", PodIP: "10.0.0.1", Connected: true, Ready: true, ConnectedSince: &metav1.Time{Time: newer}, Streams: []replv1.WorkerStreamStatus{
			{Name: "caches", Token: 7, SecondsBehind: "0.000"},
			{Name: "events", Token: 40, TokensBehind: 15, SecondsBehind: "1.500"},
		}},
	}
	if diff := cmp.Diff(wantPods, st.Pods); diff != "" {
		t.Errorf("pods (-want +got):\n%s", diff)
	}
	if st.MaxTokensBehind != 15 || st.MaxLag != "1.5s" {
		t.Errorf("worst = %d %s", st.MaxTokensBehind, st.MaxLag)
	}
}

func TestWorkerStatusSignificance(t *testing.T) {
	t.Parallel()
	pods := []corev1.Pod{workerPod("w1-a", "10.0.0.1", true)}
	s1 := reachable()
	s1.Connections = []probe.Connection{conn("w1-a", "10.0.0.1:1", t0, 0.1, 1)}
	s2 := reachable()
	s2.MeasuredAt = t0.Add(3 * time.Second)
	s2.Connections = []probe.Connection{conn("w1-a", "10.0.0.1:1", t0, 0.3, 4)}
	w := newWorker()
	a := WorkerStatus(w, newMaster(), observe(pods...), s1, true, nil)
	w.Status = a
	b := WorkerStatus(w, newMaster(), observe(pods...), s2, true, nil)
	if workerStatusSignificant(a, b) {
		t.Error("a lag change alone was called significant")
	}
	s3 := reachable()
	s3.Connections = nil
	c := WorkerStatus(w, newMaster(), observe(pods...), s3, true, nil)
	if !workerStatusSignificant(a, c) {
		t.Error("a pod disconnecting was not called significant")
	}
}

func TestStatusLimiter(t *testing.T) {
	t.Parallel()
	now := t0
	l := newStatusLimiter(10*time.Second, func() time.Time { return now })
	k := types.NamespacedName{Namespace: "ns", Name: "x"}
	if ok, _ := l.allow(k); !ok {
		t.Fatal("first write refused")
	}
	l.wrote(k)
	now = now.Add(4 * time.Second)
	if ok, wait := l.allow(k); ok || wait != 6*time.Second {
		t.Errorf("allow after 4s = %v, wait %v", ok, wait)
	}
	now = now.Add(6 * time.Second)
	if ok, _ := l.allow(k); !ok {
		t.Error("write refused after the interval")
	}
	l.forget(k)
	if len(l.last) != 0 {
		t.Error("forget kept the entry")
	}
}

func TestMatchConnectionByIP(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		podIP, remote string
		match         bool
	}{
		{"10.0.0.1", "10.0.0.1:5", true},
		{"10.0.0.1", "10.0.0.2:5", false},
		{"fd00::1", "[fd00::1]:5", true},
		{"fd00::1", "[fd00:0:0::1]:5", true},
		{"fd00::1", "[fd00::2]:5", false},
		{"10.0.0.1", "[::ffff:10.0.0.1]:5", true}, // a dual-stack listener
		{"fd00::1", "fd00::1:5", false},           // not a host:port
	} {
		pod := workerPod("w1-a", c.podIP, true)
		got := matchConnection(&pod, []probe.Connection{conn("another-name", c.remote, t0, 0, 0)})
		if (got != nil) != c.match {
			t.Errorf("pod IP %s, connection from %s: matched %v, want %v", c.podIP, c.remote, got != nil, c.match)
		}
	}
}
