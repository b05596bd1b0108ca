package controllers

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	"sigs.k8s.io/controller-runtime/pkg/source"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/synapse"
)

// DefaultSynapseResync is how often a SynapseReplication is reconciled when
// nothing else triggers it: the operator reads the referenced Secret and
// ConfigMap with a plain GET (it neither lists nor watches a user's
// Secrets), so this is how soon it notices a new password or a changed
// stream_writers.
const DefaultSynapseResync = 30 * time.Second

// StreamWritersParser reads stream_writers out of a homeserver config YAML
// (internal/synapse.ParseStreamWriters).
type StreamWritersParser func(homeserverYAML []byte) (map[string][]string, error)

// SynapseWatcherController starts and stops watchers.
type SynapseWatcherController interface {
	Ensure(key types.NamespacedName, target SynapseWatchTarget) error
	Stop(key types.NamespacedName)
	Snapshot(key types.NamespacedName) (synapse.Snapshot, bool)
}

// SynapseReplicationReconciler runs one watcher per SynapseReplication and
// writes what it sees into the resource's status.
type SynapseReplicationReconciler struct {
	client.Client
	// APIReader reads the referenced Secret and ConfigMap past the cache:
	// the cache holds only the operator's own objects.
	APIReader client.Reader
	// Watchers starts, stops and reads the watchers.
	Watchers SynapseWatcherController
	// WatcherEvents, when set, announces resources whose snapshot changed.
	WatcherEvents <-chan event.GenericEvent
	// ParseStreamWriters reads stream_writers from the homeserver config.
	ParseStreamWriters StreamWritersParser
	// StatusInterval spaces out measurement-only status writes.
	StatusInterval time.Duration
	// Resync is how often a resource is reconciled without a trigger.
	Resync time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Recorder, when set, receives an Event for every condition change.
	Recorder                events.EventRecorder
	MaxConcurrentReconciles int

	limiter *statusLimiter
	// gapsMu guards gaps and resolved.
	gapsMu   sync.Mutex
	gaps     map[types.NamespacedName]gapTracker
	resolved map[types.NamespacedName]resolvedTarget
}

// +kubebuilder:rbac:groups=replication.tcprepl.io,resources=synapsereplications,verbs=get;list;watch
// +kubebuilder:rbac:groups=replication.tcprepl.io,resources=synapsereplications/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=secrets;configmaps,verbs=get

// Reconcile resolves the resource's references, keeps its watcher running
// against them, and writes the watcher's view into status.
func (r *SynapseReplicationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	var sr replv1.SynapseReplication
	if err := r.Get(ctx, req.NamespacedName, &sr); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get SynapseReplication %s: %w", req.NamespacedName, err)
	}
	if !sr.DeletionTimestamp.IsZero() {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}

	obs := synapseObservation{now: r.now()}
	target, err := r.resolveCached(ctx, &sr, obs.now)
	var problem *synapseSetupProblem
	switch {
	case asSetupProblem(err, &problem):
		// The user has to fix something; a retry loop would not help, the
		// resync will notice the fix.
		r.Watchers.Stop(req.NamespacedName)
		obs.problem = problem
		log.Info("cannot watch", "reason", problem.reason, "message", problem.message)
	case err != nil:
		return ctrl.Result{}, err
	default:
		if err := r.Watchers.Ensure(req.NamespacedName, target); err != nil {
			obs.problem = &synapseSetupProblem{reason: replv1.ReasonRedisError, message: err.Error()}
		}
	}
	if obs.problem == nil {
		obs.snap, obs.haveSnap = r.Watchers.Snapshot(req.NamespacedName)
		if obs.haveSnap {
			obs.recentGaps = r.trackGaps(req.NamespacedName, obs.snap, obs.now)
		}
	}
	status := SynapseStatus(&sr, obs)
	result, err := r.writeStatus(ctx, &sr, status)
	if err != nil {
		return ctrl.Result{}, err
	}
	if result.RequeueAfter == 0 || result.RequeueAfter > r.Resync {
		result.RequeueAfter = r.Resync
	}
	return result, nil
}

func asSetupProblem(err error, p **synapseSetupProblem) bool {
	return errors.As(err, p)
}

func (r *SynapseReplicationReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *SynapseReplicationReconciler) forget(key types.NamespacedName) {
	r.Watchers.Stop(key)
	r.limiter.forget(key)
	r.gapsMu.Lock()
	delete(r.gaps, key)
	delete(r.resolved, key)
	r.gapsMu.Unlock()
}

// resolvedTarget is the last resolution of a resource's references.
type resolvedTarget struct {
	generation int64
	at         time.Time
	target     SynapseWatchTarget
	err        error
}

// resolveCached resolves the resource's references at most once per
// Resync for one generation: the watcher's announcements trigger a
// reconcile every poll interval on a busy deployment, and each would
// otherwise GET the Secret and ConfigMap again. Transient API errors are
// not kept.
func (r *SynapseReplicationReconciler) resolveCached(ctx context.Context, sr *replv1.SynapseReplication, now time.Time) (SynapseWatchTarget, error) {
	key := client.ObjectKeyFromObject(sr)
	r.gapsMu.Lock()
	c, ok := r.resolved[key]
	r.gapsMu.Unlock()
	if ok && c.generation == sr.Generation && now.Sub(c.at) < r.Resync {
		return c.target, c.err
	}
	t, err := r.resolveTarget(ctx, sr)
	var problem *synapseSetupProblem
	if err == nil || asSetupProblem(err, &problem) {
		r.gapsMu.Lock()
		r.resolved[key] = resolvedTarget{generation: sr.Generation, at: now, target: t, err: err}
		r.gapsMu.Unlock()
	}
	return t, err
}

func (r *SynapseReplicationReconciler) trackGaps(key types.NamespacedName, snap synapse.Snapshot, now time.Time) []synapse.WriterRef {
	r.gapsMu.Lock()
	defer r.gapsMu.Unlock()
	next, recent := r.gaps[key].update(snap, now)
	r.gaps[key] = next
	return recent
}

// resolveTarget reads the Secret, ConfigMap and CA the resource names and
// returns the watcher's target. What the user must fix comes back as a
// *synapseSetupProblem; other errors are transient API errors.
func (r *SynapseReplicationReconciler) resolveTarget(ctx context.Context, sr *replv1.SynapseReplication) (SynapseWatchTarget, error) {
	spec := sr.Spec
	t := SynapseWatchTarget{
		Addr:            spec.Redis.Address,
		Username:        spec.Redis.Username,
		DB:              int(spec.Redis.DB),
		ServerName:      spec.ServerName,
		SolicitInterval: solicitInterval(spec),
	}
	h := sha256.New()
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return t, fmt.Errorf("encode the spec of %s/%s: %w", sr.Namespace, sr.Name, err)
	}
	h.Write(specJSON)

	if ref := spec.Redis.PasswordSecretRef; ref != nil {
		pw, err := r.readKey(ctx, sr.Namespace, replv1.ConfigKeyRef{Kind: replv1.KindSecret, Name: ref.Name, Key: ref.Key}, "spec.redis.passwordSecretRef")
		if err != nil {
			return t, err
		}
		t.Password = string(pw)
		h.Write([]byte{0})
		h.Write(pw)
	}
	if ref := spec.HomeserverConfigRef; ref != nil {
		cfg, err := r.readKey(ctx, sr.Namespace, *ref, "spec.homeserverConfigRef")
		if err != nil {
			return t, err
		}
		writers, err := r.ParseStreamWriters(cfg)
		if err != nil {
			return t, &synapseSetupProblem{reason: replv1.ReasonInvalidHomeserverConfig,
				message: fmt.Sprintf("%s %s key %q: %v; fix the YAML (the operator reads only stream_writers)", refKind(*ref), ref.Name, ref.Key, err)}
		}
		if writers == nil {
			writers = map[string][]string{}
		}
		t.StreamWriters = writers
		h.Write([]byte{1})
		h.Write(cfg)
	}
	if tlsSpec := spec.Redis.TLS; tlsSpec != nil && tlsSpec.Enabled {
		host, _, err := net.SplitHostPort(spec.Redis.Address)
		if err != nil {
			return t, &synapseSetupProblem{reason: replv1.ReasonRedisError, message: fmt.Sprintf("spec.redis.address %q: %v", spec.Redis.Address, err)}
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
		if tlsSpec.ServerName != "" {
			cfg.ServerName = tlsSpec.ServerName
		}
		if ref := tlsSpec.CARef; ref != nil {
			pem, err := r.readKey(ctx, sr.Namespace, *ref, "spec.redis.tls.caRef")
			if err != nil {
				return t, err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return t, &synapseSetupProblem{reason: replv1.ReasonInvalidCA,
					message: fmt.Sprintf("%s %s key %q holds no PEM certificate; put the CA bundle that signs Redis's certificate there", refKind(*ref), ref.Name, ref.Key)}
			}
			cfg.RootCAs = pool
			h.Write([]byte{2})
			h.Write(pem)
		}
		t.TLS = cfg
	}
	t.Digest = hex.EncodeToString(h.Sum(nil))
	return t, nil
}

func refKind(ref replv1.ConfigKeyRef) string {
	if ref.Kind == "" {
		return replv1.KindConfigMap
	}
	return ref.Kind
}

// readKey GETs one key of one ConfigMap or Secret: the operator never lists
// or watches a user's Secrets and ConfigMaps.
func (r *SynapseReplicationReconciler) readKey(ctx context.Context, namespace string, ref replv1.ConfigKeyRef, field string) ([]byte, error) {
	key := types.NamespacedName{Namespace: namespace, Name: ref.Name}
	kind := refKind(ref)
	notFound := func(what string) error {
		reason := replv1.ReasonConfigMapNotFound
		if kind == replv1.KindSecret {
			reason = replv1.ReasonSecretNotFound
		}
		return &synapseSetupProblem{reason: reason, message: fmt.Sprintf("%s: %s; create it or fix the reference", field, what)}
	}
	var (
		err  error
		data []byte
		ok   bool
	)
	if kind == replv1.KindSecret {
		var s corev1.Secret
		if err = r.APIReader.Get(ctx, key, &s); err == nil {
			data, ok = s.Data[ref.Key]
		}
	} else {
		var cm corev1.ConfigMap
		if err = r.APIReader.Get(ctx, key, &cm); err == nil {
			var v string
			if v, ok = cm.Data[ref.Key]; ok {
				data = []byte(v)
			} else {
				data, ok = cm.BinaryData[ref.Key]
			}
		}
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, notFound(fmt.Sprintf("%s %s/%s does not exist", kind, namespace, ref.Name))
	case apierrors.IsForbidden(err):
		return nil, notFound(fmt.Sprintf("the operator may not read %s %s/%s (%v): grant it get on %ss in this namespace", kind, namespace, ref.Name, err, kind))
	case err != nil:
		return nil, fmt.Errorf("read %s %s/%s for %s: %w", kind, namespace, ref.Name, field, err)
	case !ok:
		return nil, notFound(fmt.Sprintf("%s %s/%s has no key %q", kind, namespace, ref.Name, ref.Key))
	}
	return data, nil
}

// solicitInterval is spec.solicitInterval, or the default when unset.
func solicitInterval(spec replv1.SynapseReplicationSpec) time.Duration {
	if spec.SolicitInterval == nil {
		d, _ := time.ParseDuration(replv1.DefaultSolicitInterval)
		return d
	}
	return spec.SolicitInterval.Duration
}

// writeStatus writes the status if it changed: at once when more than the
// measurements changed, otherwise at most once per StatusInterval. Every
// condition change becomes an Event.
func (r *SynapseReplicationReconciler) writeStatus(ctx context.Context, sr *replv1.SynapseReplication, status replv1.SynapseReplicationStatus) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(sr)
	old := sr.Status
	// The last message time alone is not news: it moves with every message.
	cmp := status
	cmp.LastMessageTime = old.LastMessageTime
	if equality.Semantic.DeepEqual(old, cmp) {
		return ctrl.Result{}, nil
	}
	if !synapseStatusSignificant(old, status) {
		if ok, wait := r.limiter.allow(key); !ok {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}
	orig := sr.DeepCopy()
	sr.Status = status
	if err := r.Status().Patch(ctx, sr, client.MergeFrom(orig)); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: transientRetry}, nil
		}
		return ctrl.Result{}, fmt.Errorf("write status of SynapseReplication %s: %w", key, err)
	}
	r.limiter.wrote(key)
	emitConditionChanges(r.Recorder, sr, orig.Status.Conditions, status.Conditions)
	return ctrl.Result{}, nil
}

// emitConditionChanges records an Event for every condition whose status
// or reason changed. A condition's first appearance is only news when it
// says something is wrong beyond starting up.
func emitConditionChanges(rec events.EventRecorder, sr *replv1.SynapseReplication, before, after []metav1.Condition) {
	for _, a := range after {
		b := meta.FindStatusCondition(before, a.Type)
		if b != nil && b.Status == a.Status && b.Reason == a.Reason {
			continue
		}
		if b == nil && (a.Reason == replv1.ReasonWatcherPending || a.Reason == replv1.ReasonWritersUnknown || a.Reason == replv1.ReasonAsExpected) {
			continue
		}
		bad := a.Status != metav1.ConditionTrue
		if a.Type == replv1.ConditionDegraded {
			bad = a.Status == metav1.ConditionTrue
		}
		t := corev1.EventTypeNormal
		if bad {
			t = corev1.EventTypeWarning
		}
		note := a.Type + "=" + string(a.Status)
		if a.Message != "" {
			note += ": " + a.Message
		}
		emit(rec, sr, t, a.Reason, "Observe", note)
	}
}

// SetupWithManager registers the controller: it follows the resources'
// spec and the watchers' announcements.
func (r *SynapseReplicationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.StatusInterval <= 0 {
		r.StatusInterval = DefaultStatusInterval
	}
	if r.Resync <= 0 {
		r.Resync = DefaultSynapseResync
	}
	if r.ParseStreamWriters == nil {
		return fmt.Errorf("no stream_writers parser")
	}
	r.limiter = newStatusLimiter(r.StatusInterval, r.Now)
	r.gaps = map[types.NamespacedName]gapTracker{}
	r.resolved = map[types.NamespacedName]resolvedTarget{}
	b := ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Named("synapsereplication").
		For(&replv1.SynapseReplication{}, builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	if r.WatcherEvents != nil {
		b = b.WatchesRawSource(source.Channel(r.WatcherEvents, &handler.EnqueueRequestForObject{}))
	}
	return b.Complete(r)
}
