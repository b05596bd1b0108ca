package controllers

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/probe"
)

// masterObservation is what the reconcile phases saw of a master's owned
// objects; status is computed from it.
type masterObservation struct {
	statefulSet *appsv1.StatefulSet
	pod         *corev1.Pod
	tokenSecret string
}

// MasterStatus computes a master's status from its current status (kept for
// condition transition times), what the phases observed, the probe's
// snapshot and the phases' error. It is pure: same inputs, same status.
func MasterStatus(m *replv1.ReplicationMaster, obs masterObservation, snap probe.Snapshot, haveSnap bool, reconcileErr error) replv1.ReplicationMasterStatus {
	st := *m.Status.DeepCopy()
	gen := m.Generation
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}

	st.Endpoint = specs.MasterEndpoint(m)
	st.HTTPEndpoint = specs.MasterHTTPEndpoint(m)
	if obs.tokenSecret != "" {
		st.PublishTokenSecret = obs.tokenSecret
	}

	available := false
	if sts := obs.statefulSet; sts != nil && sts.Status.ReadyReplicas > 0 {
		available = true
		set(replv1.ConditionAvailable, metav1.ConditionTrue, replv1.ReasonPodReady, "the master pod is ready")
	} else {
		set(replv1.ConditionAvailable, metav1.ConditionFalse, replv1.ReasonPodNotReady, "the master pod is not ready yet; see the pod's events and logs")
	}

	if rolling, msg := statefulSetRolling(obs.statefulSet); rolling {
		set(replv1.ConditionProgressing, metav1.ConditionTrue, replv1.ReasonRollingOut, msg)
	} else {
		set(replv1.ConditionProgressing, metav1.ConditionFalse, replv1.ReasonRolloutComplete, "the master pod runs the current configuration")
	}

	probeReason, probeMsg := probeProblem(snap, haveSnap)
	switch {
	case reconcileErr != nil:
		set(replv1.ConditionDegraded, metav1.ConditionTrue, replv1.ReasonReconcileFailed, reconcileErr.Error())
	case available && probeReason != "" && probeReason != replv1.ReasonProbePending:
		set(replv1.ConditionDegraded, metav1.ConditionTrue, probeReason, probeMsg)
	case haveSnap && snap.Reachable && snap.Heartbeat.Stale:
		set(replv1.ConditionDegraded, metav1.ConditionTrue, replv1.ReasonHeartbeatStale, "a heartbeat sent through the master has not come back in time: the master is not relaying or is overloaded")
	default:
		set(replv1.ConditionDegraded, metav1.ConditionFalse, replv1.ReasonAsExpected, "")
	}

	switch {
	case !available:
		set(replv1.ConditionReady, metav1.ConditionFalse, replv1.ReasonPodNotReady, "the master pod is not ready")
	case haveSnap && snap.Reachable:
		set(replv1.ConditionReady, metav1.ConditionTrue, replv1.ReasonMasterReady, "the master is serving and the probe is caught up")
	case probeReason != "" && probeReason != replv1.ReasonHTTPUnreachable:
		set(replv1.ConditionReady, metav1.ConditionFalse, probeReason, probeMsg)
	default:
		set(replv1.ConditionReady, metav1.ConditionFalse, replv1.ReasonProbePending, "waiting for the probe's first connection")
	}

	if haveSnap && !snap.MeasuredAt.IsZero() {
		st.Streams = st.Streams[:0]
		for _, s := range snap.Streams {
			st.Streams = append(st.Streams, replv1.StreamStatus{Name: s.Name, Token: s.Token, RowsPerSecond: formatRate(s.RowsPerSecond)})
		}
		if len(st.Streams) == 0 {
			st.Streams = nil
		}
		st.StreamCount = int32(len(snap.Streams))
		if snap.ConnectionsAvailable {
			st.ConnectedWorkers = int32(len(snap.Connections))
		}
		if hb := snap.Heartbeat; hb.Samples > 0 {
			st.Heartbeat = &replv1.HeartbeatStatus{
				Last: roundLatency(hb.Last), P50: roundLatency(hb.P50), P99: roundLatency(hb.P99), Max: roundLatency(hb.Max), Stale: hb.Stale,
			}
		}
		st.LastProbeTime = &metav1.Time{Time: snap.MeasuredAt.Truncate(time.Second)}
	}
	if reconcileErr == nil {
		st.ObservedGeneration = gen
	}
	return st
}

// statefulSetRolling reports whether the StatefulSet is still moving to
// its current template.
func statefulSetRolling(sts *appsv1.StatefulSet) (bool, string) {
	if sts == nil {
		return true, "creating the master's StatefulSet"
	}
	s := sts.Status
	switch {
	case s.ObservedGeneration < sts.Generation:
		return true, "the StatefulSet controller has not yet seen the latest template"
	case s.UpdateRevision != "" && s.CurrentRevision != s.UpdateRevision:
		return true, "rolling the master pod to a new template"
	case s.UpdatedReplicas < s.Replicas:
		return true, "rolling the master pod to a new template"
	}
	return false, ""
}

// probeProblem names what keeps the probe from a full picture; "" when
// nothing does.
func probeProblem(snap probe.Snapshot, haveSnap bool) (reason, msg string) {
	if !haveSnap || snap.MeasuredAt.IsZero() {
		return replv1.ReasonProbePending, "the probe has not reported yet"
	}
	if snap.Error == nil && snap.ErrorMessage == "" {
		if !snap.Reachable {
			return replv1.ReasonProbePending, "the probe is connecting"
		}
		return "", ""
	}
	msg = snap.ErrorMessage
	if msg == "" {
		msg = snap.Error.Error()
	}
	switch {
	case errors.Is(snap.Error, probe.ErrWrongServerName):
		return replv1.ReasonWrongServerName, msg
	case errors.Is(snap.Error, probe.ErrProtocol):
		return replv1.ReasonProtocolError, msg
	case errors.Is(snap.Error, probe.ErrHTTPUnreachable):
		return replv1.ReasonHTTPUnreachable, msg
	}
	return replv1.ReasonMasterUnreachable, msg
}

func formatRate(r float64) string {
	return fmt.Sprintf("%.1f", r)
}

// roundLatency keeps heartbeat latencies readable and stops sub-10µs
// jitter from counting as a status change.
func roundLatency(d time.Duration) string {
	return d.Round(10 * time.Microsecond).String()
}

// WorkerStatus computes a worker's status. m is nil when the master does
// not exist; deploy is nil before the Deployment exists.
func WorkerStatus(w *replv1.ReplicationWorker, m *replv1.ReplicationMaster, deploy *appsv1.Deployment, pods []corev1.Pod, snap probe.Snapshot, haveSnap bool, reconcileErr error) replv1.ReplicationWorkerStatus {
	st := *w.Status.DeepCopy()
	st.Selector = labels.SelectorFromSet(specs.WorkerSelectorLabels(w)).String()
	gen := w.Generation
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	desired := int32(1)
	if w.Spec.Replicas != nil {
		desired = *w.Spec.Replicas
	}

	if m == nil {
		msg := fmt.Sprintf("ReplicationMaster %q not found in namespace %s: create it or fix spec.masterRef.name", w.Spec.MasterRef.Name, w.Namespace)
		set(replv1.ConditionReady, metav1.ConditionFalse, replv1.ReasonMasterNotFound, msg)
		set(replv1.ConditionConnected, metav1.ConditionFalse, replv1.ReasonMasterNotFound, msg)
		set(replv1.ConditionLagging, metav1.ConditionUnknown, replv1.ReasonMasterNotFound, msg)
		st.ConnectedReplicas = 0
		st.Connected = fmt.Sprintf("0/%d", desired)
		st.Ready = fmt.Sprintf("%d/%d", st.ReadyReplicas, desired)
		st.Pods = nil
		st.MaxLag = ""
		st.MaxTokensBehind = 0
		return st
	}

	if deploy != nil {
		st.Replicas = deploy.Status.Replicas
		st.ReadyReplicas = deploy.Status.ReadyReplicas
	} else {
		st.Replicas, st.ReadyReplicas = 0, 0
	}
	st.Ready = fmt.Sprintf("%d/%d", st.ReadyReplicas, desired)

	connsKnown := haveSnap && snap.ConnectionsAvailable
	var (
		entries      []replv1.WorkerPodStatus
		connected    int32
		notConnected []string
		worstLag     float64
		worstTokens  int64
		worstWhere   string
	)
	for i := range pods {
		pod := &pods[i]
		if pod.DeletionTimestamp != nil {
			continue
		}
		e := replv1.WorkerPodStatus{Name: pod.Name, PodIP: pod.Status.PodIP}
		if connsKnown {
			if c := matchConnection(pod, snap.Connections); c != nil {
				e.Connected = true
				connected++
				if !c.Since.IsZero() {
					e.ConnectedSince = &metav1.Time{Time: c.Since.Truncate(time.Second)}
				}
				for _, s := range c.Streams {
					e.Streams = append(e.Streams, replv1.WorkerStreamStatus{
						Name: s.Name, Token: s.Token, TokensBehind: s.TokensBehind, SecondsBehind: fmt.Sprintf("%.3f", s.SecondsBehind),
					})
					if s.SecondsBehind > worstLag {
						worstLag = s.SecondsBehind
						worstWhere = fmt.Sprintf("pod %s, stream %s", pod.Name, s.Name)
					}
					worstTokens = max(worstTokens, s.TokensBehind)
				}
				slices.SortFunc(e.Streams, func(a, b replv1.WorkerStreamStatus) int { return strings.Compare(a.Name, b.Name) })
			} else if podReady(pod) {
				notConnected = append(notConnected, pod.Name)
			}
		}
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b replv1.WorkerPodStatus) int { return strings.Compare(a.Name, b.Name) })
	st.Pods = entries
	st.ConnectedReplicas = connected
	st.Connected = fmt.Sprintf("%d/%d", connected, desired)
	if connsKnown {
		st.MaxLag = (time.Duration(worstLag * float64(time.Second))).Round(time.Millisecond).String()
		st.MaxTokensBehind = worstTokens
		st.LastProbeTime = &metav1.Time{Time: snap.MeasuredAt.Truncate(time.Second)}
	} else {
		st.MaxLag = ""
		st.MaxTokensBehind = 0
	}

	switch {
	case reconcileErr != nil:
		set(replv1.ConditionReady, metav1.ConditionFalse, replv1.ReasonReconcileFailed, reconcileErr.Error())
	case st.ReadyReplicas >= desired:
		set(replv1.ConditionReady, metav1.ConditionTrue, replv1.ReasonAllReplicasReady, fmt.Sprintf("%d of %d pods ready", st.ReadyReplicas, desired))
	default:
		set(replv1.ConditionReady, metav1.ConditionFalse, replv1.ReasonReplicasNotReady, fmt.Sprintf("%d of %d pods ready", st.ReadyReplicas, desired))
	}

	switch {
	case !connsKnown:
		msg := "the master's probe has no connection table yet"
		if haveSnap && snap.ErrorMessage != "" {
			msg = "the master's connection table is unavailable: " + snap.ErrorMessage
		}
		set(replv1.ConditionConnected, metav1.ConditionUnknown, replv1.ReasonConnectionsUnknown, msg)
		set(replv1.ConditionLagging, metav1.ConditionUnknown, replv1.ReasonConnectionsUnknown, msg)
	default:
		if len(notConnected) > 0 {
			set(replv1.ConditionConnected, metav1.ConditionFalse, replv1.ReasonNotConnected, "ready pods with no connection to the master: "+strings.Join(notConnected, ", "))
		} else {
			set(replv1.ConditionConnected, metav1.ConditionTrue, replv1.ReasonAllConnected, "every ready pod is connected to the master")
		}
		limit := float64(w.Spec.MaxLagSeconds)
		if limit <= 0 {
			limit = 30
		}
		if worstLag > limit {
			set(replv1.ConditionLagging, metav1.ConditionTrue, replv1.ReasonLagAboveThreshold, fmt.Sprintf("%s is more than %gs (spec.maxLagSeconds) behind", worstWhere, limit))
		} else {
			set(replv1.ConditionLagging, metav1.ConditionFalse, replv1.ReasonLagWithinThreshold, fmt.Sprintf("every stream is within %gs", limit))
		}
	}
	if reconcileErr == nil {
		st.ObservedGeneration = gen
	}
	return st
}

// matchConnection finds the pod's connection: by the NAME the worker sent
// (the pod name, injected as TCPREPL_WORKER_NAME), else by the remote
// address's host being the pod IP. Of several (a reconnect that overlaps the
// old connection's close), the newest wins.
func matchConnection(pod *corev1.Pod, conns []probe.Connection) *probe.Connection {
	var best *probe.Connection
	for i := range conns {
		c := &conns[i]
		byName := c.Name == pod.Name
		byIP := false
		if pod.Status.PodIP != "" {
			if host, _, err := net.SplitHostPort(c.RemoteAddr); err == nil && sameIP(host, pod.Status.PodIP) {
				byIP = true
			}
		}
		if !byName && !byIP {
			continue
		}
		if best == nil || c.Since.After(best.Since) {
			best = c
		}
	}
	return best
}

// sameIP compares two textual IP addresses as addresses, so that the
// spellings of one IPv6 address ("fd00::1", "fd00:0:0::1") and an IPv4
// address seen through a dual-stack socket ("::ffff:10.0.0.1") match.
func sameIP(a, b string) bool {
	if a == b {
		return true
	}
	x, errA := netip.ParseAddr(a)
	y, errB := netip.ParseAddr(b)
	return errA == nil && errB == nil && x.WithZone("").Unmap() == y.WithZone("").Unmap()
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// masterStatusSignificant reports whether two master statuses differ in more
// than the measurements that change all the time (positions, rates,
// heartbeat latencies, probe time). Significant changes are written at once;
// the rest at most once per status interval.
func masterStatusSignificant(a, b replv1.ReplicationMasterStatus) bool {
	strip := func(s replv1.ReplicationMasterStatus) replv1.ReplicationMasterStatus {
		s.Streams, s.Heartbeat, s.LastProbeTime = nil, nil, nil
		return s
	}
	return !equality.Semantic.DeepEqual(strip(a), strip(b))
}

// workerStatusSignificant is masterStatusSignificant for workers: lag and
// positions are measurements; membership, connectivity and conditions are
// not.
func workerStatusSignificant(a, b replv1.ReplicationWorkerStatus) bool {
	strip := func(s replv1.ReplicationWorkerStatus) replv1.ReplicationWorkerStatus {
		s.MaxLag, s.MaxTokensBehind, s.LastProbeTime = "", 0, nil
		s.Pods = slices.Clone(s.Pods)
		for i := range s.Pods {
			s.Pods[i].Streams = nil
		}
		return s
	}
	return !equality.Semantic.DeepEqual(strip(a), strip(b))
}

// emptySnapshot stands for "no probe data".
var emptySnapshot probe.Snapshot
