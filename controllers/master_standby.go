package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

// postgresSecretRetry is how often a master whose PostgreSQL Secret is
// missing is looked at again: the Secret is the user's (or CloudNativePG's),
// outside the operator's label-scoped cache, so no watch announces it.
const postgresSecretRetry = 10 * time.Second

// postgresProblem is why a master on PostgreSQL cannot start: its URI
// Secret or key is missing. Zero when nothing is wrong.
type postgresProblem struct {
	reason, message string
}

// checkPostgresSecret reads the Secret key holding the master's PostgreSQL
// URI, past the cache (the Secret is not labelled as the operator's). It
// returns the URI for the pod's config hash, so that a new URI (a rotated
// password) restarts the masters, which read it only at start.
// A missing Secret or key is a problem to report, not an error: the pods
// start by themselves once it exists.
func (r *ReplicationMasterReconciler) checkPostgresSecret(ctx context.Context, m *replv1.ReplicationMaster) (uri string, problem postgresProblem, err error) {
	ref, ok := specs.PostgresURIRef(m)
	if !ok {
		return "", problem, nil
	}
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	var s corev1.Secret
	key := types.NamespacedName{Namespace: m.Namespace, Name: ref.Name}
	switch err := reader.Get(ctx, key, &s); {
	case apierrors.IsNotFound(err):
		return "", postgresProblem{replv1.ReasonPostgresSecretNotFound, postgresSecretHelp(m, fmt.Sprintf("the Secret %s holding the PostgreSQL URI does not exist", key))}, nil
	case err != nil:
		return "", problem, fmt.Errorf("get Secret %s holding the PostgreSQL URI: %w", key, err)
	}
	uri = strings.TrimSpace(string(s.Data[ref.Key]))
	if uri == "" {
		return "", postgresProblem{replv1.ReasonPostgresSecretKeyMissing, postgresSecretHelp(m, fmt.Sprintf("the Secret %s has no key %q (or it is empty)", key, ref.Key))}, nil
	}
	return uri, problem, nil
}

func postgresSecretHelp(m *replv1.ReplicationMaster, what string) string {
	if c := m.Spec.Storage.Postgres.Cluster; c != "" {
		return what + fmt.Sprintf(": CloudNativePG publishes it for the Cluster %q once the cluster is up; check that the Cluster exists in namespace %s and is healthy. The master pods start when the Secret exists", c, m.Namespace)
	}
	return what + ": create it, or fix spec.storage.postgres.uriSecretRef. The master pods start when it exists"
}

// masterPods lists the master's pods, by name, from the cache (they carry
// the operator's labels).
func (r *ReplicationMasterReconciler) masterPods(ctx context.Context, m *replv1.ReplicationMaster) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(m.Namespace), client.MatchingLabels(specs.MasterLabels(m))); err != nil {
		return nil, fmt.Errorf("list the pods of ReplicationMaster %s/%s: %w", m.Namespace, m.Name, err)
	}
	pods := list.Items
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods, nil
}

// activeMaster picks the active master pod: the ready one, since only the
// master holding the log answers /readyz with 200. Two ready pods exist only
// for the moment between a takeover and the old pod's readiness probe
// failing; the one that was active before is then kept (it is the one the
// operator has not yet seen fail), else the first by name. standbys counts
// the other pods whose master is running and waiting for the log.
func activeMaster(pods []corev1.Pod, previous string) (active string, standbys int32) {
	var ready []string
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		if podReady(p) {
			ready = append(ready, p.Name)
		}
	}
	switch {
	case slices.Contains(ready, previous):
		active = previous
	case len(ready) > 0:
		active = ready[0]
	}
	for i := range pods {
		p := &pods[i]
		if p.Name != active && p.DeletionTimestamp == nil && masterRunning(p) {
			standbys++
		}
	}
	return active, standbys
}

// masterRunning reports whether the pod's master container runs and has
// passed its startup probe: a standby waiting for the log (or, if ready,
// a second active one about to find itself fenced).
func masterRunning(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == "master" {
			return c.State.Running != nil && c.Started != nil && *c.Started
		}
	}
	return false
}

// masterTakeover is a change of the active master pod the operator saw.
type masterTakeover struct {
	from, to string
	at       time.Time
}

// activeMemory remembers each master's active pod between reconciles,
// including while none is ready: a takeover passes through "no active pod"
// (the old one died, the standby has not got the lock yet), and only the
// pod before that tells a takeover from a first start.
type activeMemory struct {
	mu   sync.Mutex
	last map[types.NamespacedName]string
}

// observe records the active pod ("" for none) and returns the takeover
// it makes, if any. status is the active pod in the resource's status,
// which stands in for memory lost when the operator restarted.
func (a *activeMemory) observe(key types.NamespacedName, status, active string, now time.Time) *masterTakeover {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		a.last = map[types.NamespacedName]string{}
	}
	prev, ok := a.last[key]
	if !ok {
		prev = status
	}
	if active == "" {
		a.last[key] = prev
		return nil
	}
	a.last[key] = active
	if prev == "" || prev == active {
		return nil
	}
	return &masterTakeover{from: prev, to: active, at: now}
}

func (a *activeMemory) forget(key types.NamespacedName) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.last, key)
}

// emitTakeover records the Takeover Event.
func emitTakeover(r *ReplicationMasterReconciler, m *replv1.ReplicationMaster, t *masterTakeover) {
	if t == nil {
		return
	}
	emit(r.Recorder, m, corev1.EventTypeNormal, replv1.ReasonTakeover, "Takeover", takeoverMessage(t))
}

func takeoverMessage(t *masterTakeover) string {
	return fmt.Sprintf("master pod %s took over from %s at %s: it holds the log's lock in PostgreSQL and the Service routes to it", t.to, t.from, t.at.UTC().Format(time.RFC3339))
}

// rollMasterPods updates the pods of a master on PostgreSQL to the
// StatefulSet's current template, one pod at a time (the StatefulSet's
// OnDelete strategy leaves that to the operator, see
// specs.BuildMasterStatefulSet). Standbys go first; the active master goes
// last, and only once an updated standby runs to take over from it, so a
// rollout costs one takeover. It returns whether a pod was deleted.
func (r *ReplicationMasterReconciler) rollMasterPods(ctx context.Context, m *replv1.ReplicationMaster, sts *appsv1.StatefulSet, pods []corev1.Pod, active string) (bool, error) {
	victim := nextMasterPodToRoll(sts, pods, active, specs.MasterReplicas(m))
	if victim == nil {
		return false, nil
	}
	if err := r.Delete(ctx, victim, client.Preconditions{UID: &victim.UID}); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return false, nil
		}
		return false, fmt.Errorf("delete master pod %s/%s to update it to the new template: %w", victim.Namespace, victim.Name, err)
	}
	emitRelated(r.Recorder, m, victim, corev1.EventTypeNormal, "Rolling", "Delete", fmt.Sprintf("master pod %s deleted to run the new template", victim.Name))
	return true, nil
}

// nextMasterPodToRoll is the pod rollMasterPods deletes next, nil when none
// should be deleted now. replicas is spec.replicas: while fewer pods exist,
// the StatefulSet controller has yet to recreate the last one deleted, and
// the roll waits for it. It is pure.
func nextMasterPodToRoll(sts *appsv1.StatefulSet, pods []corev1.Pod, active string, replicas int32) *corev1.Pod {
	if sts == nil || sts.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType || int32(len(pods)) < replicas {
		return nil
	}
	rev := sts.Status.UpdateRevision
	if rev == "" || sts.Status.ObservedGeneration < sts.Generation {
		return nil
	}
	var outdatedStandby, outdatedActive *corev1.Pod
	updatedRunning := false
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil {
			// One at a time: wait for the pod being replaced.
			return nil
		}
		outdated := p.Labels[appsv1.ControllerRevisionHashLabelKey] != rev
		switch {
		case !outdated && !masterRunning(p):
			// Wait for the last replacement to run: a template that does
			// not start must not take the active master down with it.
			return nil
		case !outdated:
			updatedRunning = true
		case p.Name == active:
			outdatedActive = p
		case outdatedStandby == nil:
			outdatedStandby = p
		}
	}
	switch {
	case outdatedStandby != nil:
		return outdatedStandby
	case outdatedActive != nil && (updatedRunning || replicas == 1):
		return outdatedActive
	}
	return nil
}

// setStandbyStatus fills the active pod, the standby count and the last
// takeover into a status MasterStatus computes, and gives the Available
// condition the Takeover reason: at the takeover, and for as long as the
// pod that took over stays active (old is the status before). Pure.
func setStandbyStatus(st *replv1.ReplicationMasterStatus, old replv1.ReplicationMasterStatus, obs masterObservation, available bool, set func(t string, s metav1.ConditionStatus, reason, msg string)) {
	st.ActivePod = obs.activePod
	st.ReadyStandbys = obs.readyStandbys
	if !available || obs.activePod == "" {
		// The memory keeps a takeover seen now; it needs a ready pod, so
		// this is not one.
		return
	}
	if t := obs.takeover; t != nil {
		st.LastTakeoverTime = &metav1.Time{Time: t.at.Truncate(time.Second)}
		set(replv1.ConditionAvailable, metav1.ConditionTrue, replv1.ReasonTakeover, takeoverMessage(t))
		return
	}
	if c := meta.FindStatusCondition(old.Conditions, replv1.ConditionAvailable); c != nil && c.Status == metav1.ConditionTrue && c.Reason == replv1.ReasonTakeover && old.ActivePod == obs.activePod {
		set(replv1.ConditionAvailable, metav1.ConditionTrue, replv1.ReasonTakeover, c.Message)
	}
}
