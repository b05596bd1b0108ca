package controllers

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/probe"
	"github.com/tcprepl/tcprepl/internal/workerapi"
)

// TestWorkerStatusStalledWorkerLags is issue 15 item 2: the master's table
// says everything was sent (the socket buffers took it) while the worker's
// durable position stands still; the status must show the worker lagging
// by its position.
func TestWorkerStatusStalledWorkerLags(t *testing.T) {
	t.Parallel()
	key := types.NamespacedName{Namespace: "ns", Name: "m1"}
	h := newTokenHistory()
	early := reachable()
	early.MeasuredAt = t0.Add(-45 * time.Second)
	early.Streams = []probe.StreamPosition{{Name: "events", Token: 500}}
	h.record(key, early)
	now := reachable()
	now.Streams = []probe.StreamPosition{{Name: "events", Token: 1000}}
	h.record(key, now)
	now.Connections = []probe.Connection{{Name: "w1-a", RemoteAddr: "10.0.0.1:1", Since: t0,
		Streams: []probe.ConnectionStream{{Name: "events", Token: 1000}}}}

	w := newWorker(func(w *replv1.ReplicationWorker) { w.Spec.Replicas = ptr.To[int32](1) })
	obs := WorkerObservation{
		Pods:        []corev1.Pod{workerPod("w1-a", "10.0.0.1", true)},
		Reports:     map[string]WorkerReport{"w1-a": {State: "caught-up", Ready: true, Positions: map[string]int64{"events": 400}}},
		Now:         t0,
		BehindSince: func(s string, p int64) (time.Time, bool) { return h.behindSince(key, s, p) },
	}
	st := WorkerStatus(w, newMaster(), obs, now, true, nil)
	if c := cond(st.Conditions, replv1.ConditionLagging); c.Status != metav1.ConditionTrue || c.Reason != replv1.ReasonLagAboveThreshold {
		t.Errorf("Lagging = %s/%s (%s), want True/%s", c.Status, c.Reason, c.Message, replv1.ReasonLagAboveThreshold)
	}
	if st.MaxLag != "45s" || st.MaxTokensBehind != 600 || st.LaggingReplicas != 1 {
		t.Errorf("maxLag %q tokens %d lagging %d, want 45s 600 1", st.MaxLag, st.MaxTokensBehind, st.LaggingReplicas)
	}
	want := replv1.WorkerStreamStatus{Name: "events", Token: 1000, Position: ptr.To[int64](400), TokensBehind: 600, SecondsBehind: "45.000"}
	if len(st.Pods) != 1 {
		t.Fatalf("pods = %+v, want one", st.Pods)
	}
	if diff := cmp.Diff([]replv1.WorkerStreamStatus{want}, st.Pods[0].Streams); diff != "" {
		t.Errorf("streams (-want +got):\n%s", diff)
	}

	// The chart's TcpreplWorkerLagging alert reads these two series.
	w.Namespace = "stalled-ns"
	recordWorkerMetrics(w, st)
	defer forgetWorkerMetrics(w.Namespace, w.Name)
	wl := []string{w.Namespace, w.Name, w.Spec.MasterRef.Name}
	if lag, lagging := testutil.ToFloat64(workerMaxLagSeconds.WithLabelValues(wl...)), testutil.ToFloat64(workerLagging.WithLabelValues(wl...)); lag != 45 || lagging != 1 {
		t.Errorf("tcprepl_operator_worker_max_lag_seconds = %v, tcprepl_operator_worker_lagging = %v; want 45 and 1", lag, lagging)
	}

	// Caught up again: not lagging.
	obs.Reports["w1-a"] = WorkerReport{State: "caught-up", Ready: true, Positions: map[string]int64{"events": 1000}}
	st = WorkerStatus(w, newMaster(), obs, now, true, nil)
	if c := cond(st.Conditions, replv1.ConditionLagging); c.Status != metav1.ConditionFalse || st.MaxLag != "0s" {
		t.Errorf("caught up: Lagging = %s (%s), maxLag %q", c.Status, c.Message, st.MaxLag)
	}
}

func TestTokenHistory(t *testing.T) {
	t.Parallel()
	key := types.NamespacedName{Namespace: "ns", Name: "m"}
	snapAt := func(at time.Time, tok int64) probe.Snapshot {
		return probe.Snapshot{MeasuredAt: at, Streams: []probe.StreamPosition{{Name: "events", Token: tok}}}
	}
	tests := map[string]struct {
		seen     []probe.Snapshot
		position int64
		since    time.Time
		behind   bool
	}{
		"caught up":              {seen: []probe.Snapshot{snapAt(t0, 10)}, position: 10},
		"ahead of what was seen": {seen: []probe.Snapshot{snapAt(t0, 10)}, position: 11},
		"behind the first token after the position": {
			seen: []probe.Snapshot{snapAt(t0, 10), snapAt(t0.Add(time.Second), 20), snapAt(t0.Add(2*time.Second), 30)}, position: 15,
			since: t0.Add(time.Second), behind: true,
		},
		"an unchanged token keeps its first date": {
			seen: []probe.Snapshot{snapAt(t0, 10), snapAt(t0.Add(time.Second), 10)}, position: 5,
			since: t0, behind: true,
		},
		"a log reset forgets older dates": {
			seen: []probe.Snapshot{snapAt(t0, 100), snapAt(t0.Add(time.Second), 3)}, position: 1,
			since: t0.Add(time.Second), behind: true,
		},
		"no snapshot time, nothing recorded": {seen: []probe.Snapshot{{Streams: []probe.StreamPosition{{Name: "events", Token: 9}}}}, position: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newTokenHistory()
			for _, s := range tc.seen {
				h.record(key, s)
			}
			since, behind := h.behindSince(key, "events", tc.position)
			if behind != tc.behind || !since.Equal(tc.since) {
				t.Errorf("behindSince(%d) = %v %v, want %v %v", tc.position, since, behind, tc.since, tc.behind)
			}
		})
	}

	h := newTokenHistory()
	for i := range maxTokenHistory + 10 {
		h.record(key, snapAt(t0.Add(time.Duration(i)*time.Second), int64(i+1)))
	}
	// The oldest entries went: position 0 is dated by the oldest kept.
	if since, _ := h.behindSince(key, "events", 0); !since.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("capped history dates position 0 at %v", since)
	}
	h.forget(key)
	if _, behind := h.behindSince(key, "events", 0); behind {
		t.Error("history survived forget")
	}
}

// TestWorkerStatusSizeAtScale is issue 15 item 4: 1000 pods with 16 streams
// each must not make a status near etcd's object size limit.
func TestWorkerStatusSizeAtScale(t *testing.T) {
	t.Parallel()
	const pods, streams = 1000, 16
	w := newWorker(func(w *replv1.ReplicationWorker) { w.Spec.Replicas = ptr.To[int32](pods) })
	snap := reachable()
	snap.Streams = nil
	for s := range streams {
		snap.Streams = append(snap.Streams, probe.StreamPosition{Name: fmt.Sprintf("stream_%02d", s), Token: 1_000_000})
	}
	obs := WorkerObservation{Now: t0, Reports: map[string]WorkerReport{}}
	snap.Connections = nil
	for i := range pods {
		name := fmt.Sprintf("w1-%05d-with-a-long-generated-suffix", i)
		ip := fmt.Sprintf("10.%d.%d.%d", i/65536, (i/256)%256, i%256)
		obs.Pods = append(obs.Pods, workerPod(name, ip, i%10 != 0))
		if i%10 == 0 {
			obs.Reports[name] = WorkerReport{State: "connecting", Reason: "sink failing: " + strings.Repeat("x", 400)}
			continue
		}
		c := probe.Connection{Name: name, RemoteAddr: ip + ":40000", Since: t0}
		for s := range streams {
			c.Streams = append(c.Streams, probe.ConnectionStream{Name: fmt.Sprintf("stream_%02d", s), Token: 999_000, TokensBehind: int64(1000 + i), SecondsBehind: float64(i) / 10})
		}
		snap.Connections = append(snap.Connections, c)
	}
	st := WorkerStatus(w, newMaster(), obs, snap, true, nil)
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	// 64 KiB: a twentieth of etcd's 1.5 MiB, whatever the replica count.
	const bound = 64 << 10
	if len(b) > bound {
		t.Errorf("status of %d pods × %d streams is %d bytes, want at most %d", pods, streams, len(b), bound)
	}
	if len(st.Pods) != maxPodEntries || st.PodsOmitted != pods-maxPodEntries {
		t.Errorf("pods listed %d, omitted %d; want %d and %d", len(st.Pods), st.PodsOmitted, maxPodEntries, pods-maxPodEntries)
	}
	if st.ReadyReplicas != 900 || st.ConnectedReplicas != 900 || st.Ready != "900/1000" || st.Connected != "900/1000" {
		t.Errorf("counts: ready %d connected %d (%s %s)", st.ReadyReplicas, st.ConnectedReplicas, st.Ready, st.Connected)
	}
	// The worst first: the 100 unready pods fill the list.
	for _, p := range st.Pods {
		if p.Ready || !strings.HasPrefix(p.Reason, "sink failing: ") || len(p.Reason) > maxReasonLength {
			t.Errorf("listed pod %s (ready %v, reason %d bytes) is not among the worst", p.Name, p.Ready, len(p.Reason))
		}
	}
	t.Logf("status of %d pods × %d streams: %d bytes", pods, streams, len(b))
}

func TestWorkerStatusListsTheMostBehind(t *testing.T) {
	t.Parallel()
	w := newWorker(func(w *replv1.ReplicationWorker) { w.Spec.Replicas = ptr.To[int32](30) })
	snap := reachable()
	snap.Connections = nil
	var pods []corev1.Pod
	for i := range 30 {
		name := fmt.Sprintf("w1-%02d", i)
		pods = append(pods, workerPod(name, "", true))
		snap.Connections = append(snap.Connections, conn(name, "10.0.0.1:"+strconv.Itoa(1000+i), t0, float64(i), int64(i)))
	}
	st := WorkerStatus(w, newMaster(), observe(pods...), snap, true, nil)
	if len(st.Pods) != maxPodEntries || st.Pods[0].Name != "w1-29" || st.Pods[maxPodEntries-1].Name != "w1-10" || st.PodsOmitted != 10 {
		t.Errorf("listed %d pods from %s to %s, %d omitted; want w1-29 down to w1-10, 10 omitted", len(st.Pods), st.Pods[0].Name, st.Pods[len(st.Pods)-1].Name, st.PodsOmitted)
	}
}

func TestHTTPWorkerReader(t *testing.T) {
	t.Parallel()
	answer := func(status int, body string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			if r.URL.Path != workerapi.StatusPath {
				http.NotFound(rw, r)
				return
			}
			rw.WriteHeader(status)
			_, _ = rw.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	pod := func(name, ip string) corev1.Pod { return workerPod(name, ip, true) }
	tests := map[string]struct {
		server *httptest.Server
		pods   []corev1.Pod
		want   map[string]WorkerReport
	}{
		"reports": {
			server: answer(http.StatusOK, `{"state":"caught-up","ready":false,"reason":"sink failing: boom","positions":{"events":7}}`),
			pods:   []corev1.Pod{pod("a", "127.0.0.1"), pod("no-ip", "")},
			want:   map[string]WorkerReport{"a": {State: "caught-up", Reason: "sink failing: boom", Positions: map[string]int64{"events": 7}}},
		},
		"an error status is no report": {
			server: answer(http.StatusInternalServerError, `{}`),
			pods:   []corev1.Pod{pod("a", "127.0.0.1")},
			want:   map[string]WorkerReport{},
		},
		"garbage is no report": {
			server: answer(http.StatusOK, `not json`),
			pods:   []corev1.Pod{pod("a", "127.0.0.1")},
			want:   map[string]WorkerReport{},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, port, err := net.SplitHostPort(tc.server.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			p, _ := strconv.Atoi(port)
			got := (&HTTPWorkerReader{Port: p}).ReadWorkers(t.Context(), tc.pods)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("reports = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestReportMemory(t *testing.T) {
	t.Parallel()
	key := types.NamespacedName{Namespace: "ns", Name: "w1"}
	a, b := workerPod("w1-a", "10.0.0.1", true), workerPod("w1-b", "10.0.0.2", true)
	a.UID, b.UID = "uid-a", "uid-b"
	rm := newReportMemory()
	fresh := WorkerReport{State: "caught-up", Ready: true, Positions: map[string]int64{"events": 7}}
	got := rm.merge(key, []corev1.Pod{a, b}, map[string]WorkerReport{"w1-a": fresh}, t0)
	if len(got) != 1 || got["w1-a"].Positions["events"] != 7 || !got["w1-a"].Ready {
		t.Fatalf("first merge = %+v", got)
	}
	// w1-a falls silent: its last position stands, marked not ready.
	got = rm.merge(key, []corev1.Pod{a, b}, map[string]WorkerReport{}, t0.Add(time.Minute))
	if r := got["w1-a"]; r.Ready || r.Positions["events"] != 7 || !strings.Contains(r.Reason, "not answering") || !strings.Contains(r.Reason, "2026-11-26T20:00:00Z") {
		t.Errorf("silent pod = %+v", r)
	}
	if _, ok := got["w1-b"]; ok {
		t.Error("a pod that never answered has a report")
	}
	// A new pod of the same name (another UID) does not inherit it.
	a.UID = "uid-a2"
	if got = rm.merge(key, []corev1.Pod{a}, nil, t0.Add(2*time.Minute)); len(got) != 0 {
		t.Errorf("a replaced pod inherited %+v", got)
	}
	rm.forget(key)
	if len(rm.last) != 0 {
		t.Error("forget kept reports")
	}
}
