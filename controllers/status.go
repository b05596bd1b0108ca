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
	"k8s.io/utils/ptr"

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
	// image is what the StatefulSet was given (image.go).
	image operandChoice
	// activePod, readyStandbys and takeover: see activeMaster and
	// activeMemory. postgres says why a master on PostgreSQL cannot start.
	activePod     string
	readyStandbys int32
	takeover      *masterTakeover
	postgres      postgresProblem
	// tls is what the TLS phase found (tls.go).
	tls tlsState
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
	// A ready active pod counts before the StatefulSet's status says so.
	if sts := obs.statefulSet; (sts != nil && sts.Status.ReadyReplicas > 0) || obs.activePod != "" {
		available = true
		set(replv1.ConditionAvailable, metav1.ConditionTrue, replv1.ReasonPodReady, "the master pod is ready")
	} else {
		set(replv1.ConditionAvailable, metav1.ConditionFalse, replv1.ReasonPodNotReady, "the master pod is not ready yet; see the pod's events and logs")
	}

	setStandbyStatus(&st, m.Status, obs, available, set)

	if rolling, msg := statefulSetRolling(obs.statefulSet); rolling {
		set(replv1.ConditionProgressing, metav1.ConditionTrue, replv1.ReasonRollingOut, msg)
	} else {
		set(replv1.ConditionProgressing, metav1.ConditionFalse, replv1.ReasonRolloutComplete, "the master pod runs the current configuration")
	}

	probeReason, probeMsg := probeProblem(snap, haveSnap)
	switch {
	case reconcileErr != nil:
		set(replv1.ConditionDegraded, metav1.ConditionTrue, replv1.ReasonReconcileFailed, reconcileErr.Error())
	case obs.postgres.reason != "":
		set(replv1.ConditionDegraded, metav1.ConditionTrue, obs.postgres.reason, obs.postgres.message)
	case available && probeReason != "" && probeReason != replv1.ReasonProbePending:
		set(replv1.ConditionDegraded, metav1.ConditionTrue, probeReason, probeMsg)
	case haveSnap && snap.Reachable && snap.Heartbeat.Stale:
		set(replv1.ConditionDegraded, metav1.ConditionTrue, replv1.ReasonHeartbeatStale, "a heartbeat sent through the master has not come back in time: the master is not relaying or is overloaded")
	default:
		set(replv1.ConditionDegraded, metav1.ConditionFalse, replv1.ReasonAsExpected, "")
	}

	switch {
	case !available && obs.postgres.reason != "":
		set(replv1.ConditionReady, metav1.ConditionFalse, obs.postgres.reason, obs.postgres.message)
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
			ss := replv1.StreamStatus{Name: s.Name, Token: s.Token, RowsPerSecond: formatRate(s.RowsPerSecond)}
			if s.OldestToken > 0 {
				ss.OldestToken = ptr.To(s.OldestToken)
			}
			st.Streams = append(st.Streams, ss)
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
	case s.UpdateRevision != "" && s.CurrentRevision != s.UpdateRevision && sts.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType:
		// With OnDelete (masters on PostgreSQL) the StatefulSet controller
		// never moves currentRevision; updatedReplicas below tells.
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

// WorkerObservation is what the worker's reconcile saw besides the
// resources: its pods, what each pod said of itself, and when the master's
// streams reached which token.
type WorkerObservation struct {
	// Pods are the worker's pods, whatever workload runs them.
	Pods []corev1.Pod
	// Reports holds each answering pod's own report, by pod name.
	Reports map[string]WorkerReport
	// Now is when the observation was made.
	Now time.Time
	// BehindSince returns when the master's stream first held a token after
	// position; false when the position is caught up or unknown. Nil when
	// no history is kept.
	BehindSince func(stream string, position int64) (time.Time, bool)
	// Image is the image the StatefulSet was given (image.go); empty when
	// the reconcile failed before choosing one.
	Image string
}

// maxPodEntries bounds status.pods, so the status stays far below etcd's
// object size limit at any replica count.
const maxPodEntries = 20

// maxPodStreamEntries bounds the streams listed per pod (the most behind).
const maxPodStreamEntries = 16

// maxReasonLength bounds a pod's reason in status.
const maxReasonLength = 256

// podSummary is one pod's entry with what ranks it.
type podSummary struct {
	entry  replv1.WorkerPodStatus
	unwell bool
	// measured: connected, so its lag is known. reported: its own
	// position gives a lag, which may put it above the threshold but
	// never makes it "within" it.
	measured bool
	reported bool
	seconds  float64
	tokens   int64
	where    string
	// lags holds every stream's lag, for the per-pod metrics: status
	// lists at most maxPodStreamEntries streams of at most maxPodEntries
	// pods, the metrics all of them.
	lags []podStreamLag
}

// WorkerStatus computes a worker's status. m is nil when the master does
// not exist. Replica counts come from the pods, not from the workload
// object, so they follow the pods whatever runs them.
func WorkerStatus(w *replv1.ReplicationWorker, m *replv1.ReplicationMaster, obs WorkerObservation, snap probe.Snapshot, haveSnap bool, reconcileErr error) replv1.ReplicationWorkerStatus {
	st, _ := workerStatus(w, m, obs, snap, haveSnap, reconcileErr)
	return st
}

// workerStatus is WorkerStatus that also returns each pod's lag per stream
// (pods whose lag is unknown left out), for the per-pod metrics.
func workerStatus(w *replv1.ReplicationWorker, m *replv1.ReplicationMaster, obs WorkerObservation, snap probe.Snapshot, haveSnap bool, reconcileErr error) (replv1.ReplicationWorkerStatus, []podLag) {
	st := *w.Status.DeepCopy()
	if obs.Image != "" {
		st.Image = obs.Image
	}
	st.Selector = labels.SelectorFromSet(specs.WorkerSelectorLabels(w)).String()
	gen := w.Generation
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	desired := int32(1)
	if w.Spec.Replicas != nil {
		desired = *w.Spec.Replicas
	}
	limit := float64(w.Spec.MaxLagSeconds)
	if limit <= 0 {
		limit = 30
	}

	st.Replicas, st.ReadyReplicas = 0, 0
	for i := range obs.Pods {
		if obs.Pods[i].DeletionTimestamp != nil {
			continue
		}
		st.Replicas++
		if podReady(&obs.Pods[i]) {
			st.ReadyReplicas++
		}
	}
	st.Ready = fmt.Sprintf("%d/%d", st.ReadyReplicas, desired)

	if m == nil {
		msg := fmt.Sprintf("ReplicationMaster %q not found in namespace %s: create it or fix spec.masterRef.name", w.Spec.MasterRef.Name, w.Namespace)
		set(replv1.ConditionReady, metav1.ConditionFalse, replv1.ReasonMasterNotFound, msg)
		set(replv1.ConditionConnected, metav1.ConditionFalse, replv1.ReasonMasterNotFound, msg)
		set(replv1.ConditionLagging, metav1.ConditionUnknown, replv1.ReasonMasterNotFound, msg)
		st.ConnectedReplicas, st.LaggingReplicas = 0, 0
		st.Connected = fmt.Sprintf("0/%d", desired)
		st.Pods, st.PodsOmitted = nil, 0
		st.MaxLag = ""
		st.MaxTokensBehind = 0
		return st, nil
	}

	connsKnown := haveSnap && snap.ConnectionsAvailable
	masterTokens := map[string]int64{}
	for _, s := range snap.Streams {
		masterTokens[s.Name] = s.Token
	}
	var (
		pods []podSummary
		ix   connectionIndex
	)
	if connsKnown {
		ix = indexConnections(snap.Connections)
	}
	for i := range obs.Pods {
		pod := &obs.Pods[i]
		if pod.DeletionTimestamp != nil {
			continue
		}
		var c *probe.Connection
		if connsKnown {
			c = ix.lookup(pod)
		}
		rep, hasRep := obs.Reports[pod.Name]
		pods = append(pods, summarisePod(pod, c, rep, hasRep, connsKnown, masterTokens, obs))
	}

	var (
		connected, lagging, measured int32
		worst                        *podSummary
		worstTokens                  int64
	)
	for i := range pods {
		p := &pods[i]
		if p.entry.Connected {
			connected++
		}
		if p.measured {
			measured++
		}
		if !p.measured && !p.reported {
			continue
		}
		if p.seconds > limit {
			lagging++
		}
		if worst == nil || p.seconds > worst.seconds {
			worst = p
		}
		worstTokens = max(worstTokens, p.tokens)
	}
	st.ConnectedReplicas = connected
	st.LaggingReplicas = lagging
	st.Connected = fmt.Sprintf("%d/%d", connected, desired)
	if worst != nil {
		st.MaxLag = (time.Duration(worst.seconds * float64(time.Second))).Round(time.Millisecond).String()
		st.MaxTokensBehind = worstTokens
	} else {
		st.MaxLag = ""
		st.MaxTokensBehind = 0
	}
	if connsKnown {
		st.LastProbeTime = &metav1.Time{Time: snap.MeasuredAt.Truncate(time.Second)}
	}

	// The worst first: pods that are not ready or not connected, then the
	// most behind; the list is capped and the rest counted.
	slices.SortStableFunc(pods, func(a, b podSummary) int {
		switch {
		case a.unwell != b.unwell:
			if a.unwell {
				return -1
			}
			return 1
		case a.seconds != b.seconds:
			if a.seconds > b.seconds {
				return -1
			}
			return 1
		}
		return strings.Compare(a.entry.Name, b.entry.Name)
	})
	st.Pods, st.PodsOmitted = nil, 0
	for i, p := range pods {
		if i == maxPodEntries {
			st.PodsOmitted = int32(len(pods) - maxPodEntries)
			break
		}
		st.Pods = append(st.Pods, p.entry)
	}
	unwell := unwellPods(pods)
	unknown := unknownStreams(w, m, snap, haveSnap)

	switch {
	case reconcileErr != nil:
		set(replv1.ConditionReady, metav1.ConditionFalse, replv1.ReasonReconcileFailed, reconcileErr.Error())
	case len(unknown) > 0:
		set(replv1.ConditionReady, metav1.ConditionFalse, replv1.ReasonUnknownStream, unknownStreamMessage(w, unknown))
	case st.ReadyReplicas >= desired:
		set(replv1.ConditionReady, metav1.ConditionTrue, replv1.ReasonAllReplicasReady, fmt.Sprintf("%d of %d pods ready", st.ReadyReplicas, desired))
	default:
		set(replv1.ConditionReady, metav1.ConditionFalse, replv1.ReasonReplicasNotReady, fmt.Sprintf("%d of %d pods ready%s", st.ReadyReplicas, desired, unwell))
	}

	switch {
	case len(unknown) > 0:
		set(replv1.ConditionConnected, metav1.ConditionFalse, replv1.ReasonUnknownStream, unknownStreamMessage(w, unknown))
	case !connsKnown:
		set(replv1.ConditionConnected, metav1.ConditionUnknown, replv1.ReasonConnectionsUnknown, connectionsUnknownMessage(snap, haveSnap))
	case connected < desired || connected < st.ReadyReplicas:
		set(replv1.ConditionConnected, metav1.ConditionFalse, replv1.ReasonNotConnected, fmt.Sprintf("%d of %d pods connected to the master%s", connected, desired, unwell))
	default:
		set(replv1.ConditionConnected, metav1.ConditionTrue, replv1.ReasonAllConnected, fmt.Sprintf("%d of %d pods connected to the master", connected, desired))
	}

	switch {
	case lagging > 0:
		set(replv1.ConditionLagging, metav1.ConditionTrue, replv1.ReasonLagAboveThreshold, fmt.Sprintf("%d pods more than %gs (spec.maxLagSeconds) behind; the worst is %s, %s behind", lagging, limit, worst.where, st.MaxLag))
	case measured == 0 && !connsKnown && worst == nil:
		set(replv1.ConditionLagging, metav1.ConditionUnknown, replv1.ReasonConnectionsUnknown, connectionsUnknownMessage(snap, haveSnap))
	case measured < desired:
		set(replv1.ConditionLagging, metav1.ConditionUnknown, replv1.ReasonLagUnknown, fmt.Sprintf("%d of %d pods are connected; the others are not keeping up, whatever they processed", measured, desired))
	default:
		set(replv1.ConditionLagging, metav1.ConditionFalse, replv1.ReasonLagWithinThreshold, fmt.Sprintf("every stream of every pod is within %gs", limit))
	}
	if reconcileErr == nil {
		st.ObservedGeneration = gen
	}
	var lags []podLag
	for _, p := range pods {
		if len(p.lags) > 0 {
			lags = append(lags, podLag{pod: p.entry.Name, streams: p.lags})
		}
	}
	return st, lags
}

// summarisePod merges what the master's connection table and the pod's own
// report say of one pod. The pod's durable position wins where it is
// behind what the master sent: rows in socket buffers are not processed.
func summarisePod(pod *corev1.Pod, c *probe.Connection, rep WorkerReport, hasRep, connsKnown bool, masterTokens map[string]int64, obs WorkerObservation) podSummary {
	p := podSummary{entry: replv1.WorkerPodStatus{Name: pod.Name, PodIP: pod.Status.PodIP, Ready: podReady(pod)}}
	type lag struct {
		s       replv1.WorkerStreamStatus
		seconds float64
	}
	streams := map[string]*lag{}
	if c != nil {
		p.entry.Connected = true
		// Only a connected pod can count as within the threshold: one
		// without a connection is not keeping up, whatever it processed.
		p.measured = true
		if !c.Since.IsZero() {
			p.entry.ConnectedSince = &metav1.Time{Time: c.Since.Truncate(time.Second)}
		}
		for _, s := range c.Streams {
			streams[s.Name] = &lag{s: replv1.WorkerStreamStatus{Name: s.Name, Token: s.Token, TokensBehind: s.TokensBehind}, seconds: s.SecondsBehind}
		}
	}
	if hasRep {
		for name, pos := range rep.Positions {
			head, ok := masterTokens[name]
			if !ok {
				continue
			}
			l := streams[name]
			if l == nil {
				l = &lag{s: replv1.WorkerStreamStatus{Name: name}}
				streams[name] = l
			}
			p.reported = true
			l.s.Position = ptr.To(pos)
			l.s.TokensBehind = max(l.s.TokensBehind, head-pos)
			if obs.BehindSince != nil {
				if since, behind := obs.BehindSince(name, pos); behind {
					l.seconds = max(l.seconds, obs.Now.Sub(since).Seconds())
				}
			}
		}
	}
	var list []*lag
	for _, l := range streams {
		list = append(list, l)
	}
	slices.SortFunc(list, func(a, b *lag) int { return strings.Compare(a.s.Name, b.s.Name) })
	for _, l := range list {
		if p.where == "" || l.seconds > p.seconds {
			p.seconds = l.seconds
			p.where = fmt.Sprintf("pod %s, stream %s", pod.Name, l.s.Name)
		}
		p.tokens = max(p.tokens, l.s.TokensBehind)
		p.lags = append(p.lags, podStreamLag{stream: l.s.Name, seconds: l.seconds, tokens: l.s.TokensBehind})
	}
	if len(list) > maxPodStreamEntries {
		slices.SortFunc(list, func(a, b *lag) int {
			if a.seconds != b.seconds {
				if a.seconds > b.seconds {
					return -1
				}
				return 1
			}
			return strings.Compare(a.s.Name, b.s.Name)
		})
		list = list[:maxPodStreamEntries]
	}
	for _, l := range list {
		l.s.SecondsBehind = fmt.Sprintf("%.3f", l.seconds)
		p.entry.Streams = append(p.entry.Streams, l.s)
	}
	slices.SortFunc(p.entry.Streams, func(a, b replv1.WorkerStreamStatus) int { return strings.Compare(a.Name, b.Name) })

	switch {
	case hasRep && !rep.Ready && rep.Reason != "":
		p.entry.Reason = rep.Reason
	case connsKnown && c == nil && hasRep && rep.Ready:
		p.entry.Reason = "ready, but the master's connection table holds no connection from it"
	case connsKnown && c == nil:
		p.entry.Reason = "no connection to the master"
	case !p.entry.Ready:
		p.entry.Reason = "pod not ready; see its events and logs"
	}
	if len(p.entry.Reason) > maxReasonLength {
		p.entry.Reason = p.entry.Reason[:maxReasonLength-3] + "..."
	}
	p.unwell = !p.entry.Ready || (connsKnown && c == nil)
	return p
}

// unwellPods names up to three pods that are not ready or not connected
// with their reasons, for a condition's message.
func unwellPods(pods []podSummary) string {
	var parts []string
	n := 0
	for _, p := range pods {
		if !p.unwell {
			continue
		}
		n++
		if len(parts) < 3 {
			parts = append(parts, p.entry.Name+": "+p.entry.Reason)
		}
	}
	if n == 0 {
		return ""
	}
	if n > len(parts) {
		parts = append(parts, fmt.Sprintf("and %d more", n-len(parts)))
	}
	return "; " + strings.Join(parts, "; ")
}

// unknownStreams lists the streams of spec.streams the master does not
// publish: neither its spec nor the probe's snapshot names them.
func unknownStreams(w *replv1.ReplicationWorker, m *replv1.ReplicationMaster, snap probe.Snapshot, haveSnap bool) []string {
	known := map[string]bool{}
	for _, s := range replv1.StandardStreams {
		if s != "federation" || m.Spec.Streams.Federation {
			known[s] = true
		}
	}
	for _, c := range m.Spec.Streams.Custom {
		known[c.Name] = true
	}
	if haveSnap {
		for _, s := range snap.Streams {
			known[s.Name] = true
		}
	}
	var out []string
	for _, s := range w.Spec.Streams {
		if s != "ALL" && !known[s] {
			out = append(out, s)
		}
	}
	return out
}

func unknownStreamMessage(w *replv1.ReplicationWorker, unknown []string) string {
	return fmt.Sprintf("spec.streams names streams ReplicationMaster %s does not publish: %s; fix spec.streams, or declare them on the master (spec.streams.custom, spec.streams.federation)",
		w.Spec.MasterRef.Name, strings.Join(unknown, ", "))
}

func connectionsUnknownMessage(snap probe.Snapshot, haveSnap bool) string {
	if haveSnap && snap.ErrorMessage != "" {
		return "the master's connection table is unavailable: " + snap.ErrorMessage
	}
	return "the master's probe has no connection table yet"
}

// connectionIndex finds pods' connections without scanning the whole
// table per pod: at a thousand pods that scan is a million comparisons.
type connectionIndex struct {
	byName map[string][]*probe.Connection
	byIP   map[netip.Addr][]*probe.Connection
}

func indexConnections(conns []probe.Connection) connectionIndex {
	ix := connectionIndex{byName: map[string][]*probe.Connection{}, byIP: map[netip.Addr][]*probe.Connection{}}
	for i := range conns {
		c := &conns[i]
		ix.byName[c.Name] = append(ix.byName[c.Name], c)
		if host, _, err := net.SplitHostPort(c.RemoteAddr); err == nil {
			if a, err := netip.ParseAddr(host); err == nil {
				a = a.WithZone("").Unmap()
				ix.byIP[a] = append(ix.byIP[a], c)
			}
		}
	}
	return ix
}

// lookup is matchConnection on the index.
func (ix connectionIndex) lookup(pod *corev1.Pod) *probe.Connection {
	var best *probe.Connection
	consider := func(cs []*probe.Connection) {
		for _, c := range cs {
			if best == nil || c.Since.After(best.Since) {
				best = c
			}
		}
	}
	consider(ix.byName[pod.Name])
	if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
		consider(ix.byIP[a.WithZone("").Unmap()])
	}
	return best
}

// matchConnection finds the pod's connection: by the NAME the worker sent
// (the pod name, injected as TCPREPL_WORKER_NAME), else by the remote
// address's host being the pod IP, compared as addresses (so "fd00::1" and
// "fd00:0:0::1", or "10.0.0.1" seen through a dual-stack socket as
// "::ffff:10.0.0.1", match). Of several (a reconnect that overlaps the old
// connection's close), the newest wins.
func matchConnection(pod *corev1.Pod, conns []probe.Connection) *probe.Connection {
	return indexConnections(conns).lookup(pod)
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
	// Which pods make the capped list, and in which order, moves with
	// their lag: only the unwell pods (not ready, not connected) count.
	strip := func(s replv1.ReplicationWorkerStatus) replv1.ReplicationWorkerStatus {
		s.MaxLag, s.MaxTokensBehind, s.LastProbeTime = "", 0, nil
		var unwell []replv1.WorkerPodStatus
		for _, p := range s.Pods {
			if !p.Ready || p.Reason != "" {
				p.Streams, p.ConnectedSince = nil, nil
				unwell = append(unwell, p)
			}
		}
		slices.SortFunc(unwell, func(a, b replv1.WorkerPodStatus) int { return strings.Compare(a.Name, b.Name) })
		s.Pods, s.PodsOmitted = unwell, 0
		return s
	}
	return !equality.Semantic.DeepEqual(strip(a), strip(b))
}

// emptySnapshot stands for "no probe data".
var emptySnapshot probe.Snapshot
