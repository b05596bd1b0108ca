package controllers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

// ReplicationMasterReconciler turns a ReplicationMaster into a running
// master and reports what its probe sees.
type ReplicationMasterReconciler struct {
	ReconcilerBase
	// Probes starts and stops the master's probe.
	Probes ProbeController

	// active remembers each master's active pod, to see takeovers.
	active activeMemory
	// tlsChecks spaces out the TLS phase's reads (tls.go).
	tlsChecks tlsChecks
}

// +kubebuilder:rbac:groups=replication.tcprepl.io,resources=replicationmasters,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=replication.tcprepl.io,resources=replicationmasters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=replication.tcprepl.io,resources=replicationmasters/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps;secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;patch
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
			r.Images.Forget(operandID(masterKind, req.NamespacedName))
			r.limiter.forget(req.NamespacedName)
			r.active.forget(req.NamespacedName)
			r.tlsChecks.forget(req.NamespacedName)
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
	status := withLogIdentity(m.Status, MasterStatus(&m, obs, snap, haveSnap, err), snap, haveSnap, m.Generation)
	status.Image = obs.image.recorded(status.Image)
	status = withTLSCondition(status, obs.tls, m.Generation)
	recordMasterMetrics(&m, status)
	result, statusErr := r.writeStatus(ctx, &m, status, err != nil)
	result = obs.image.requeue(result)
	if err != nil {
		return ctrl.Result{}, err
	}
	if obs.postgres.reason != "" && (result.RequeueAfter == 0 || result.RequeueAfter > postgresSecretRetry) {
		result.RequeueAfter = postgresSecretRetry
	}
	if d := tlsRequeue(obs.tls); d > 0 && (result.RequeueAfter == 0 || d < result.RequeueAfter) {
		result.RequeueAfter = d
	}
	return result, statusErr
}

// reconcilePhases creates or updates every owned object, in dependency
// order: the Secret and ConfigMap the pod reads, the Services, the
// StatefulSet, the NetworkPolicy, and last the probe, which needs the pod.
func (r *ReplicationMasterReconciler) reconcilePhases(ctx context.Context, m *replv1.ReplicationMaster) (masterObservation, error) {
	var obs masterObservation
	tl, err := r.reconcileTLS(ctx, m)
	if err != nil {
		return obs, err
	}
	obs.tls = tl
	token, err := r.reconcileTokenSecret(ctx, m)
	if err != nil {
		return obs, err
	}
	obs.tokenSecret = specs.MasterTokenSecretName(m)

	cm, err := specs.BuildMasterConfigMap(m)
	if err != nil {
		return obs, err
	}
	if _, err := applyLogged(ctx, r.Client, r.APIReader, r.Scheme, r.Recorder, m, cm, configMapState); err != nil {
		return obs, err
	}
	for _, svc := range []*corev1.Service{specs.BuildMasterService(m), specs.BuildMasterHeadlessService(m)} {
		if _, err := applyLogged(ctx, r.Client, r.APIReader, r.Scheme, r.Recorder, m, svc, serviceState); err != nil {
			return obs, err
		}
	}
	// The StatefulSet is named after the master.
	key := client.ObjectKeyFromObject(m)
	if obs.image, err = r.Images.Choose(ctx, r.Client, operandID(masterKind, key), m.Spec.Image, m.Status.Image, key, r.Options.DefaultImage); err != nil {
		return obs, err
	}
	uri, problem, err := r.checkPostgresSecret(ctx, m)
	if err != nil {
		return obs, err
	}
	obs.postgres = problem
	var startOnly []string
	if uri != "" {
		startOnly = append(startOnly, uri)
	}
	hash := specs.ConfigHash(cm.Data[specs.MasterConfigFile], token, startOnly...)
	opts := r.Options
	opts.DefaultImage = obs.image.image
	sts := specs.BuildMasterStatefulSet(m, opts, hash)
	live, err := applyLogged(ctx, r.Client, r.APIReader, r.Scheme, r.Recorder, m, sts, statefulSetState)
	if err != nil {
		return obs, err
	}
	obs.statefulSet = live
	if err := r.expandStorage(ctx, m, live); err != nil {
		return obs, err
	}
	if err := r.reconcileNetworkPolicy(ctx, m); err != nil {
		return obs, err
	}

	pods, err := r.masterPods(ctx, m)
	if err != nil {
		return obs, err
	}
	obs.activePod, obs.readyStandbys = activeMaster(pods, m.Status.ActivePod)
	obs.takeover = r.active.observe(key, m.Status.ActivePod, obs.activePod, r.now())
	emitTakeover(r, m, obs.takeover)
	// The probe follows the active pod; before there is one, the first.
	for i := range pods {
		if pods[i].Name == obs.activePod || (obs.activePod == "" && pods[i].Name == specs.MasterPodName(m)) {
			obs.pod = &pods[i]
		}
	}
	if specs.OnPostgres(m) {
		if _, err := r.rollMasterPods(ctx, m, live, pods, obs.activePod); err != nil {
			return obs, err
		}
	}

	target := ProbeTargetFor(m, obs.pod)
	target.TLS = obs.tls.probe
	if err := r.Probes.Ensure(client.ObjectKeyFromObject(m), target); err != nil {
		return obs, err
	}
	return obs, nil
}

// reconcileTokenSecret creates the publish-token Secret once and returns
// the token. An existing token is never replaced: producers hold it.
func (r *ReplicationMasterReconciler) reconcileTokenSecret(ctx context.Context, m *replv1.ReplicationMaster) (string, error) {
	var live corev1.Secret
	key := types.NamespacedName{Namespace: m.Namespace, Name: specs.MasterTokenSecretName(m)}
	err := r.Get(ctx, key, &live)
	switch {
	case err == nil:
		if !metav1.IsControlledBy(&live, m) {
			return "", fmt.Errorf("the Secret %s exists and is not controlled by ReplicationMaster %s: delete or rename it so the operator can create the publish token", key, m.Name)
		}
		tok := string(live.Data[specs.PublishTokenKey])
		if tok == "" {
			return "", fmt.Errorf("secret %s has no %q key: delete it and the operator will generate a new publish token", key, specs.PublishTokenKey)
		}
		return tok, nil
	case !apierrors.IsNotFound(err):
		return "", fmt.Errorf("get Secret %s: %w", key, err)
	}
	tok, err := newToken()
	if err != nil {
		return "", err
	}
	s := specs.BuildMasterTokenSecret(m, tok)
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
	np := specs.BuildMasterNetworkPolicy(m, r.Options)
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
	emitLogReset(r.Recorder, m, orig.Status.LogID, status.LogID)
	return ctrl.Result{}, nil
}

// SetupWithManager registers the controller: it owns the objects it builds,
// follows the master pod, and wakes on probe events.
func (r *ReplicationMasterReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.setupStatusLimiter()
	b := ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Named("replicationmaster").
		For(&replv1.ReplicationMaster{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToOwner(specs.ComponentMaster)))
	if r.ProbeEvents != nil {
		b = b.WatchesRawSource(source.Channel(r.ProbeEvents, &handler.EnqueueRequestForObject{}))
	}
	return b.Complete(r)
}
