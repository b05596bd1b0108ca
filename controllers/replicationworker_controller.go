package controllers

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

// workerMasterIndex indexes ReplicationWorkers by spec.masterRef.name, so a
// master's change reaches its workers without listing every worker.
const workerMasterIndex = "spec.masterRef.name"

// ReplicationWorkerReconciler turns a ReplicationWorker into a StatefulSet
// of worker pods, each with its own positions volume, and reports each
// pod's connection and lag.
type ReplicationWorkerReconciler struct {
	ReconcilerBase
	// tlsChecks spaces out the TLS phase's reads (tls.go).
	tlsChecks tlsChecks
}

// +kubebuilder:rbac:groups=replication.tcprepl.io,resources=replicationworkers,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=replication.tcprepl.io,resources=replicationworkers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=replication.tcprepl.io,resources=replicationworkers/finalizers,verbs=update
// +kubebuilder:rbac:groups=replication.tcprepl.io,resources=replicationmasters,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// Reconcile fetches the worker and its master, applies the StatefulSet, and
// writes status last.
func (r *ReplicationWorkerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	var w replv1.ReplicationWorker
	if err := r.Get(ctx, req.NamespacedName, &w); err != nil {
		if apierrors.IsNotFound(err) {
			r.Images.Forget(operandID(workerKind, req.NamespacedName))
			r.limiter.forget(req.NamespacedName)
			r.reports.forget(req.NamespacedName)
			r.tlsChecks.forget(req.NamespacedName)
			forgetWorkerMetrics(req.Namespace, req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get ReplicationWorker %s: %w", req.NamespacedName, err)
	}
	if !w.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}

	masterKey := types.NamespacedName{Namespace: w.Namespace, Name: w.Spec.MasterRef.Name}
	var m replv1.ReplicationMaster
	if err := r.Get(ctx, masterKey, &m); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("get ReplicationMaster %s for worker %s: %w", masterKey, req.NamespacedName, err)
		}
		// Not an error: nothing a retry fixes. The master watch brings
		// the worker back when the master appears.
		log.V(1).Info("master not found", "master", masterKey.String())
		r.history.forget(masterKey)
		pods, err := r.listPods(ctx, &w)
		if err != nil {
			return ctrl.Result{}, err
		}
		// Without its master the worker's TLS is unknown: no TLSReady.
		status := withWorkerTLSCondition(WorkerStatus(&w, nil, WorkerObservation{Pods: pods, Now: r.now()}, emptySnapshot, false, nil), tlsState{}, w.Generation)
		recordWorkerMetrics(&w, status)
		recordWorkerPodLags(w.Namespace, w.Name, nil)
		return r.writeStatus(ctx, &w, status, true)
	}

	tl, err := r.reconcileWorkerTLS(ctx, &w, &m)
	var pods []corev1.Pod
	var image operandChoice
	if err == nil {
		pods, image, err = r.reconcilePhases(ctx, &w, &m)
	}
	if err != nil && isTransient(err) {
		log.V(1).Info("retrying", "reason", err.Error())
		return ctrl.Result{RequeueAfter: transientRetry}, nil
	}
	if err != nil {
		log.Error(err, "reconcile failed")
		emit(r.Recorder, &w, corev1.EventTypeWarning, replv1.ReasonReconcileFailed, "Reconcile", err.Error())
	}
	snap, haveSnap := r.Observer.Snapshot(masterKey)
	if haveSnap {
		r.history.record(masterKey, snap)
	}
	obs := WorkerObservation{Pods: pods, Now: r.now(), BehindSince: func(stream string, position int64) (time.Time, bool) {
		return r.history.behindSince(masterKey, stream, position)
	}}
	obs.Image = image.image
	if r.Workers != nil && len(pods) > 0 {
		obs.Reports = r.reports.merge(req.NamespacedName, pods, r.Workers.ReadWorkers(ctx, pods), obs.Now)
	}
	status, lags := workerStatus(&w, &m, obs, snap, haveSnap, err)
	status = withWorkerTLSCondition(status, tl, w.Generation)
	recordWorkerMetrics(&w, status)
	recordWorkerPodLags(w.Namespace, w.Name, lags)
	result, statusErr := r.writeStatus(ctx, &w, status, err != nil)
	if err != nil {
		return ctrl.Result{}, err
	}
	if result.IsZero() && len(obs.Reports) > 0 {
		// A stalled worker moves nothing the operator watches: look again
		// within one status interval.
		result.RequeueAfter = r.StatusInterval
	}
	if tl.retry && (result.RequeueAfter == 0 || tlsRetry < result.RequeueAfter) {
		result.RequeueAfter = tlsRetry
	}
	// An operand waiting for its turn to change image looks again soon.
	return image.requeue(result), statusErr
}

// reconcilePhases deletes the Deployment of an earlier operator version,
// applies the worker's StatefulSet and returns its pods and the image it
// was given (image.go).
func (r *ReplicationWorkerReconciler) reconcilePhases(ctx context.Context, w *replv1.ReplicationWorker, m *replv1.ReplicationMaster) ([]corev1.Pod, operandChoice, error) {
	var image operandChoice
	if err := r.deleteLegacyDeployment(ctx, w); err != nil {
		return nil, image, err
	}
	key := types.NamespacedName{Namespace: w.Namespace, Name: specs.WorkerStatefulSetName(w)}
	image, err := r.Images.Choose(ctx, r.Client, operandID(workerKind, client.ObjectKeyFromObject(w)), w.Spec.Image, w.Status.Image, key, r.Options.DefaultImage)
	if err != nil {
		return nil, image, err
	}
	opts := r.Options
	opts.DefaultImage = image.image
	sts := specs.BuildWorkerStatefulSet(w, m, opts)
	if _, err := applyLogged(ctx, r.Client, r.APIReader, r.Scheme, r.Recorder, w, sts, statefulSetState); err != nil {
		return nil, image, err
	}
	pods, err := r.listPods(ctx, w)
	return pods, image, err
}

// listPods lists the worker's pods, whatever workload runs them: status
// follows the pods, not the workload's own (possibly stale) counts.
func (r *ReplicationWorkerReconciler) listPods(ctx context.Context, w *replv1.ReplicationWorker) ([]corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(w.Namespace), client.MatchingLabels(specs.WorkerSelectorLabels(w))); err != nil {
		return nil, fmt.Errorf("list pods of ReplicationWorker %s/%s: %w", w.Namespace, w.Name, err)
	}
	return pods.Items, nil
}

// deleteLegacyDeployment deletes the Deployment that operator versions
// before durable positions ran a worker's pods in. Its pods kept positions
// in an emptyDir, so the StatefulSet's pods, on new volumes, start from the
// master's current position once (docs/operations.md). Only a Deployment
// this worker controls is deleted.
func (r *ReplicationWorkerReconciler) deleteLegacyDeployment(ctx context.Context, w *replv1.ReplicationWorker) error {
	var d appsv1.Deployment
	switch err := r.Get(ctx, types.NamespacedName{Namespace: w.Namespace, Name: w.Name}, &d); {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("get the Deployment %s/%s of an earlier operator version: %w", w.Namespace, w.Name, err)
	}
	if !metav1.IsControlledBy(&d, w) || !d.DeletionTimestamp.IsZero() {
		return nil
	}
	// Foreground: its pods are gone before the Deployment is, so the
	// worker never runs twice for long.
	if err := r.Delete(ctx, &d, client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete the Deployment %s/%s of an earlier operator version (the worker now runs as a StatefulSet): %w", w.Namespace, w.Name, err)
	}
	logf.FromContext(ctx).Info("deleted the worker's Deployment of an earlier operator version; its pods start on new volumes, from the master's current position", "deployment", d.Name)
	emit(r.Recorder, w, corev1.EventTypeNormal, "MigratedToStatefulSet", "Delete",
		fmt.Sprintf("deleted Deployment %s: the worker runs as StatefulSet %s with a volume per pod; this once, its pods start from the master's current position", d.Name, specs.WorkerStatefulSetName(w)))
	return nil
}

// writeStatus is the worker's version of the master's: significant changes
// at once, measurements at most once per StatusInterval.
func (r *ReplicationWorkerReconciler) writeStatus(ctx context.Context, w *replv1.ReplicationWorker, status replv1.ReplicationWorkerStatus, urgent bool) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(w)
	old := w.Status
	cmp := status
	cmp.LastProbeTime = old.LastProbeTime
	if equality.Semantic.DeepEqual(old, cmp) {
		return ctrl.Result{}, nil
	}
	if !urgent && !workerStatusSignificant(old, status) {
		if ok, wait := r.limiter.allow(key); !ok {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}
	orig := w.DeepCopy()
	w.Status = status
	if err := r.Status().Patch(ctx, w, client.MergeFrom(orig)); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("write status of ReplicationWorker %s: %w", key, err)
	}
	r.limiter.wrote(key)
	emitReadyChange(r.Recorder, w, orig.Status.Conditions, status.Conditions)
	return ctrl.Result{}, nil
}

// SetupWithManager registers the controller and the masterRef index.
func (r *ReplicationWorkerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.setupStatusLimiter()
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &replv1.ReplicationWorker{}, workerMasterIndex, func(o client.Object) []string {
		w, ok := o.(*replv1.ReplicationWorker)
		if !ok {
			return nil
		}
		return []string{w.Spec.MasterRef.Name}
	}); err != nil {
		return fmt.Errorf("index ReplicationWorkers by %s: %w", workerMasterIndex, err)
	}
	toWorkers := handler.EnqueueRequestsFromMapFunc(r.masterToWorkers)
	b := ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Named("replicationworker").
		For(&replv1.ReplicationWorker{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&appsv1.StatefulSet{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToOwner(specs.ComponentWorker))).
		// A master's creation, deletion, or spec change (server name,
		// port) changes its workers' pods and status.
		Watches(&replv1.ReplicationMaster{}, toWorkers, builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	if r.ProbeEvents != nil {
		b = b.WatchesRawSource(source.Channel(r.ProbeEvents, toWorkers))
	}
	return b.Complete(r)
}

func (r *ReplicationWorkerReconciler) masterToWorkers(ctx context.Context, o client.Object) []reconcile.Request {
	var list replv1.ReplicationWorkerList
	if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{workerMasterIndex: o.GetName()}); err != nil {
		logf.FromContext(ctx).Error(err, "list workers of master; their status catches up on their next event", "master", o.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, w := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&w)})
	}
	return reqs
}
