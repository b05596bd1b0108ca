package controllers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
)

// transientRetry is how soon a reconcile that hit a stale cache or a write
// conflict is retried.
const transientRetry = 200 * time.Millisecond

// DefaultStatusInterval is the least time between two status writes of one
// resource that only carry new measurements.
const DefaultStatusInterval = 10 * time.Second

// ReplicationMasterReconciler turns a ReplicationMaster into a running
// master and reports what its probe sees.
type ReplicationMasterReconciler struct {
	client.Client
	Scheme  *runtime.Scheme
	Options BuildOptions
	// Probes starts and stops the master's probe.
	Probes ProbeController
	// Observer gives the probe's snapshot.
	Observer MasterObserver
	// ProbeEvents, when set, announces masters whose snapshot changed.
	ProbeEvents <-chan event.GenericEvent
	// StatusInterval spaces out measurement-only status writes.
	StatusInterval time.Duration
	// Now is the clock (tests inject one); time.Now when nil.
	Now func() time.Time
	// MaxConcurrentReconciles bounds parallel reconciles (default 1).
	MaxConcurrentReconciles int
	// Recorder, when set, receives an Event for every owned object written
	// and every change of the Ready condition.
	Recorder events.EventRecorder
	// APIReader reads past the cache, to tell a stale cache from an object
	// that is not the operator's. Optional.
	APIReader client.Reader

	limiter *statusLimiter
}

// +kubebuilder:rbac:groups=replication.tcprepl.io,resources=replicationmasters,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=replication.tcprepl.io,resources=replicationmasters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=replication.tcprepl.io,resources=replicationmasters/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps;secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile fetches the master, runs the phases in order, and writes status
// last.
func (r *ReplicationMasterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	var m replv1.ReplicationMaster
	if err := r.Get(ctx, req.NamespacedName, &m); err != nil {
		if apierrors.IsNotFound(err) {
			// Owned objects are garbage collected through their owner
			// references; only the in-memory probe is ours to end.
			r.Probes.Stop(req.NamespacedName)
			r.limiter.forget(req.NamespacedName)
			forgetMasterMetrics(req.Namespace, req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get ReplicationMaster %s: %w", req.NamespacedName, err)
	}
	if !m.DeletionTimestamp.IsZero() {
		r.Probes.Stop(req.NamespacedName)
		return ctrl.Result{}, nil
	}

	obs, err := r.reconcilePhases(ctx, &m)
	if err != nil && isTransient(err) {
		log.V(1).Info("retrying", "reason", err.Error())
		return ctrl.Result{RequeueAfter: transientRetry}, nil
	}
	if err != nil {
		log.Error(err, "reconcile failed", "phase", "objects")
		emit(r.Recorder, &m, corev1.EventTypeWarning, replv1.ReasonReconcileFailed, "Reconcile", err.Error())
	}
	snap, haveSnap := r.Observer.Snapshot(req.NamespacedName)
	status := MasterStatus(&m, obs, snap, haveSnap, err)
	recordMasterMetrics(&m, status)
	result, statusErr := r.writeStatus(ctx, &m, status, err != nil)
	if err != nil {
		return ctrl.Result{}, err
	}
	return result, statusErr
}

// reconcilePhases creates or updates every owned object, in dependency
// order: the Secret and ConfigMap the pod reads, the Services, the
// StatefulSet, the NetworkPolicy, and last the probe, which needs the pod.
func (r *ReplicationMasterReconciler) reconcilePhases(ctx context.Context, m *replv1.ReplicationMaster) (masterObservation, error) {
	var obs masterObservation
	token, err := r.reconcileTokenSecret(ctx, m)
	if err != nil {
		return obs, err
	}
	obs.tokenSecret = masterTokenSecretName(m)

	cm, err := BuildMasterConfigMap(m)
	if err != nil {
		return obs, err
	}
	if _, err := applyLogged(ctx, r.Client, r.APIReader, r.Scheme, r.Recorder, m, cm, configMapState); err != nil {
		return obs, err
	}
	for _, svc := range []*corev1.Service{BuildMasterService(m), BuildMasterHeadlessService(m)} {
		if _, err := applyLogged(ctx, r.Client, r.APIReader, r.Scheme, r.Recorder, m, svc, serviceState); err != nil {
			return obs, err
		}
	}
	sts := BuildMasterStatefulSet(m, r.Options, ConfigHash(cm.Data[MasterConfigFile], token))
	live, err := applyLogged(ctx, r.Client, r.APIReader, r.Scheme, r.Recorder, m, sts, statefulSetState)
	if err != nil {
		return obs, err
	}
	obs.statefulSet = live
	if err := r.reconcileNetworkPolicy(ctx, m); err != nil {
		return obs, err
	}

	var pod corev1.Pod
	switch err := r.Get(ctx, types.NamespacedName{Namespace: m.Namespace, Name: masterPodName(m)}, &pod); {
	case err == nil:
		obs.pod = &pod
	case !apierrors.IsNotFound(err):
		return obs, fmt.Errorf("get master pod %s/%s: %w", m.Namespace, masterPodName(m), err)
	}

	target := ProbeTargetFor(m, obs.pod)
	if err := r.Probes.Ensure(client.ObjectKeyFromObject(m), target); err != nil {
		return obs, err
	}
	return obs, nil
}

// reconcileTokenSecret creates the publish-token Secret once and returns
// the token. An existing token is never replaced: producers hold it.
func (r *ReplicationMasterReconciler) reconcileTokenSecret(ctx context.Context, m *replv1.ReplicationMaster) (string, error) {
	var live corev1.Secret
	key := types.NamespacedName{Namespace: m.Namespace, Name: masterTokenSecretName(m)}
	err := r.Get(ctx, key, &live)
	switch {
	case err == nil:
		if !metav1.IsControlledBy(&live, m) {
			return "", fmt.Errorf("the Secret %s exists and is not controlled by ReplicationMaster %s: delete or rename it so the operator can create the publish token", key, m.Name)
		}
		tok := string(live.Data[PublishTokenKey])
		if tok == "" {
			return "", fmt.Errorf("secret %s has no %q key: delete it and the operator will generate a new publish token", key, PublishTokenKey)
		}
		return tok, nil
	case !apierrors.IsNotFound(err):
		return "", fmt.Errorf("get Secret %s: %w", key, err)
	}
	tok, err := newToken()
	if err != nil {
		return "", err
	}
	s := BuildMasterTokenSecret(m, tok)
	if err := ctrl.SetControllerReference(m, s, r.Scheme); err != nil {
		return "", fmt.Errorf("set owner of Secret %s: %w", key, err)
	}
	if err := r.Create(ctx, s); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return "", alreadyExists(ctx, r.APIReader, r.Scheme, m, s, "Secret")
		}
		return "", fmt.Errorf("create Secret %s: %w", key, err)
	}
	return tok, nil
}

func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate publish token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func (r *ReplicationMasterReconciler) reconcileNetworkPolicy(ctx context.Context, m *replv1.ReplicationMaster) error {
	np := BuildMasterNetworkPolicy(m, r.Options)
	if m.Spec.NetworkPolicy.IsEnabled() {
		_, err := applyLogged(ctx, r.Client, r.APIReader, r.Scheme, r.Recorder, m, np, networkPolicyState)
		return err
	}
	var live networkingv1.NetworkPolicy
	switch err := r.Get(ctx, client.ObjectKeyFromObject(np), &live); {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("get NetworkPolicy %s/%s: %w", np.Namespace, np.Name, err)
	}
	if !metav1.IsControlledBy(&live, m) {
		return nil
	}
	if err := r.Delete(ctx, &live); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete NetworkPolicy %s/%s (spec.networkPolicy.enabled is false): %w", np.Namespace, np.Name, err)
	}
	return nil
}

// applyLogged is applyOwned plus a log line for every write.
func applyLogged[T client.Object](ctx context.Context, c client.Client, reader client.Reader, scheme *runtime.Scheme, rec events.EventRecorder, owner client.Object, obj T, st ownedState[T]) (T, error) {
	live, out, err := applyOwned(ctx, c, reader, scheme, owner, obj, st)
	if err != nil {
		return live, err
	}
	if out != outcomeUnchanged {
		kind := kindOf(scheme, obj)
		logf.FromContext(ctx).Info("owned object "+string(out), "kind", kind, "name", obj.GetName())
		reason := map[applyOutcome]string{outcomeCreated: "Created", outcomeUpdated: "Updated", outcomeRestored: "Restored"}[out]
		note := fmt.Sprintf("%s %s %s", kind, obj.GetName(), out)
		if out == outcomeRestored {
			note += ": it had been edited by hand; the resource's spec is the source of truth"
		}
		emit(rec, owner, corev1.EventTypeNormal, reason, "Apply", note)
	}
	return live, nil
}

// emit records an Event when a recorder is configured.
func emit(rec events.EventRecorder, obj runtime.Object, eventType, reason, action, note string) {
	if rec == nil {
		return
	}
	// Notes are limited to 1 KiB by the Events API.
	if len(note) > 1000 {
		note = note[:1000]
	}
	rec.Eventf(obj, nil, eventType, reason, action, "%s", note)
}

// startingReasons are the Ready reasons every resource passes through
// while it starts.
var startingReasons = map[string]bool{
	replv1.ReasonPodNotReady:      true,
	replv1.ReasonProbePending:     true,
	replv1.ReasonReplicasNotReady: true,
}

// emitReadyChange records an Event when the Ready condition changes status
// or reason: these are the moments a user wants in `kubectl describe`.
func emitReadyChange(rec events.EventRecorder, obj runtime.Object, before, after []metav1.Condition) {
	b := meta.FindStatusCondition(before, replv1.ConditionReady)
	a := meta.FindStatusCondition(after, replv1.ConditionReady)
	if a == nil || (b != nil && b.Status == a.Status && b.Reason == a.Reason) {
		return
	}
	// A new resource is not ready at first; saying so as a Warning for
	// every resource created would bury the warnings that matter.
	if b == nil && startingReasons[a.Reason] {
		return
	}
	t := corev1.EventTypeNormal
	if a.Status != metav1.ConditionTrue {
		t = corev1.EventTypeWarning
	}
	emit(rec, obj, t, a.Reason, "Observe", a.Message)
}

var configMapState = ownedState[*corev1.ConfigMap]{
	fields: func(c *corev1.ConfigMap) any { return c.Data },
	mutate: func(live, want *corev1.ConfigMap) { live.Data = want.Data },
}

// serviceState keeps the cluster IPs the API server allocated.
var serviceState = ownedState[*corev1.Service]{
	fields: func(s *corev1.Service) any { return s.Spec },
	mutate: func(live, want *corev1.Service) {
		live.Spec.Ports = want.Spec.Ports
		live.Spec.Selector = want.Spec.Selector
		live.Spec.PublishNotReadyAddresses = want.Spec.PublishNotReadyAddresses
	},
}

// statefulSetState changes only what a StatefulSet lets change: the
// selector, service name and volume claim templates are immutable (the
// API's CEL rule keeps spec.storage from changing for the same reason).
var statefulSetState = ownedState[*appsv1.StatefulSet]{
	fields: func(s *appsv1.StatefulSet) any { return s.Spec },
	mutate: func(live, want *appsv1.StatefulSet) {
		live.Spec.Replicas = want.Spec.Replicas
		live.Spec.Template = keepRestartAnnotation(live.Spec.Template, want.Spec.Template)
		live.Spec.UpdateStrategy = want.Spec.UpdateStrategy
		live.Spec.PersistentVolumeClaimRetentionPolicy = want.Spec.PersistentVolumeClaimRetentionPolicy
	},
}

var networkPolicyState = ownedState[*networkingv1.NetworkPolicy]{
	fields: func(n *networkingv1.NetworkPolicy) any { return n.Spec },
	mutate: func(live, want *networkingv1.NetworkPolicy) { live.Spec = want.Spec },
}

// keepRestartAnnotation returns want, carrying over the annotation
// `kubectl rollout restart` sets: dropping it would restart the pods again.
func keepRestartAnnotation(live, want corev1.PodTemplateSpec) corev1.PodTemplateSpec {
	const restartedAt = "kubectl.kubernetes.io/restartedAt"
	if v, ok := live.Annotations[restartedAt]; ok {
		want = *want.DeepCopy()
		if want.Annotations == nil {
			want.Annotations = map[string]string{}
		}
		want.Annotations[restartedAt] = v
	}
	return want
}

// ProbeTargetFor is where the operator's probe reaches a master: the
// annotations when set (an operator outside the cluster network), else the
// pod's IP (the probe watches this pod, not whatever the Service balances
// to), else the Service's DNS name until the pod has an IP.
func ProbeTargetFor(m *replv1.ReplicationMaster, pod *corev1.Pod) ProbeTarget {
	t := ProbeTarget{ServerName: m.Spec.ServerName, Address: MasterEndpoint(m), HTTPURL: MasterHTTPEndpoint(m)}
	if pod != nil && pod.Status.PodIP != "" && pod.DeletionTimestamp == nil {
		host := pod.Status.PodIP
		t.Address = netJoin(host, m.Spec.ReplicationPort)
		t.HTTPURL = "http://" + netJoin(host, m.Spec.HTTPPort)
	}
	if a := m.Annotations[AnnotationProbeAddress]; a != "" {
		t.Address = a
	}
	if u := m.Annotations[AnnotationProbeHTTPURL]; u != "" {
		t.HTTPURL = u
	}
	return t
}

// writeStatus writes the status if it changed: at once when something
// other than measurements changed (or after a failure), otherwise at most
// once per StatusInterval.
func (r *ReplicationMasterReconciler) writeStatus(ctx context.Context, m *replv1.ReplicationMaster, status replv1.ReplicationMasterStatus, failed bool) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(m)
	old := m.Status
	// The probe time alone is not news: it moves every second.
	cmp := status
	cmp.LastProbeTime = old.LastProbeTime
	if equality.Semantic.DeepEqual(old, cmp) {
		return ctrl.Result{}, nil
	}
	if !failed && !masterStatusSignificant(old, status) {
		if ok, wait := r.limiter.allow(key); !ok {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}
	orig := m.DeepCopy()
	m.Status = status
	if err := r.Status().Patch(ctx, m, client.MergeFrom(orig)); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("write status of ReplicationMaster %s: %w", key, err)
	}
	r.limiter.wrote(key)
	emitReadyChange(r.Recorder, m, orig.Status.Conditions, status.Conditions)
	return ctrl.Result{}, nil
}

// SetupWithManager registers the controller: it owns the objects it builds,
// follows the master pod, and wakes on probe events.
func (r *ReplicationMasterReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.StatusInterval <= 0 {
		r.StatusInterval = DefaultStatusInterval
	}
	r.limiter = newStatusLimiter(r.StatusInterval, r.Now)
	b := ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Named("replicationmaster").
		For(&replv1.ReplicationMaster{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToOwner(ComponentMaster)))
	if r.ProbeEvents != nil {
		b = b.WatchesRawSource(source.Channel(r.ProbeEvents, &handler.EnqueueRequestForObject{}))
	}
	return b.Complete(r)
}

// podToOwner maps a pod the operator created to the resource it belongs to,
// by the instance label; other pods map to nothing.
func podToOwner(component string) handler.MapFunc {
	return func(_ context.Context, o client.Object) []reconcile.Request {
		l := o.GetLabels()
		if l[LabelManagedBy] != ManagedBy || l[LabelComponent] != component || l[LabelInstance] == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: l[LabelInstance]}}}
	}
}
